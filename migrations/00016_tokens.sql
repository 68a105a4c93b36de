-- +goose Up

-- Tokens with a lifecycle (contract section 13): every bearer token of a
-- user, an integration or an executor is a row here, stored as its
-- SHA-256 only; an owner may hold several at once (rotation without
-- downtime), each with an optional expiry, revocable one by one. A
-- disabled user's tokens are suspended (not revoked): enabling the user
-- restores them.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    owner_kind    TEXT NOT NULL CHECK (owner_kind IN ('user', 'integration', 'executor')),
    owner_id      TEXT NOT NULL,
    hash          BYTEA NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    suspended     BOOLEAN NOT NULL DEFAULT false,
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX tokens_owner ON tokens (owner_kind, owner_id, created_at);

-- The tokens users and executors held so far: one each, named after their
-- owner.
INSERT INTO tokens (id, owner_kind, owner_id, hash, created_at)
    SELECT id, 'user', id, token_hash, created_at FROM users;
INSERT INTO tokens (id, owner_kind, owner_id, hash, created_at, revoked_at, last_used_at)
    SELECT id, 'executor', id, token_hash, created_at, revoked_at, last_seen_at FROM executors;
ALTER TABLE users DROP COLUMN token_hash;
ALTER TABLE executors DROP COLUMN token_hash;

-- A disabled user's tokens and console sessions stop working.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;

-- Integrations: the MSP's platform, acting for the users of one workspace.
CREATE TABLE integrations (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ
);

-- The integration a run was started through (the Operations view says
-- "<user> via <integration>").
ALTER TABLE projections.ops_runs ADD COLUMN initiated_via TEXT;

-- +goose Down
ALTER TABLE projections.ops_runs DROP COLUMN initiated_via;
DROP TABLE integrations;
ALTER TABLE users DROP COLUMN disabled_at;
ALTER TABLE executors ADD COLUMN token_hash BYTEA UNIQUE;
ALTER TABLE users ADD COLUMN token_hash BYTEA UNIQUE;
UPDATE users u SET token_hash = t.hash FROM tokens t WHERE t.owner_kind = 'user' AND t.id = u.id;
UPDATE executors e SET token_hash = t.hash FROM tokens t WHERE t.owner_kind = 'executor' AND t.id = e.id;
DROP TABLE tokens;
