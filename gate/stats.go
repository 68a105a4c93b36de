package gate

import (
	"context"
	"fmt"
)

// BusyScopes returns the number of scopes held by an active (queued or
// running) run, by the provider of the run's connection ("" for runs
// without one). Each active run holds its scope alone (runs'
// one-active-per-scope index), so it counts runs.
func (s *Service) BusyScopes(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT coalesce(provider, ''), count(*) FROM runs WHERE status IN (`+queuedSQL+`, `+runningSQL+`) GROUP BY 1`)
	if err != nil {
		return nil, fmt.Errorf("busy scopes: %w", err)
	}
	defer rows.Close()
	busy := map[string]int{}
	for rows.Next() {
		var provider string
		var n int
		if err := rows.Scan(&provider, &n); err != nil {
			return nil, fmt.Errorf("busy scopes: %w", err)
		}
		busy[provider] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("busy scopes: %w", err)
	}
	return busy, nil
}
