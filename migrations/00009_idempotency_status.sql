-- +goose Up

-- The HTTP status of a stored answer is the API's to derive from its
-- outcome; the gate stores the answer alone.
ALTER TABLE idempotency_keys DROP COLUMN status_code;

-- +goose Down
ALTER TABLE idempotency_keys ADD COLUMN status_code INT NOT NULL DEFAULT 0;
