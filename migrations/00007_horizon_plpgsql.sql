-- +goose Up

-- opsgate_horizon (00005) as PL/pgSQL: a LANGUAGE sql function of this
-- shape is not inlined, so PostgreSQL planned its query, with the joins of
-- pg_stat_activity, at every call: about 1.3 ms of planning for 0.3 ms of
-- work, on every poll of every subscriber. PL/pgSQL keeps the plan for the
-- session. The query and its meaning are unchanged.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION opsgate_horizon() RETURNS xid8 LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        WITH snap AS (SELECT pg_current_snapshot() AS s)
        SELECT coalesce(
            (SELECT min(x) FROM snap, pg_snapshot_xip(snap.s) AS x
             WHERE NOT EXISTS (
                 SELECT 1 FROM pg_stat_activity a
                 WHERE a.backend_xid IS NOT NULL
                   AND a.backend_xid::text = ((x::text)::numeric % 4294967296)::text
                   AND (a.datname IS DISTINCT FROM current_database() OR a.application_name = 'opsgate_reader'))),
            (SELECT pg_snapshot_xmax(s) FROM snap)));
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION opsgate_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
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
