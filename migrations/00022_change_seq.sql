-- +goose Up

-- A change's sequence number (its cursor) is no longer drawn from a
-- sequence: the changes consumer numbers each batch's changes after the
-- newest one (changes/consumer.go). The numbers then follow from the events
-- alone, so a batch that a crash or a failover takes back is numbered the
-- same when it is derived again, and the consumer's transactions need not
-- wait for their commit to be flushed: a cursor a client was given before
-- the crash names the same change after it. A sequence's next value is not
-- taken back with the transaction that drew it, nor kept by one whose
-- commit was lost.
ALTER TABLE changes ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE changes_seq_seq;

-- +goose Down
CREATE SEQUENCE changes_seq_seq OWNED BY changes.seq;
SELECT setval('changes_seq_seq', coalesce(max(seq), 0) + 1, false) FROM changes;
ALTER TABLE changes ALTER COLUMN seq SET DEFAULT nextval('changes_seq_seq');
