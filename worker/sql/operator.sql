-- Operator commands (worker/admin/): read-mostly views of the ledger, and the few writes that
-- re-queue files (retry, backfill). Every statement runs with search_path set to the ledger
-- schema. $1 … are bound parameters; nothing is ever formatted into these statements.

-- name: clock
SELECT now() AS now, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS today;

-- name: status_by_ingestion
-- Files per ingestion and status, with today's loads (UTC day) and the last load.
SELECT ingestion, status, count(*) AS files,
       COALESCE(sum(rows_loaded) FILTER (WHERE status = 'LOADED'), 0)::bigint AS rows,
       count(*) FILTER (WHERE status = 'LOADED' AND finished_at >= $2) AS loaded_today,
       COALESCE(sum(rows_loaded) FILTER (WHERE status = 'LOADED' AND finished_at >= $2), 0)::bigint AS rows_today,
       max(finished_at) FILTER (WHERE status = 'LOADED') AS last_loaded_at
  FROM files
 WHERE ($1::text IS NULL OR ingestion = $1)
 GROUP BY ingestion, status
 ORDER BY ingestion, status;

-- name: oldest_open
-- The file waiting longest (PENDING or CLAIMED).
SELECT id, ingestion, bucket, key, status, first_seen_at, last_event_at, error_class, error_message
  FROM files
 WHERE status IN ('PENDING', 'CLAIMED') AND ($1::text IS NULL OR ingestion = $1)
 ORDER BY first_seen_at, id
 LIMIT 1;

-- name: stuck_count
-- PENDING files whose message is gone: dead-lettered, not seen for $2 seconds, or marked by a
-- re-queue (retry, backfill, schema approve) that never confirmed its send.
SELECT count(*)
  FROM files
 WHERE status = 'PENDING' AND ($1::text IS NULL OR ingestion = $1)
   AND (error_class IN ('DeadLettered', 'Requeuing')
        OR last_event_at <= now() - make_interval(secs => $2::double precision));

-- name: batch_summary
-- batches.ingestion lists every ingestion of a mixed batch, comma-separated.
SELECT count(*) FILTER (WHERE status = 'WRITING') AS writing,
       count(*) FILTER (WHERE status = 'WRITING' AND lease_expires_at < now()) AS lease_expired,
       count(*) FILTER (WHERE status = 'ABORTED' AND created_at >= now() - interval '1 day') AS aborted_last_day,
       max(finished_at) FILTER (WHERE status = 'COMMITTED') AS last_commit_at
  FROM batches
 WHERE ($1::text IS NULL OR $1 = ANY(string_to_array(ingestion, ',')));

-- name: open_proposals
SELECT count(*) FROM schema_proposals WHERE status = 'PENDING' AND ($1::text IS NULL OR ingestion = $1);

-- name: rejected_recently
SELECT count(*) FROM rejected_messages WHERE received_at >= now() - interval '1 day';

-- name: list_files
-- Newest first; updated_at is the file's latest activity (event, claim or end).
-- $7: only files that left bad records out (rows_rejected > 0).
SELECT id, ingestion, bucket, key, etag, status, size_bytes, rows_loaded, rows_rejected, bad_records, attempts,
       events_seen, batch_id, proposal_id, error_class, error_message, first_seen_at, last_event_at, finished_at,
       GREATEST(last_event_at, claimed_at, finished_at) AS updated_at,
       count(*) OVER () AS total
  FROM files
 WHERE ($1::text[] IS NULL OR status = ANY($1::text[]))
   AND (NOT $7::boolean OR rows_rejected > 0)
   AND ($2::text IS NULL OR ingestion = $2)
   AND ($3::text IS NULL OR bucket = $3)
   AND ($4::text IS NULL OR left(key, length($4::text)) = $4::text)
   AND ($5::timestamptz IS NULL OR GREATEST(last_event_at, claimed_at, finished_at) >= $5)
 ORDER BY id DESC
 LIMIT $6;

-- name: file_history
-- Every ledger row (version) of one object, with its latest batch and its proposal.
SELECT f.id, f.ingestion, f.bucket, f.key, f.etag, f.version_id, f.sequencer, f.size_bytes,
       f.status, f.attempts, f.events_seen, f.rows_loaded, f.rows_rejected, f.bad_records, f.event_time,
       f.first_seen_at,
       f.last_event_at, f.claimed_at, f.finished_at, f.error_class, f.error_message,
       f.replaced_by, f.batch_id, b.status AS batch_status, b.table_name AS batch_table,
       b.files AS batch_files, b.rows_loaded AS batch_rows, b.created_at AS batch_created_at,
       b.finished_at AS batch_finished_at, b.lease_owner AS batch_owner, b.recovered_by AS batch_recovered_by,
       b.error_class AS batch_error_class, b.error_message AS batch_error_message,
       f.proposal_id, p.status AS proposal_status, p.resolution AS proposal_resolution
  FROM files f
  LEFT JOIN batches b ON b.id = f.batch_id
  LEFT JOIN schema_proposals p ON p.id = f.proposal_id
 WHERE f.bucket = $1 AND f.key = $2
 ORDER BY f.id;

