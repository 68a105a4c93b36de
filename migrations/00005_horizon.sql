-- +goose Up

-- The reading horizon of this database: readers in (transaction id,
-- position) order may read every event of a transaction older than it.
-- pg_snapshot_xmin(pg_current_snapshot()) would do, but it counts every
-- open transaction of the server, so a long transaction in another
-- database, or a subscriber's own transaction (it locks and writes its
-- offsets), would hold every reader back. This is the oldest transaction
-- of the current snapshot that is not known to be unable to append events:
-- transactions of other databases, and of sessions named
-- 'opsgate_reader' (application_name), which opsgate gives to the
-- connections of its subscribers and which never append. A transaction
-- that cannot be placed (it ended meanwhile, or its session is not
-- visible to the caller) counts, and so does every other session. A
-- transaction's session never changes, so a stale view of
-- pg_stat_activity can only make the horizon earlier, never later.
-- +goose StatementBegin
CREATE FUNCTION opsgate_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    WITH snap AS (SELECT pg_current_snapshot() AS s)
    SELECT coalesce(
        (SELECT min(x) FROM snap, pg_snapshot_xip(snap.s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a
             WHERE a.backend_xid IS NOT NULL
               AND a.backend_xid::text = ((x::text)::numeric % 4294967296)::text
               AND (a.datname IS DISTINCT FROM current_database() OR a.application_name = 'opsgate_reader'))),
        (SELECT pg_snapshot_xmax(s) FROM snap))
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION opsgate_horizon();
