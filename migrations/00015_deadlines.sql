-- +goose Up

-- Deadlines (contract section 12): an accepted run must be claimed by
-- claim_by and, once claimed, finished by finish_by; the reaper ends runs
-- past either, reading these partial indexes rather than the table.
ALTER TABLE runs
    ADD COLUMN claim_by TIMESTAMPTZ,
    ADD COLUMN finish_by TIMESTAMPTZ;
CREATE INDEX runs_claim_by ON runs (claim_by) WHERE status = 'queued' AND claim_by IS NOT NULL;
CREATE INDEX runs_finish_by ON runs (finish_by) WHERE status = 'running' AND finish_by IS NOT NULL;

-- The built-in workers that run now: each worker process announces its
-- providers every few seconds and withdraws when it stops, so that the
-- preflight counts the built-in worker only while one runs.
CREATE TABLE worker_presence (
    worker_id  TEXT PRIMARY KEY,
    providers  TEXT[] NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL
);

-- The run shows its deadlines and the run it runs again.
ALTER TABLE projections.ops_runs
    ADD COLUMN claim_by TIMESTAMPTZ,
    ADD COLUMN finish_by TIMESTAMPTZ,
    ADD COLUMN rerun_of TEXT;

-- +goose Down
ALTER TABLE projections.ops_runs DROP COLUMN rerun_of, DROP COLUMN finish_by, DROP COLUMN claim_by;
DROP TABLE worker_presence;
DROP INDEX runs_finish_by;
DROP INDEX runs_claim_by;
ALTER TABLE runs DROP COLUMN finish_by, DROP COLUMN claim_by;
