-- Spark SQL templates. {table} is a validated, backtick-quoted catalog.db.table; {location} a
-- validated URL (letters, digits, . _ - / = only). Nothing else is ever substituted.

-- name: create_table
CREATE TABLE IF NOT EXISTS {table} (
    _source_file STRING,
    _batch_id STRING,
    _ingested_at TIMESTAMP
) USING iceberg LOCATION '{location}'
