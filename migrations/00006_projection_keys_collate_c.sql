-- +goose Up

-- The read models' identifiers (ULIDs and ids derived from them) and
-- status words are ASCII and compared as bytes: the "C" collation gives
-- them the order they have under the database's default, without the
-- locale's comparison routine (and with abbreviated sort keys, which
-- PostgreSQL uses for "C" only). Index builds, which a rebuild runs for
-- every index, and index scans get cheaper; no query changes its results.
ALTER TABLE projections.ops_runs
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C",
    ALTER COLUMN canonical_type TYPE TEXT COLLATE "C",
    ALTER COLUMN connection_id TYPE TEXT COLLATE "C";
ALTER TABLE projections.ops_queue
    ALTER COLUMN run_id TYPE TEXT COLLATE "C",
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN scope_id TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C";
ALTER TABLE projections.ops_notifications
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C";

-- +goose Down
ALTER TABLE projections.ops_runs
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "default",
    ALTER COLUMN status TYPE TEXT COLLATE "default",
    ALTER COLUMN canonical_type TYPE TEXT COLLATE "default",
    ALTER COLUMN connection_id TYPE TEXT COLLATE "default";
ALTER TABLE projections.ops_queue
    ALTER COLUMN run_id TYPE TEXT COLLATE "default",
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "default",
    ALTER COLUMN scope_id TYPE TEXT COLLATE "default",
    ALTER COLUMN status TYPE TEXT COLLATE "default";
ALTER TABLE projections.ops_notifications
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN user_id TYPE TEXT COLLATE "default";
