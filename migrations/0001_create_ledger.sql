-- The ledger: one row per file identity (bucket, key, etag) and one row per Iceberg write.
-- Runs with search_path set to the ledger schema (ICEFEED_PG_LEDGER_SCHEMA).

CREATE TABLE files (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ingestion        text        NOT NULL,
    bucket           text        NOT NULL,
    key              text        NOT NULL,
    etag             text        NOT NULL,
    version_id       text,
    sequencer        text,
    size_bytes       bigint,
    status           text        NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'CLAIMED', 'LOADED', 'FAILED', 'GONE', 'SKIPPED',
                          'QUARANTINED', 'REJECTED')),
    attempts         integer     NOT NULL DEFAULT 0,
    events_seen      integer     NOT NULL DEFAULT 1,
    batch_id         uuid,
    rows_loaded      bigint,
    event_time       timestamptz,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_event_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at       timestamptz,
    finished_at      timestamptz,
    error_class      text,
    error_message    text,
    CONSTRAINT files_identity UNIQUE (bucket, key, etag)
);

CREATE INDEX files_open_idx ON files (status) WHERE status IN ('PENDING', 'CLAIMED');
CREATE INDEX files_batch_idx ON files (batch_id);
CREATE INDEX files_key_idx ON files (bucket, key);

CREATE TABLE batches (
    id               uuid        PRIMARY KEY,
    ingestion        text        NOT NULL,
    table_name       text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('WRITING', 'COMMITTED', 'ABORTED')),
    lease_owner      text,
    lease_expires_at timestamptz,
    files            integer     NOT NULL,
    bytes            bigint      NOT NULL DEFAULT 0,
    rows_loaded      bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    recovered_by     text,
    error_class      text,
    error_message    text
);

CREATE INDEX batches_writing_idx ON batches (lease_expires_at) WHERE status = 'WRITING';

-- Messages that could not be understood are kept whole, so nothing is lost by acking them.
CREATE TABLE rejected_messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_url        text        NOT NULL,
    message_id       text        NOT NULL,
    receive_count    integer,
    reason           text        NOT NULL,
    body             text        NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rejected_messages_identity UNIQUE (queue_url, message_id)
);
