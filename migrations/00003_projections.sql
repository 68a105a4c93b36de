-- +goose Up

-- Read models live in their own schema, so that `opsgate projections
-- rebuild` can build a fresh copy beside them and swap schemas in one
-- transaction. Projectors run with search_path set to the schema they
-- write; readers name the schema.
CREATE SCHEMA projections;

-- Read models, built by the projectors from the event history. Each
-- projector keeps its checkpoint (the last event applied, in subscriber
-- order) in the same transaction as its read-model changes, which makes it
-- idempotent under redelivery.
CREATE TABLE projections.projection_checkpoints (
    projector  TEXT PRIMARY KEY,
    tx_id      XID8   NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- Operations monitoring view: one row per run, blocked runs included.
CREATE TABLE projections.ops_runs (
    id                  TEXT PRIMARY KEY,   -- ULID: sorts by creation time
    tenant_id           TEXT NOT NULL,
    scope_id            TEXT NOT NULL,
    type                TEXT NOT NULL,
    canonical_type      TEXT NOT NULL,
    label               TEXT NOT NULL,
    status              TEXT NOT NULL,
    outcome             TEXT NOT NULL,      -- accepted or blocked: how the run came to be
    target              TEXT,
    connection_id       TEXT,
    connection_name     TEXT,
    provider            TEXT,
    initiator_id        TEXT NOT NULL,
    surface             TEXT NOT NULL,
    reason_code         TEXT,
    reason_class        TEXT,
    reason_message      TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    deduped_count       INT NOT NULL DEFAULT 0,
    scope_busy_count    INT NOT NULL DEFAULT 0,
    last_position       BIGINT NOT NULL
);
CREATE INDEX ops_runs_tenant ON projections.ops_runs (tenant_id, id DESC);
CREATE INDEX ops_runs_tenant_status ON projections.ops_runs (tenant_id, status, id DESC);
CREATE INDEX ops_runs_tenant_type ON projections.ops_runs (tenant_id, canonical_type, id DESC);
CREATE INDEX ops_runs_connection ON projections.ops_runs (connection_id, id DESC);

-- Job queue view: queued and running work, for dashboards.
CREATE TABLE projections.ops_queue (
    run_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running')),
    queued_at   TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ
);
CREATE INDEX ops_queue_tenant ON projections.ops_queue (tenant_id, status, queued_at);
CREATE INDEX ops_queue_scope ON projections.ops_queue (scope_id, status, queued_at);

-- Notifications: one per terminal outcome of an accepted run, for its
-- initiator only.
CREATE TABLE projections.ops_notifications (
    id          TEXT PRIMARY KEY,   -- the id of the event that ended the run
    user_id     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    tone        TEXT NOT NULL,
    next_steps  JSONB NOT NULL,
    reason      JSONB,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX ops_notifications_user ON projections.ops_notifications (user_id, id DESC);


-- +goose Down
DROP SCHEMA projections CASCADE;
