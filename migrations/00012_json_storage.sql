-- +goose Up

-- Events and scope snapshots are written once and read whole, never
-- queried inside (but for the correlation id of the metadata): they are
-- stored as json, the text as written, rather than jsonb. jsonb parses
-- every value into its binary form on the way in and prints it back to
-- text on every read (each subscriber's, each replay's); json only checks
-- the text on the way in and hands it back as it is.
DROP INDEX events_correlation;
ALTER TABLE events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
CREATE INDEX events_correlation ON events ((metadata->>'correlation_id'), position)
    WHERE metadata->>'correlation_id' IS NOT NULL;
ALTER TABLE scopes ALTER COLUMN state TYPE json USING state::json;

-- +goose Down
DROP INDEX events_correlation;
ALTER TABLE events
    ALTER COLUMN payload TYPE jsonb USING payload::jsonb,
    ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb;
CREATE INDEX events_correlation ON events ((metadata->>'correlation_id'), position) WHERE metadata ? 'correlation_id';
ALTER TABLE scopes ALTER COLUMN state TYPE jsonb USING state::jsonb;
