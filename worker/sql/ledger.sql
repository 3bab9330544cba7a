-- Ledger statements, loaded by name (worker/sql/__init__.py). Every statement runs with
-- search_path set to the ledger schema.

-- name: register_files
-- One row per file identity; a repeated event only bumps events_seen. Returns the current state.
INSERT INTO files (ingestion, bucket, key, etag, version_id, sequencer, size_bytes, event_time, events_seen)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::timestamptz[], $9::integer[])
ON CONFLICT (bucket, key, etag) DO UPDATE
    SET events_seen = files.events_seen + EXCLUDED.events_seen, last_event_at = now()
RETURNING id, bucket, key, etag, status, batch_id, rows_loaded, error_message,
          (SELECT extract(epoch FROM b.lease_expires_at - now()) FROM batches b
            WHERE b.id = files.batch_id AND b.status = 'WRITING') AS lease_left_s;

-- name: record_terminal
-- Files that end without a write (gone, skipped, too large): only from PENDING.
UPDATE files SET status = $2, error_class = $3, error_message = $4, finished_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'PENDING'
RETURNING id;

-- name: lock_keys
-- Part of the claim transaction: serialize claims of the same keys (sorted, so never a deadlock),
-- so that two versions of one key are never in two open batches.
SELECT count(pg_advisory_xact_lock(hashtext('icefeed-key'), hashtext(k)))
  FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS keys;

-- name: claim_files
-- Part of the claim transaction: take PENDING files, skipping rows another worker holds and files
-- whose key has another version in an open batch (it is claimed once that batch is settled).
WITH claimable AS (
    SELECT id FROM files f
    WHERE id = ANY($1::bigint[]) AND status = 'PENDING'
      AND NOT EXISTS (SELECT 1 FROM files o
                       WHERE o.bucket = f.bucket AND o.key = f.key AND o.id <> f.id AND o.status = 'CLAIMED')
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
-- version_lease_left_s: a PENDING file whose key has another version in an open batch waits for it.
SELECT f.id, f.status, f.batch_id, f.error_message, f.error_class, f.attempts,
       (SELECT extract(epoch FROM b.lease_expires_at - now()) FROM batches b
         WHERE b.id = f.batch_id AND b.status = 'WRITING') AS lease_left_s,
       (SELECT max(extract(epoch FROM b.lease_expires_at - now()))
          FROM files o JOIN batches b ON b.id = o.batch_id
         WHERE f.status = 'PENDING' AND o.bucket = f.bucket AND o.key = f.key AND o.id <> f.id
           AND o.status = 'CLAIMED' AND b.status = 'WRITING') AS version_lease_left_s
  FROM files f WHERE f.id = ANY($1::bigint[]);

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
       error_class = v.error_class, error_message = v.error_message,
       rows_rejected = v.rows_rejected, bad_records = v.bad_records
  FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[])
       AS v(id, status, rows_loaded, error_class, error_message, rows_rejected, bad_records)
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
-- Returns the batches still this owner's: a missing one was taken over by a sweeper. For a fenced
-- batch, write_started_at moves too: the last moment its writer vouched for its append (an append
-- starts at most ttl/2 after it, see Pipeline.may_append), which recovery's wait-out counts from.
UPDATE batches SET lease_expires_at = now() + make_interval(secs => $3),
                   write_started_at = CASE WHEN write_started_at IS NULL THEN NULL ELSE now() END
 WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'WRITING'
RETURNING id;

-- name: expire_batches
-- Shutdown: hand unfinished batches to any worker's sweeper at once.
UPDATE batches SET lease_expires_at = now() - make_interval(secs => $3)
 WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'WRITING';

-- name: take_expired_batches
-- Sweeper: adopt batches whose owner stopped renewing their lease $3 seconds ago or more, but
-- never one of $5 (batches the sweeping worker itself is still writing: a worker that was frozen
-- wakes up with its sweeper and its writer at once).
UPDATE batches b
   SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), recovered_by = $1
 WHERE b.id IN (
        SELECT id FROM batches
         WHERE status = 'WRITING' AND lease_expires_at < now() - make_interval(secs => $3)
           AND NOT (id = ANY($5::uuid[]))
         ORDER BY lease_expires_at
         LIMIT $4
           FOR UPDATE SKIP LOCKED)
RETURNING b.id, b.ingestion, b.table_name;

