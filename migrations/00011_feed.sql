-- +goose Up

-- Subscribers read the event log itself (eventstore/feed.go): each event
-- is written once, by its append, instead of again to watermill's outbox
-- tables. A consumer's offset is its checkpoint: the last event it applied,
-- in subscriber order (transaction id, then position), moved in the same
-- transaction as whatever the consumer writes. The projectors' checkpoints
-- move here from the projections schema, and the process manager's
-- watermill offset becomes a checkpoint of the same kind.
CREATE TABLE feed_checkpoints (
    consumer   TEXT COLLATE "C" PRIMARY KEY,
    tx_id      XID8   NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

INSERT INTO feed_checkpoints (consumer, tx_id, position, updated_at)
SELECT projector, tx_id, position, updated_at FROM projections.projection_checkpoints;

-- The process manager's offset was a row of watermill_events; its event is
-- the one with the message's uuid.
INSERT INTO feed_checkpoints (consumer, tx_id, position)
SELECT 'onboarding.bootstrap', e.tx_id, e.position
FROM watermill_offsets_events o
JOIN watermill_events w ON w."offset" = o.offset_acked AND w.transaction_id = o.last_processed_transaction_id
JOIN events e ON e.event_id = w.uuid
WHERE o.consumer_group = 'onboarding.bootstrap';

DROP TABLE projections.projection_checkpoints;
DROP TABLE watermill_offsets_starts_accepted;
DROP TABLE watermill_starts_accepted;
DROP TABLE watermill_offsets_events;
DROP TABLE watermill_events;

-- +goose Down
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
CREATE TABLE projections.projection_checkpoints (
    projector  TEXT COLLATE "C" PRIMARY KEY,
    tx_id      XID8   NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO projections.projection_checkpoints (projector, tx_id, position, updated_at)
SELECT consumer, tx_id, position, updated_at FROM feed_checkpoints
WHERE consumer IN ('operations', 'queue', 'notifications');
DROP TABLE feed_checkpoints;
