-- name: schema_create_statement
-- The schema name is validated against [A-Za-z_][A-Za-z0-9_]* and quoted server-side.
SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text);

-- name: lock
SELECT pg_advisory_lock(hashtext('icefeed-migrate:' || $1::text));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('icefeed-migrate:' || $1::text));

-- name: create_history
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: local_lock_timeout
-- Inside a migration's transaction: how long each of its statements may wait for a lock
-- (milliseconds as text; '0' waits forever).
SELECT set_config('lock_timeout', $1::text, true);
