-- +goose Up

-- The append-only event store. position is unique but is assigned at insert
-- time, so concurrent transactions can commit out of position order; readers
-- that must never skip a late commit read in (tx_id, position) order and only
-- below the oldest transaction still in flight (see eventstore.ReadAll).
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           XID8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version > 0),
    event_id        TEXT        NOT NULL UNIQUE CHECK (length(event_id) = 26),
    event_type      TEXT        NOT NULL,
    schema_version  INT         NOT NULL CHECK (schema_version > 0),
    tenant_id       TEXT,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_commit_order ON events (tx_id, position);
CREATE INDEX events_tenant_commit_order ON events (tenant_id, tx_id, position) WHERE tenant_id IS NOT NULL;
-- Every event about one run (or other aggregate) carries its id as
-- correlation id; a run's history is read through this index.
CREATE INDEX events_correlation ON events ((metadata->>'correlation_id'), position) WHERE metadata ? 'correlation_id';

-- +goose StatementBegin
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- watermill-sql tables (DefaultPostgreSQLSchema / DefaultPostgreSQLOffsetsAdapter
-- layout), created here rather than at subscribe time so that publishing inside
-- an application transaction never runs DDL.
-- Topic "events": every appended event. Topic "starts_accepted": StartAccepted only.
CREATE TABLE watermill_events (
    "offset"        BIGSERIAL,
    uuid            VARCHAR(36) NOT NULL,
    created_at      TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    payload         JSON DEFAULT NULL,
    metadata        JSON DEFAULT NULL,
    transaction_id  XID8        NOT NULL,
    PRIMARY KEY (transaction_id, "offset")
);

CREATE TABLE watermill_offsets_events (
    consumer_group                  VARCHAR(255) NOT NULL PRIMARY KEY,
    offset_acked                    BIGINT,
    last_processed_transaction_id   XID8 NOT NULL
);

CREATE TABLE watermill_starts_accepted (
    "offset"        BIGSERIAL,
    uuid            VARCHAR(36) NOT NULL,
    created_at      TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    payload         JSON DEFAULT NULL,
    metadata        JSON DEFAULT NULL,
    transaction_id  XID8        NOT NULL,
    PRIMARY KEY (transaction_id, "offset")
);

CREATE TABLE watermill_offsets_starts_accepted (
    consumer_group                  VARCHAR(255) NOT NULL PRIMARY KEY,
    offset_acked                    BIGINT,
    last_processed_transaction_id   XID8 NOT NULL
);

-- +goose Down
DROP TABLE watermill_offsets_starts_accepted;
DROP TABLE watermill_starts_accepted;
DROP TABLE watermill_offsets_events;
DROP TABLE watermill_events;
DROP TABLE events;
DROP FUNCTION events_refuse_change();
