-- Bad records of a quarantining route (bad_records = "quarantine", docs/bad-input.md): per file,
-- how many records were left out of the load and the S3 object holding them. Set when the file's
-- batch commits; NULL for files of other routes (and files loaded before this migration).
ALTER TABLE files
    ADD COLUMN rows_rejected bigint,
    ADD COLUMN bad_records   text;

CREATE INDEX files_with_bad_records ON files (finished_at) WHERE rows_rejected > 0;
