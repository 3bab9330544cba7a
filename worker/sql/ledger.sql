-- Ledger statements, loaded by name (worker/sql/__init__.py). Every statement runs with
-- search_path set to the ledger schema.

-- name: register_files
-- One row per file identity; a repeated event only bumps events_seen. Returns the current state.
INSERT INTO files (ingestion, bucket, key, etag, version_id, sequencer, size_bytes, event_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::timestamptz[])
ON CONFLICT (bucket, key, etag) DO UPDATE
    SET events_seen = files.events_seen + 1, last_event_at = now()
RETURNING id, bucket, key, etag, status, batch_id, rows_loaded, error_message;

-- name: record_terminal
-- Files that end without a write (gone, skipped, too large): only from PENDING.
UPDATE files SET status = $2, error_class = $3, error_message = $4, finished_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'PENDING'
RETURNING id;

-- name: claim_files
-- Part of the claim transaction: take PENDING files, skipping rows another worker holds.
WITH claimable AS (
    SELECT id FROM files
    WHERE id = ANY($1::bigint[]) AND status = 'PENDING'
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE files f
   SET status = 'CLAIMED', attempts = f.attempts + 1, batch_id = $2, claimed_at = now(),
       error_class = NULL, error_message = NULL
  FROM claimable c
 WHERE f.id = c.id
RETURNING f.id, f.size_bytes;

-- name: open_batch
INSERT INTO batches (id, ingestion, table_name, status, lease_owner, lease_expires_at, files, bytes)
VALUES ($1, $2, $3, 'WRITING', $4, now() + make_interval(secs => $5), $6, $7);

-- name: file_states
SELECT id, status, batch_id, error_message FROM files WHERE id = ANY($1::bigint[]);

-- name: commit_batch
-- Fenced by the lease owner: a batch a sweeper took over cannot be finalized by its old owner.
UPDATE batches
   SET status = 'COMMITTED', rows_loaded = $3, finished_at = now(),
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = $1 AND status = 'WRITING' AND lease_owner = $2
RETURNING id;

-- name: finish_files
UPDATE files f
   SET status = v.status, rows_loaded = v.rows_loaded, finished_at = now(),
       error_class = v.error_class, error_message = v.error_message
  FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[])
       AS v(id, status, rows_loaded, error_class, error_message)
 WHERE f.id = v.id AND f.batch_id = $1 AND f.status = 'CLAIMED';

-- name: abort_batch
UPDATE batches
   SET status = 'ABORTED', finished_at = now(), error_class = $3, error_message = $4,
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = $1 AND status = 'WRITING' AND lease_owner = $2
RETURNING id;

-- name: release_files
-- After an abort: back to PENDING (retry) or FAILED (permanent), per file.
UPDATE files f
   SET status = v.status, error_class = v.error_class, error_message = v.error_message,
       finished_at = CASE WHEN v.status = 'PENDING' THEN NULL ELSE now() END
  FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
       AS v(id, status, error_class, error_message)
 WHERE f.id = v.id AND f.batch_id = $1 AND f.status = 'CLAIMED';

-- name: extend_batches
UPDATE batches SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'WRITING';

-- name: expire_batches
-- Shutdown: hand unfinished batches to any worker's sweeper at once.
UPDATE batches SET lease_expires_at = now() - make_interval(secs => $3)
 WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'WRITING';

-- name: take_expired_batches
-- Sweeper: adopt batches whose owner stopped renewing their lease $3 seconds ago or more.
UPDATE batches b
   SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), recovered_by = $1
 WHERE b.id IN (
        SELECT id FROM batches
         WHERE status = 'WRITING' AND lease_expires_at < now() - make_interval(secs => $3)
         ORDER BY lease_expires_at
         LIMIT $4
           FOR UPDATE SKIP LOCKED)
RETURNING b.id, b.ingestion, b.table_name;

-- name: batch_files
SELECT id, bucket, key, etag, size_bytes FROM files WHERE batch_id = $1 AND status = 'CLAIMED' ORDER BY id;

-- name: reject_message
INSERT INTO rejected_messages (queue_url, message_id, receive_count, reason, body)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (queue_url, message_id) DO NOTHING;

-- name: file_summary
SELECT ingestion, bucket, key, etag, status, rows_loaded, attempts, batch_id, error_class,
       error_message, first_seen_at, finished_at, event_time
  FROM files
 WHERE ($1::text IS NULL OR ingestion = $1)
 ORDER BY id;

-- name: try_table_lock
-- One committer per table across the fleet (session-level advisory lock, held on a dedicated
-- connection during the Spark write; released on unlock or when the connection drops).
SELECT pg_try_advisory_lock(hashtext('icefeed-table'), hashtext($1::text));

-- name: table_unlock
SELECT pg_advisory_unlock(hashtext('icefeed-table'), hashtext($1::text));
