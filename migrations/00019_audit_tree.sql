-- +goose Up

-- Each tenant's chain is also a Merkle tree (audit/tree.go): tree_hashes
-- holds, concatenated, the stored hashes (golang.org/x/mod/sumdb/tlog
-- layout) that adding the link's leaf writes: its leaf hash, then the
-- subtrees it completes, 32 bytes each. The chainer writes them with the
-- link; links chained before this migration have none until the backfill
-- (History.BackfillTrees) has built their tree.
ALTER TABLE audit_chain ADD COLUMN tree_hashes BYTEA
    CHECK (length(tree_hashes) BETWEEN 32 AND 32 * 64 AND length(tree_hashes) % 32 = 0);

-- The backfill's work list: empty once every tree is built.
CREATE INDEX audit_chain_tree_backlog ON audit_chain (chain, seq) WHERE tree_hashes IS NULL;

-- The chain stays append-only; the one change allowed is giving a link
-- without tree hashes its tree hashes, once.
-- +goose StatementBegin
CREATE FUNCTION audit_chain_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.tree_hashes IS NULL AND NEW.tree_hashes IS NOT NULL
       AND (NEW.position, NEW.chain, NEW.seq, NEW.prev_hash, NEW.hash, NEW.chained_at)
           IS NOT DISTINCT FROM (OLD.position, OLD.chain, OLD.seq, OLD.prev_hash, OLD.hash, OLD.chained_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit chain is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

DROP TRIGGER audit_chain_append_only ON audit_chain;
CREATE TRIGGER audit_chain_append_only
    BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_refuse_change();

-- The signed checkpoints of each tenant's tree (audit/signer.go), every
-- one kept: a proof is answered with the checkpoint of its tree size.
-- note is the signed note exactly as served.
CREATE TABLE audit_checkpoints (
    chain     TEXT COLLATE "C" NOT NULL,
    size      BIGINT NOT NULL CHECK (size > 0),
    root      BYTEA  NOT NULL CHECK (length(root) = 32),
    note      TEXT   NOT NULL,
    signed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chain, size)
);

CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

-- +goose Down
DROP TABLE audit_checkpoints;
DROP TRIGGER audit_chain_append_only ON audit_chain;
CREATE TRIGGER audit_chain_append_only
    BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
DROP FUNCTION audit_chain_refuse_change();
DROP INDEX audit_chain_tree_backlog;
ALTER TABLE audit_chain DROP COLUMN tree_hashes;