-- name: batch_files
SELECT id, ingestion, bucket, key, etag, size_bytes, event_time FROM files WHERE batch_id = $1 AND status = 'CLAIMED' ORDER BY id;

-- name: reject_message
INSERT INTO rejected_messages (queue_url, message_id, receive_count, reason, body)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (queue_url, message_id) DO NOTHING;

-- name: try_table_lock
-- One committer per table across the fleet (session-level advisory lock, held on a dedicated
-- connection during the Spark write; released on unlock or when the connection drops).
SELECT pg_try_advisory_lock(hashtext('icefeed-table'), hashtext($1::text));

-- name: table_unlock
SELECT pg_advisory_unlock(hashtext('icefeed-table'), hashtext($1::text));

-- name: lock_alive
-- A round trip on the lock's own connection: a session advisory lock lives as long as its session.
SELECT 1;

-- name: fence_batch_row
-- The fence, step 1 (one transaction on the table-lock connection): the batch is still WRITING
-- and this owner's.
SELECT table_name FROM batches WHERE id = $1 AND status = 'WRITING' AND lease_owner = $2 FOR UPDATE;

-- name: fence_slot
-- The fence, step 2: the table's writer slot (created free for a new table) and whether the batch
-- holding it may still be appending (WRITING after its own fence).
WITH created AS (
    INSERT INTO table_writers (table_name, batch_id) VALUES ($1, $2)
    ON CONFLICT (table_name) DO NOTHING
    RETURNING batch_id
)
SELECT w.batch_id, (b.status = 'WRITING' AND b.write_started_at IS NOT NULL) AS busy
  FROM table_writers w LEFT JOIN batches b ON b.id = w.batch_id
 WHERE w.table_name = $1 AND NOT EXISTS (SELECT 1 FROM created)
   FOR UPDATE OF w;

-- name: fence_take
-- The fence, step 3: the slot is this batch's, the lease renewed, the engine session recorded.
WITH slot AS (
    UPDATE table_writers SET batch_id = $1, since = now() WHERE table_name = $4
)
UPDATE batches
   SET lease_expires_at = now() + make_interval(secs => $3), engine_session = $5, write_started_at = now()
 WHERE id = $1 AND status = 'WRITING' AND lease_owner = $2
RETURNING id;

-- name: engine_work
SELECT engine_session, extract(epoch FROM now() - write_started_at) AS started_s_ago
  FROM batches WHERE id = $1;

-- name: audit_candidates
-- Released batches that had started an append, past the window in which a detached append could
-- still commit, not yet audited: claimed for one sweeper (audited_at set now).
UPDATE batches b SET audited_at = now()
 WHERE b.id IN (
        SELECT id FROM batches
         WHERE status = 'ABORTED' AND write_started_at IS NOT NULL AND audited_at IS NULL
           AND finished_at < now() - make_interval(secs => $1)
         ORDER BY finished_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED)
RETURNING b.id, b.table_name;

-- name: mark_audited
-- $2 NULL: the audit could not run; it is tried again by a later sweep.
UPDATE batches
   SET zombie_rows = COALESCE(zombie_rows, 0) + COALESCE($2, 0),
       audited_at = CASE WHEN $2::bigint IS NULL THEN NULL ELSE audited_at END
 WHERE id = $1;

-- name: record_schema_version
INSERT INTO schema_versions (table_name, version, schema, changes, ingestion, first_file, batch_id)
SELECT $1, COALESCE(max(version), 0) + 1, $2::jsonb, $3::jsonb, $4, $5, $6
  FROM schema_versions WHERE table_name = $1
RETURNING version;

-- name: open_proposal
-- One open proposal per (table, signature); later files with the same conflict join it.
WITH created AS (
    INSERT INTO schema_proposals (table_name, ingestion, policy, signature, table_schema, incoming_schema, changes)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb)
    ON CONFLICT (table_name, signature) WHERE status = 'PENDING' DO NOTHING
    RETURNING id
)
SELECT id FROM created
UNION ALL
SELECT id FROM schema_proposals WHERE table_name = $1 AND signature = $4 AND status = 'PENDING'
LIMIT 1;

-- name: quarantine_file
UPDATE files SET proposal_id = $2 WHERE id = $1;

-- name: approved_signatures
SELECT signature, resolution FROM schema_proposals WHERE table_name = $1 AND status = 'APPROVED';

-- name: latest_schema
SELECT schema FROM schema_versions WHERE table_name = $1 ORDER BY version DESC LIMIT 1;

