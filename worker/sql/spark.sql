-- Spark SQL templates. {table} is a validated, backtick-quoted catalog.db.table; {columns} the
-- data columns as DDL with every name backtick-quoted (worker/domain/schema.py to_ddl); {extra}
-- icefeed's optional _rescued_data column; {location} a validated URL (letters, digits,
-- . _ - / = @ only); {sources} and {batch} hex-encoded string expressions
-- (decode(unhex('…'), 'UTF-8'), worker/adapters/spark_sink.py hex_literal); {target},
-- {source} backtick-quoted column names and {value} an expression over {source}
-- (worker/adapters/table_admin.py). Nothing else is ever substituted. Which of create_table /
-- create_parquet_table, add_columns and accept_any_schema run is the engine dialect's choice
-- (worker/adapters/dialects.py).

-- name: create_table
CREATE TABLE IF NOT EXISTS {table} (
    {columns}_source_file STRING,
    _batch_id STRING,
    _ingested_at TIMESTAMP{extra}
) USING iceberg LOCATION '{location}'

-- name: create_parquet_table
CREATE TABLE IF NOT EXISTS {table} (
    {columns}_source_file STRING,
    _batch_id STRING,
    _ingested_at TIMESTAMP{extra}
) USING parquet LOCATION '{location}'

-- name: add_columns
ALTER TABLE {table} ADD COLUMNS ({columns})

-- name: accept_any_schema
ALTER TABLE {table} SET TBLPROPERTIES ('write.spark.accept-any-schema' = 'true')

-- name: delete_sources
-- {sources}: hex_literal(...) expressions; {batch}: hex_literal(batch id).
DELETE FROM {table} WHERE _source_file IN ({sources}) AND _batch_id <> {batch}

-- name: copy_column
-- {target}/{source}: backtick-quoted column names; {value}: to_json({source}) or CAST({source} AS STRING).
UPDATE {table} SET {target} = {value} WHERE {target} IS NULL AND {source} IS NOT NULL

-- name: count_batch_rows
-- {batch}: hex_literal(batch id).
SELECT count(*) FROM {table} WHERE _batch_id = {batch}

-- name: delete_batch_rows
-- {batch}: hex_literal(batch id). A released batch's rows (audit repair).
DELETE FROM {table} WHERE _batch_id = {batch}

-- name: count_batch_source_rows
-- {batch}: hex_literal(batch id); {sources}: hex_literal(...) expressions.
SELECT count(*) FROM {table} WHERE _batch_id = {batch} AND _source_file IN ({sources})

-- name: delete_batch_source_rows
-- Rows of these files in one batch (an object overwritten while the engine read it).
DELETE FROM {table} WHERE _batch_id = {batch} AND _source_file IN ({sources})
