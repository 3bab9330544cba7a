-- Operations: the worker's readiness probe and its gauges. Runs with search_path set to the
-- ledger schema.

-- name: ping
SELECT 1;

-- name: count_quarantined
-- Quarantined files are always attached to a schema proposal (finalize does both in one
-- transaction): the partial index files_proposal_idx keeps this cheap on a large ledger.
SELECT count(*) FROM files WHERE proposal_id IS NOT NULL AND status = 'QUARANTINED';
