-- +goose Up

-- When a reaper first reached each start of the database server. After a
-- restart no lease holder could renew its lease while the server was down,
-- nor while it recovered from a crash (which can take seconds), so a lease
-- may be reaped only once its full length has passed since the server was
-- first reachable again (gate/runs.go, leaseExpired), not since its
-- postmaster started (00008_lease_length.sql).
CREATE TABLE server_starts (
    started_at TIMESTAMPTZ PRIMARY KEY,
    seen_at    TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE server_starts;
