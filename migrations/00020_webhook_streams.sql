-- +goose Up

-- Each endpoint's stream of first attempts: the changes of its
-- workspace's tenants, of the types it subscribes to, in feed order. A
-- change becomes a row of webhook_deliveries only once its first attempt
-- is answered (the delivery log keeps every attempt), so that a delivery
-- costs one row written once, not a row queued, claimed and recorded.
--
-- One dispatcher at a time holds a stream (holder, until held_until) and
-- sends its changes. claimed is how far it has read, sent how far every
-- first attempt is recorded. A holder that stops without giving the
-- stream back leaves (sent, claimed] to the next one, which records the
-- attempts of that range it finds no row of as interrupted, and tries
-- them again. One that gives it back reads on from sent, and passes over
-- the changes up to recheck that have an attempt recorded already (its
-- holder recorded them before an earlier one).
CREATE TABLE webhook_streams (
    endpoint_id  TEXT PRIMARY KEY REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    sent         BIGINT NOT NULL,
    claimed      BIGINT NOT NULL,
    recheck      BIGINT NOT NULL DEFAULT 0,
    holder       TEXT,
    held_until   TIMESTAMPTZ,
    CHECK (sent <= claimed)
);

-- The endpoints there are follow the feed from its head: their changes
-- before it were queued as rows, which the dispatcher still sends.
INSERT INTO webhook_streams (endpoint_id, sent, claimed)
SELECT id, h.seq, h.seq FROM webhook_endpoints, (SELECT coalesce(max(seq), 0) AS seq FROM changes) h;

-- An endpoint's attempts of a message: the next attempt's number, and
-- which changes of a stream have an attempt recorded already.
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (endpoint_id, message_id);

-- +goose Down
DROP INDEX webhook_deliveries_message;
DROP TABLE webhook_streams;
