-- +goose Up

-- Onboarding sessions, kept current in the transaction of each of their
-- events. state is the session as the API shows it (steps, runs, pending
-- items); bootstrap_runs maps an admitted bootstrap run to its session for
-- the process manager that starts the next item.
CREATE TABLE onboarding_sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    state       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX onboarding_sessions_tenant ON onboarding_sessions (tenant_id, created_at);

CREATE TABLE bootstrap_runs (
    run_id      TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES onboarding_sessions (id),
    item_index  INT NOT NULL
);


-- +goose Down
DROP TABLE bootstrap_runs;
DROP TABLE onboarding_sessions;