-- name: requeue_files
-- Retry, step 1 of 3 (mark): FAILED files, PENDING ones whose message is gone (dead-lettered, or
-- no event for $3 seconds) and PENDING ones an earlier re-queue marked but never confirmed
-- (error_class 'Requeuing': its sender stopped), back to PENDING, marked 'Requeuing'. This
-- statement commits on its own; the caller then sends their notifications (step 2) and records
-- the send (step 3, requeue_sent). No row lock is held while it sends. Rows a worker holds (a
-- claim in progress) are skipped. $1: file ids or NULL; $2: ingestion or NULL; $4: at most this
-- many (NULL: all); $5: only ids above it (the caller pages through by id).
WITH picked AS (
    SELECT id, status AS was, error_class AS was_class, error_message AS was_message
      FROM files
     WHERE ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
       AND ($2::text IS NULL OR ingestion = $2)
       AND id > $5
       AND (status = 'FAILED'
            OR (status = 'PENDING'
                AND (error_class IN ('DeadLettered', 'Requeuing')
                     OR last_event_at <= now() - make_interval(secs => $3::double precision))))
     ORDER BY id
     LIMIT $4
       FOR UPDATE SKIP LOCKED
)
UPDATE files f
   SET status = 'PENDING', finished_at = NULL, last_event_at = now(), error_class = 'Requeuing',
       error_message = left('re-queued by icefeed; was ' || picked.was
                            || COALESCE(' (' || picked.was_class || ': ' || picked.was_message || ')', ''), 2000)
  FROM picked
 WHERE f.id = picked.id
RETURNING f.id, f.ingestion, f.bucket, f.key, f.etag, f.size_bytes, picked.was, picked.was_class,
          picked.was_message;

-- name: requeue_sent
-- Re-queue, step 3 of 3: the notifications of these files were sent. Only files still PENDING
-- with the 'Requeuing' mark change (a worker may have claimed one meanwhile: it is left alone).
-- $2: the error_class to leave ('Retried'), or NULL to clear the mark and its message.
UPDATE files
   SET error_class = $2::text,
       error_message = CASE WHEN $2::text IS NULL THEN NULL ELSE error_message END
 WHERE id = ANY($1::bigint[]) AND status = 'PENDING' AND error_class = 'Requeuing'
RETURNING id;

-- name: known_files
-- Which of these object versions (bucket, key, etag) the ledger already has.
SELECT id, bucket, key, etag, status, error_class
  FROM files
 WHERE (bucket, key, etag) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]));

-- name: register_backfill
-- Backfill, step 1 of 3 (mark): register unseen versions as PENDING with events_seen = 0 and the
-- 'Requeuing' mark, committed before their notifications are sent (step 2; requeue_sent is step
-- 3). A version registered meanwhile is left alone and not returned, so two backfills never
-- both register it.
INSERT INTO files (ingestion, bucket, key, etag, size_bytes, event_time, events_seen, error_class, error_message)
SELECT u.*, 'Requeuing', 'registered by icefeed backfill; its notification is being sent'
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[],
              $7::integer[]) AS u
ON CONFLICT (bucket, key, etag) DO NOTHING
RETURNING id, ingestion, bucket, key, etag, size_bytes;

