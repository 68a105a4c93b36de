-- +goose Up

-- Console sessions (console/sessions.go): a user's bearer token is
-- exchanged once for a session cookie. Only the SHA-256 of the cookie's
-- value is stored, like tokens; csrf is the token every form of the
-- session carries.
CREATE TABLE console_sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- +goose Down
DROP TABLE console_sessions;
