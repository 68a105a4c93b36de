package eventstore

import (
	"context"
	"fmt"
	"time"
)

// ConsumerLags returns how far each of consumers trails the log: the age
// of the oldest event after its checkpoint, 0 when it has applied every
// event. A consumer without a checkpoint is left out.
func (s *Store) ConsumerLags(ctx context.Context, consumers []string) (map[string]time.Duration, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.consumer, coalesce(extract(epoch FROM clock_timestamp() - (
			SELECT e.recorded_at FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
			ORDER BY e.tx_id, e.position LIMIT 1)), 0)::float8
		FROM feed_checkpoints c WHERE c.consumer = ANY($1::text[])`, consumers)
	if err != nil {
		return nil, fmt.Errorf("read consumer lags: %w", err)
	}
	defer rows.Close()
	lags := make(map[string]time.Duration, len(consumers))
	for rows.Next() {
		var name string
		var seconds float64
		if err := rows.Scan(&name, &seconds); err != nil {
			return nil, fmt.Errorf("read consumer lags: %w", err)
		}
		lags[name] = time.Duration(seconds * float64(time.Second))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read consumer lags: %w", err)
	}
	return lags, nil
}
