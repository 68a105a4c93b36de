package gate

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// A start with an Idempotency-Key answers a repeat of the same request by
// the same caller with the first answer, recording nothing new. The key is
// locked in the decision's first round trip, after the scope's lock (every
// transaction takes scope locks first, then key locks in order, so none
// waits for another in a cycle): of two requests with one key, the second
// waits for the first to commit and then finds its answer, whatever scope
// each resolved to.

// idempotencyKey is a caller's key.
type idempotencyKey struct{ user, key string }

// stored is the first answer to a key.
type stored struct {
	hash   []byte
	result domain.StartResult
}

func (s stored) matches(hash []byte) bool { return bytes.Equal(s.hash, hash) }

// remembered is an answer to store under its key.
type remembered struct {
	key    idempotencyKey
	hash   []byte
	result domain.StartResult
}

// queueKeyLocks queues the locks of the batch's idempotency keys, in
// order, and returns the keys.
func queueKeyLocks(b *pgx.Batch, batch []*pending) []idempotencyKey {
	keys := keysOf(batch)
	if len(keys) > 0 {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = "idempotency-" + k.user + "-" + k.key
		}
		eventstore.QueueLocks(b, eventstore.Streams(names...), eventstore.Wait)
	}
	return keys
}

// keysOf returns the batch's idempotency keys, sorted, each once.
func keysOf(batch []*pending) []idempotencyKey {
	var keys []idempotencyKey
	for _, p := range batch {
		if p.req.IdempotencyKey != "" {
			keys = append(keys, idempotencyKey{p.req.Actor.ID, p.req.IdempotencyKey})
		}
	}
	slices.SortFunc(keys, func(a, b idempotencyKey) int {
		return cmp.Or(cmp.Compare(a.user, b.user), cmp.Compare(a.key, b.key))
	})
	return slices.Compact(keys)
}

// queueLookupKeys queues the read of the answers stored under keys; the
// map is filled when b is sent.
func queueLookupKeys(b *pgx.Batch, keys []idempotencyKey) map[idempotencyKey]stored {
	found := map[idempotencyKey]stored{}
	for _, k := range keys {
		b.Queue(`SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2`, k.user, k.key).
			QueryRow(func(row pgx.Row) error {
				var hash, body []byte
				err := row.Scan(&hash, &body)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("look up idempotency key: %w", err)
				}
				var res domain.StartResult
				if err := json.Unmarshal(body, &res); err != nil {
					return fmt.Errorf("decode stored response: %w", err)
				}
				found[k] = stored{hash: hash, result: res}
				return nil
			})
	}
	return found
}

// deferRemember holds back the storing of answers under their keys.
func (s *Service) deferRemember(tx *eventstore.Tx, answers []remembered) error {
	for _, a := range answers {
		body, err := json.Marshal(a.result)
		if err != nil {
			return fmt.Errorf("encode response: %w", err)
		}
		// The key's lock is held: nothing else can have stored it.
		tx.Defer(`INSERT INTO idempotency_keys (user_id, key, request_hash, response, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, a.key.user, a.key.key, a.hash, body, s.now())
	}
	return nil
}
