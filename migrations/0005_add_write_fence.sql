-- The write fence (docs/guarantees.md): which batch may append to a table, the engine session of
-- each write, and the audit of released batches. Only ADD COLUMN without defaults and a new
-- table: no rewrite, no long ACCESS EXCLUSIVE lock.

-- The engine session a batch's append runs in (stopped before the batch is released), when the
-- append was fenced, and the audit of a released batch for rows that landed after all.
ALTER TABLE batches ADD COLUMN engine_session text;
ALTER TABLE batches ADD COLUMN write_started_at timestamptz;
ALTER TABLE batches ADD COLUMN audited_at timestamptz;
ALTER TABLE batches ADD COLUMN zombie_rows bigint;

-- One writer slot per table: the batch whose append may be running. A batch starts its append
-- only after taking the slot from a batch that is no longer WRITING.
CREATE TABLE table_writers (
    table_name text        PRIMARY KEY,
    batch_id   uuid        NOT NULL,
    since      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX batches_audit_idx ON batches (finished_at)
    WHERE status = 'ABORTED' AND write_started_at IS NOT NULL AND audited_at IS NULL;
