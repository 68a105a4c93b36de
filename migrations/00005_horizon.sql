-- +goose Up

-- The reading horizon of this database: readers in (transaction id,
-- position) order may read every event of a transaction older than it.
-- pg_snapshot_xmin(pg_current_snapshot()) would do, but it counts the open
-- transactions of every database of the server, so a long transaction in
-- another database would hold our readers back. This is the oldest
-- transaction of the current snapshot that is not known to belong to
-- another database (a transaction that cannot be placed, for example one
-- that ended meanwhile or whose session the caller may not see, counts),
-- or the snapshot's xmax when there is none. A transaction's database
-- never changes, so a stale view of pg_stat_activity can only make the
-- horizon earlier, never later: it is always safe.
-- +goose StatementBegin
CREATE FUNCTION opsgate_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    WITH snap AS (SELECT pg_current_snapshot() AS s)
    SELECT coalesce(
        (SELECT min(x) FROM snap, pg_snapshot_xip(snap.s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a
             WHERE a.backend_xid IS NOT NULL
               AND a.backend_xid::text = ((x::text)::numeric % 4294967296)::text
               AND a.datname IS DISTINCT FROM current_database())),
        (SELECT pg_snapshot_xmax(s) FROM snap))
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION opsgate_horizon();
