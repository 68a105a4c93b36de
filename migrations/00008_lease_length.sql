-- +goose Up

-- The length of a running run's lease, so that the reaper can give every
-- lease a fresh length after the database restarts: while the server was
-- down no holder could renew its lease, so a lease that ran out during an
-- outage says nothing about its holder. A lease has expired when its
-- expiry is past and so is the server's start plus the lease's length.
ALTER TABLE runs ADD COLUMN lease_us BIGINT;

-- +goose Down
ALTER TABLE runs DROP COLUMN lease_us;
