-- +goose Up

-- When each timeline of the cluster was first seen by a reaper. A standby
-- promoted to primary starts a new timeline; no lease holder could renew
-- its lease while the old primary was failing, so, as after a restart
-- (00008_lease_length.sql), a lease may be reaped only once its full length
-- has passed since the timeline began here. The first timeline (a cluster
-- never promoted) needs no row: its server's start is what counts.
CREATE TABLE server_timelines (
    timeline TEXT PRIMARY KEY,
    since    TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE server_timelines;
