-- The load harness's read-only views of icefeed's ledger (load/ledger.py). Runs with search_path
-- set to the ledger schema; $1 … are bound parameters.

-- name: progress
-- (files registered, files in a final state) under a prefix of the landing keys; $2: open statuses.
SELECT count(*) AS total, count(*) FILTER (WHERE status <> ALL($2::text[])) AS final
  FROM files
 WHERE starts_with(key, $1);

-- name: files
SELECT id, key, status, rows_loaded, batch_id, attempts, events_seen, error_class,
       extract(epoch FROM finished_at)::float8 AS finished_at,
       extract(epoch FROM first_seen_at)::float8 AS first_seen_at,
       extract(epoch FROM event_time)::float8 AS event_time
  FROM files
 WHERE starts_with(key, $1)
 ORDER BY id;

-- name: batches
-- Every batch that held (last) a file under the prefix, with its files and timings.
SELECT b.id, b.status, b.files, b.rows_loaded, b.lease_owner,
       extract(epoch FROM b.created_at)::float8 AS created_at,
       extract(epoch FROM b.finished_at)::float8 AS finished_at
  FROM batches b
 WHERE b.id IN (SELECT DISTINCT batch_id FROM files WHERE starts_with(key, $1) AND batch_id IS NOT NULL)
 ORDER BY b.created_at;
