-- +goose Up

-- Write-side state of the gate. Every row here is changed in the same
-- transaction as the event that records the change, so decisions read
-- state exactly as of the events committed before them.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE, -- SHA-256 of the bearer token
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE memberships (
    user_id    TEXT NOT NULL REFERENCES users (id),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    role       TEXT NOT NULL CHECK (role IN ('owner', 'operator', 'auditor', 'readonly')),
    PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX memberships_tenant ON memberships (tenant_id);

CREATE TABLE provider_connections (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    provider      TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    is_default    BOOLEAN NOT NULL DEFAULT false,
    consent       TEXT NOT NULL CHECK (consent IN ('granted', 'missing', 'revoked')),
    credentials   TEXT NOT NULL CHECK (credentials IN ('valid', 'expired', 'invalid', 'missing')),
    enabled       BOOLEAN NOT NULL,
    simulation    JSONB,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX provider_connections_tenant ON provider_connections (tenant_id, created_at);
CREATE UNIQUE INDEX provider_connections_one_default ON provider_connections (tenant_id) WHERE is_default;

CREATE TABLE restore_runs (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    name          TEXT NOT NULL,
    items         JSONB NOT NULL,
    warnings      JSONB,               -- null until previewed
    previewed_at  TIMESTAMPTZ,
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

-- The ProtectedScope aggregate's current state (a snapshot kept current in
-- the transaction of every append), so one decision costs the same whatever
-- the length of the scope's history.
CREATE TABLE scopes (
    scope_id   TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    state      JSONB NOT NULL
);

-- Runs as the write side knows them: where each lives, its status, and the
-- lease of the worker running it. The partial unique index is the
-- database's last line of defence: never two active runs on one scope.
CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    scope_id          TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    type              TEXT NOT NULL,
    surface           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('blocked', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    epoch             BIGINT NOT NULL DEFAULT 0,
    worker_id         TEXT,
    lease_expires_at  TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX runs_one_active_per_scope ON runs (scope_id) WHERE status IN ('queued', 'running');
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_queued ON runs (created_at) WHERE status = 'queued';

-- Idempotency keys of start requests: the first answer is replayed to the
-- same caller with the same key and body.
CREATE TABLE idempotency_keys (
    user_id       TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  BYTEA NOT NULL,
    status_code   INT NOT NULL,
    response      JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE runs;
DROP TABLE scopes;
DROP TABLE restore_runs;
DROP TABLE provider_connections;
DROP TABLE memberships;
DROP TABLE users;
DROP TABLE tenants;
DROP TABLE workspaces;
