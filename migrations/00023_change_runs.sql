-- +goose Up

-- The changes consumer reads a run as its newest change carries it (every
-- event that changes a run makes a change), instead of writing it to
-- change_subjects as well: change_subjects keeps the connections alone.
CREATE INDEX changes_run ON changes (run_id, seq) WHERE run_id IS NOT NULL;
DELETE FROM change_subjects WHERE kind = 'run';

-- +goose Down
INSERT INTO change_subjects (id, kind, state)
SELECT DISTINCT ON (run_id) run_id, 'run', run FROM changes WHERE run_id IS NOT NULL ORDER BY run_id, seq DESC
ON CONFLICT (id) DO NOTHING;
DROP INDEX changes_run;
