-- Schema registry: every schema version of every table icefeed writes, and proposals opened by
-- quarantined files (one open proposal per table and set of offending changes).

CREATE TABLE schema_versions (
    table_name   text        NOT NULL,
    version      integer     NOT NULL,
    schema       jsonb       NOT NULL,   -- Spark schema JSON of the data columns
    changes      jsonb       NOT NULL,   -- [{kind, path, table_type, incoming_type}] that made it
    ingestion    text,
    first_file   text,
    batch_id     uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, version)
);

CREATE TABLE schema_proposals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name      text        NOT NULL,
    ingestion       text        NOT NULL,
    policy          text        NOT NULL,
    signature       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED')),
    table_schema    jsonb,
    incoming_schema jsonb       NOT NULL,
    changes         jsonb       NOT NULL,
    resolution      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);

CREATE UNIQUE INDEX schema_proposals_open_idx ON schema_proposals (table_name, signature)
    WHERE status = 'PENDING';

ALTER TABLE files ADD COLUMN proposal_id bigint REFERENCES schema_proposals (id);
CREATE INDEX files_proposal_idx ON files (proposal_id) WHERE proposal_id IS NOT NULL;
