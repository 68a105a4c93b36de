-- +goose Up

-- Changes (contract section 14): what happened to runs and connections, one
-- per event that changed something a platform follows, derived from the
-- events by the changes consumer in commit order. seq is the cursor: the
-- consumer's transactions take turns (its checkpoint's row lock), so seq
-- grows in commit order. id is the event's id: the same change always has
-- the same id.
CREATE TABLE changes (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL,
    type           TEXT NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    run_id         TEXT,
    run            JSON,
    connection     JSON,
    initiator_id   TEXT
);
CREATE INDEX changes_tenant ON changes (tenant_id, seq);

-- The runs and connections as the changes consumer last folded them, so
-- that each change carries its subject as of that change.
CREATE TABLE change_subjects (
    id     TEXT PRIMARY KEY,
    kind   TEXT NOT NULL CHECK (kind IN ('run', 'connection')),
    state  JSON NOT NULL
);

-- Webhook endpoints of a workspace, in the Standard Webhooks format.
-- types NULL subscribes to every type.
CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces (id),
    url              TEXT NOT NULL,
    types            TEXT[],
    description      TEXT NOT NULL DEFAULT '',
    enabled          BOOLEAN NOT NULL DEFAULT true,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id);

-- Signing secrets: the current one (expires_at NULL), and those rotated
-- out, which keep signing beside it until expires_at.
CREATE TABLE webhook_secrets (
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ
);
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id);

-- Deliveries: one row per attempt to send a message (a change, or a ping)
-- to an endpoint. A pending attempt is due at next_attempt_at; a
-- dispatcher that sends it holds it until claimed_until, so that no two
-- send it at once, and one that dies meanwhile leaves it to be found
-- (recorded as failed, tried again) once that has passed.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id       TEXT NOT NULL,
    type             TEXT NOT NULL,
    ping             JSON,
    attempt          INT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'gave_up')),
    next_attempt_at  TIMESTAMPTZ,
    claimed_until    TIMESTAMPTZ,
    response_status  INT,
    latency_ms       INT,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL
);
-- A dispatcher claims each endpoint's due attempts oldest first, a few at
-- a time: an index scan per endpoint that stops at its limit, whatever
-- the backlog.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhook_secrets;
DROP TABLE webhook_endpoints;
DROP TABLE change_subjects;
DROP TABLE changes;
