-- on_overwrite = replace: a file whose rows a newer version of the same key replaced.
ALTER TABLE files DROP CONSTRAINT files_status_check;
ALTER TABLE files ADD CONSTRAINT files_status_check
    CHECK (status IN ('PENDING', 'CLAIMED', 'LOADED', 'FAILED', 'GONE', 'SKIPPED',
                      'QUARANTINED', 'REJECTED', 'REPLACED'));
ALTER TABLE files ADD COLUMN replaced_by bigint REFERENCES files (id);