-- name: key_states
-- Ledger rows of the objects named by DLQ messages (every version of each key).
SELECT id, ingestion, bucket, key, etag, status, rows_loaded, error_class, error_message, finished_at
  FROM files
 WHERE (bucket, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
 ORDER BY id;

-- name: open_proposal_for
SELECT id FROM schema_proposals WHERE table_name = $1 AND signature = $2 AND status = 'PENDING';

-- Schema registry (icefeed schema …, worker/admin/schema.py).

-- name: proposals
SELECT p.id, p.table_name, p.ingestion, p.policy, p.signature, p.status, p.changes,
       p.table_schema, p.incoming_schema, p.resolution, p.created_at, p.resolved_at,
       count(f.id) AS files,
       COALESCE(array_agg(f.key ORDER BY f.id) FILTER (WHERE f.id IS NOT NULL), '{}') AS keys
  FROM schema_proposals p LEFT JOIN files f ON f.proposal_id = p.id
 WHERE ($1::text IS NULL OR p.status = $1) AND ($2::bigint IS NULL OR p.id = $2)
 GROUP BY p.id
 ORDER BY p.id;

-- name: schema_history
SELECT table_name, version, schema, changes, ingestion, first_file, batch_id, created_at
  FROM schema_versions
 WHERE table_name = $1
 ORDER BY version;

-- name: resolve_proposal
UPDATE schema_proposals SET status = $2, resolution = $3, resolved_at = now()
 WHERE id = $1 AND status = 'PENDING'
RETURNING id;

-- name: requeue_proposal_files
-- Approval: the quarantined files go back to PENDING, marked 'Requeuing' (see requeue_files in
-- operator.sql); after the approval commits, the caller sends them to the queue again and
-- records it (requeue_sent).
UPDATE files
   SET status = 'PENDING', finished_at = NULL, last_event_at = now(), error_class = 'Requeuing',
       error_message = 're-queued by icefeed schema approve; its notification is being sent'
 WHERE proposal_id = $1 AND status = 'QUARANTINED'
RETURNING id, bucket, key, etag, size_bytes;

-- name: reject_proposal_files
UPDATE files SET status = 'REJECTED', finished_at = now()
 WHERE proposal_id = $1 AND status = 'QUARANTINED'
RETURNING id;

-- name: pin_column
INSERT INTO table_hints (table_name, column_name, type, proposal_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (table_name, column_name) DO UPDATE SET type = EXCLUDED.type, proposal_id = EXCLUDED.proposal_id;

-- `icefeed demo` (worker/demo.py) and the load harness: whole-ledger reads and the clean-up.

-- name: demo_file_statuses
SELECT key, status FROM files;

-- name: demo_files
SELECT * FROM files ORDER BY id;

-- name: drop_schema_statement
-- The statement that drops a ledger schema; PostgreSQL quotes the name (%I).
SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text);

-- name: table_health
-- Per table: the figures its last maintenance run saw, when it ran and how it went.
SELECT table_name, stats, outcome, error, finished_at, (lease_expires_at > now()) AS running
  FROM table_maintenance
 ORDER BY table_name;

-- `icefeed cost --from-ledger` (worker/admin/cost.py): the last $1 days of loading.

-- name: cost_files
-- Files LOADED in the window, per ingestion: how many, their bytes and rows, how many are small
-- enough for the worker to read itself ($2: ICEFEED_SPARK_WORKER_READ_MAX_BYTES), the extra
-- attempts (retries), and the oldest load in the window (the window may be older than the ledger).
SELECT ingestion,
       count(*) AS files,
       COALESCE(sum(size_bytes), 0)::bigint AS bytes,
       COALESCE(sum(rows_loaded), 0)::bigint AS rows,
       count(*) FILTER (WHERE size_bytes IS NOT NULL AND size_bytes <= $2) AS small_files,
       COALESCE(sum(GREATEST(attempts - 1, 0)), 0)::bigint AS retries,
       min(finished_at) AS first_finished_at,
       now() AS now
  FROM files
 WHERE status = 'LOADED' AND finished_at >= now() - make_interval(days => $1::integer)
 GROUP BY ingestion
 ORDER BY ingestion;

-- name: cost_batches
-- Commits in the window: how many, on how many tables, by how many workers; and the engine time
-- of each (write_started_at → finished_at: the fenced append and its finalize, under the table
-- lock; the heartbeat moves write_started_at, so a commit longer than a heartbeat interval counts
-- from its last renewal). The intercept and slope fit seconds = a + b × files over the commits.
SELECT count(*) AS commits,
       count(DISTINCT table_name) AS tables,
       count(DISTINCT lease_owner) AS owners,
       COALESCE(sum(files), 0)::bigint AS files,
       count(s) AS timed,
       avg(s) AS engine_s_mean,
       avg(f) FILTER (WHERE s IS NOT NULL) AS timed_files_mean,
       regr_intercept(s, f) AS engine_s_intercept,
       regr_slope(s, f) AS engine_s_slope
  FROM (SELECT table_name, lease_owner, files, files::double precision AS f,
               extract(epoch FROM finished_at - write_started_at)::double precision AS s
          FROM batches
         WHERE status = 'COMMITTED' AND finished_at >= now() - make_interval(days => $1::integer)) b;

-- name: cost_ledger_size
-- The files table on disk (indexes and TOAST included) and its estimated rows (planner statistics).
SELECT pg_total_relation_size('files'::regclass) AS files_bytes,
       (SELECT reltuples FROM pg_class WHERE oid = 'files'::regclass)::bigint AS files_rows;

-- name: engine_health
-- Per engine, what the workers that reported in the last 5 minutes saw (each writes every minute): the worst state, since when it
-- fails, the latest error.
SELECT engine,
       CASE WHEN bool_or(state = 'open') THEN 'open'
            WHEN bool_or(state = 'half_open') THEN 'half_open' ELSE 'closed' END AS state,
       min(failing_since) AS failing_since,
       (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL AND last_error <> ''))[1] AS last_error,
       count(*) AS workers,
       max(updated_at) AS updated_at
  FROM engine_states
 WHERE updated_at > now() - interval '5 minutes'
 GROUP BY engine
 ORDER BY engine;
