-- Table maintenance (docs/table-maintenance.md): which worker maintains a table (a lease, so a
-- dead worker's turn comes back), when it last ran, what it found and did. A new table only.
CREATE TABLE table_maintenance (
    table_name         text        PRIMARY KEY,
    lease_owner        text,
    lease_expires_at   timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    outcome            text,           -- done | failed | skipped
    error              text,
    orphans_checked_at timestamptz,
    stats              jsonb,          -- snapshots, data files, small files, bytes, manifests, metadata bytes
    steps              jsonb           -- what the last run did, step by step
);
