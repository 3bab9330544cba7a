-- Column types pinned on a table by an operator (icefeed schema approve --as string): applied
-- to every file read for the table, after the route's own schema hints.
CREATE TABLE table_hints (
    table_name  text        NOT NULL,
    column_name text        NOT NULL,
    type        text        NOT NULL,
    proposal_id bigint      REFERENCES schema_proposals (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
