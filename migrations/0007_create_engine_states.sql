-- Per engine and worker, the state of the worker's circuit breaker for that engine (docs/engines.md
-- "Many engines per fleet"), written when it changes; `icefeed status` shows them. A new table only.
CREATE TABLE engine_states (
    engine        text        NOT NULL,
    worker_id     text        NOT NULL,
    state         text        NOT NULL,  -- closed | open | half_open
    failing_since timestamptz,
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (engine, worker_id)
);