-- name: replace_plan
-- on_overwrite = replace, decided under the table lock: per file of a batch, whether its key has
-- an OLDER loaded version (its rows are replaced) or a NEWER loaded or replaced one (this file is
-- superseded). Newer: by S3 sequencer when both have one (hex, right-padded), else by event time,
-- else by arrival (file id).
SELECT f.id,
       bool_or(p.status = 'LOADED' AND NOT o.newer) AS replaces,
       bool_or(p.status IN ('LOADED', 'REPLACED') AND o.newer) AS superseded
  FROM files f
  JOIN files p ON p.bucket = f.bucket AND p.key = f.key AND p.id <> f.id
 CROSS JOIN LATERAL (
       SELECT CASE
              WHEN f.sequencer IS NOT NULL AND p.sequencer IS NOT NULL
                   THEN rpad(upper(p.sequencer), greatest(length(p.sequencer), length(f.sequencer)), '0')
                      > rpad(upper(f.sequencer), greatest(length(p.sequencer), length(f.sequencer)), '0')
              WHEN f.event_time IS NOT NULL AND p.event_time IS NOT NULL AND p.event_time <> f.event_time
                   THEN p.event_time > f.event_time
              ELSE p.id > f.id
              END AS newer) AS o
 WHERE f.id = ANY($1::bigint[])
 GROUP BY f.id;

-- name: mark_replaced
-- In the finalize transaction: older LOADED versions of the keys a batch replaced.
UPDATE files p
   SET status = 'REPLACED', replaced_by = f.id, finished_at = now(),
       error_class = 'Replaced', error_message = 'rows replaced by a newer version of the object'
  FROM files f
 WHERE f.id = ANY($1::bigint[]) AND p.bucket = f.bucket AND p.key = f.key AND p.id <> f.id
   AND p.status = 'LOADED';

-- name: key_sequencers
SELECT bucket, key, etag, sequencer
  FROM files
 WHERE (bucket, key) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND sequencer IS NOT NULL;

-- name: note_dead_letter
UPDATE files
   SET error_class = 'DeadLettered',
       error_message = 'message moved to the dead-letter queue after ' || $2::text || ' receives; last error: '
                       || COALESCE(error_message, 'none')
 WHERE id = ANY($1::bigint[]) AND status IN ('PENDING', 'CLAIMED');

-- name: table_hints
SELECT column_name, type FROM table_hints WHERE table_name = $1;

-- name: maintenance_row
INSERT INTO table_maintenance (table_name) VALUES ($1) ON CONFLICT (table_name) DO NOTHING;

-- name: maintenance_take
-- The maintenance lease of a table: taken when no live lease is held by another worker and the
-- table is due ($4: seconds since the last start; 0 takes it whenever it is free).
UPDATE table_maintenance
   SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), started_at = now()
 WHERE table_name = $1
   AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now())
   AND (started_at IS NULL OR started_at <= now() - make_interval(secs => $4))
RETURNING extract(epoch FROM now() - orphans_checked_at) AS orphans_checked_s_ago;

-- name: maintenance_extend
UPDATE table_maintenance SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE table_name = $1 AND lease_owner = $2
RETURNING table_name;

-- name: maintenance_finish
-- $6: the run checked for orphans.
UPDATE table_maintenance
   SET lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), outcome = $3, error = $4,
       stats = COALESCE($5::jsonb, stats), steps = $7::jsonb,
       orphans_checked_at = CASE WHEN $6 THEN now() ELSE orphans_checked_at END
 WHERE table_name = $1 AND lease_owner = $2;

-- name: table_writer_busy
-- Under the table's commit lock: is a batch that took the table's writer slot still appending
-- (WRITING after its fence, its lock perhaps lost)? Maintenance never commits beside it.
SELECT COALESCE(bool_or(b.status = 'WRITING' AND b.write_started_at IS NOT NULL), false)
  FROM table_writers w JOIN batches b ON b.id = w.batch_id
 WHERE w.table_name = $1;

-- name: engine_state
-- $4: seconds since the engine started failing (NULL: it is not failing).
INSERT INTO engine_states (engine, worker_id, state, failing_since, last_error, updated_at)
VALUES ($1, $2, $3, now() - make_interval(secs => $4), $5, now())
ON CONFLICT (engine, worker_id) DO UPDATE
   SET state = EXCLUDED.state, failing_since = EXCLUDED.failing_since,
       last_error = EXCLUDED.last_error, updated_at = now();
