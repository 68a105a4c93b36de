-- +goose Up

-- Executors: the platform's own job code that runs accepted work over
-- HTTP (contract section 9). The token is stored as its SHA-256 only.
-- Registration and revocation are events of the executor's stream; this
-- row is their state, written in the same transaction.
CREATE TABLE executors (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    providers        TEXT[] NOT NULL,
    operation_types  TEXT[],             -- NULL: every type
    token_hash       BYTEA NOT NULL UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    revoked_at       TIMESTAMPTZ,
    last_seen_at     TIMESTAMPTZ
);
CREATE INDEX executors_providers ON executors USING gin (providers) WHERE revoked_at IS NULL;

-- The provider of a run's pinned connection: claims offer a run only to
-- executors of its provider (and type), oldest first.
ALTER TABLE runs ADD COLUMN provider TEXT;
UPDATE runs r SET provider = e.payload->'provider_connection'->>'provider'
    FROM events e
    WHERE e.event_type = 'StartAccepted' AND e.metadata ? 'correlation_id'
      AND e.metadata->>'correlation_id' = r.id AND e.payload->>'run_id' = r.id;
CREATE INDEX runs_claimable ON runs (provider, created_at) WHERE status = 'queued';

-- What execution learned about a connection's readiness, and who changed
-- it last: an operator, or a run.
ALTER TABLE provider_connections
    ADD COLUMN readiness_changed_at TIMESTAMPTZ,
    ADD COLUMN readiness_changed_by_kind TEXT CHECK (readiness_changed_by_kind IN ('operator', 'run')),
    ADD COLUMN readiness_changed_by_id TEXT,
    ADD COLUMN last_verified_at TIMESTAMPTZ;

-- A run's summary (what its executor reported) and what it changed on its
-- connection, for the run detail.
ALTER TABLE projections.ops_runs
    ADD COLUMN summary JSONB,
    ADD COLUMN connection_changes JSONB;

-- +goose Down
ALTER TABLE projections.ops_runs DROP COLUMN connection_changes, DROP COLUMN summary;
ALTER TABLE provider_connections DROP COLUMN last_verified_at, DROP COLUMN readiness_changed_by_id,
    DROP COLUMN readiness_changed_by_kind, DROP COLUMN readiness_changed_at;
DROP INDEX runs_claimable;
ALTER TABLE runs DROP COLUMN provider;
DROP TABLE executors;
