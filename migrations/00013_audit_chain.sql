-- +goose Up

-- The audit chain (audit/chain.go): every event gets a hash chained over
-- its tenant's history in subscriber order (transaction id, then
-- position), computed behind the commit by a feed consumer. Events that
-- belong to no tenant form the chain named ''. seq numbers a chain's
-- events from 1; prev_hash is the hash of the event before (32 zero bytes
-- for the first). chained_at says when the chainer caught up with the
-- event, so its lag is visible. There is no foreign key to events: removing
-- an event is refused by the events' own triggers, and one removed by
-- someone who disabled them is found by verification (a gap in seq).
CREATE TABLE audit_chain (
    position   BIGINT PRIMARY KEY,
    chain      TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL CHECK (seq > 0),
    prev_hash  BYTEA  NOT NULL CHECK (length(prev_hash) = 32),
    hash       BYTEA  NOT NULL CHECK (length(hash) = 32),
    chained_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (chain, seq)
);

-- A chain's head: where the next event of the chain links to.
CREATE TABLE audit_chain_heads (
    chain    TEXT COLLATE "C" PRIMARY KEY,
    seq      BIGINT NOT NULL,
    position BIGINT NOT NULL,
    hash     BYTEA  NOT NULL
);

-- Like the events, the chain is append-only.
CREATE TRIGGER audit_chain_append_only
    BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER audit_chain_no_truncate
    BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- A connection read as of a moment needs the events that made another
-- connection the default in its place: few, found through this index.
CREATE INDEX events_made_default ON events (tenant_id, position) WHERE event_type = 'ProviderConnectionMadeDefault';

-- +goose Down
DROP INDEX events_made_default;
DROP TABLE audit_chain_heads;
DROP TABLE audit_chain;
