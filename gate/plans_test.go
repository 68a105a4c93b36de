package gate

import (
	"context"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/internal/pgtest"
)

// TestSweepsReadIndexes: the queries that find claimable runs, expired
// leases and runs past a deadline read the partial indexes of runs even
// as the cached generic plans a prepared statement ends up with, so that
// a claim or a reaper pass never scans the table.
func TestSweepsReadIndexes(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	for name, c := range map[string]struct {
		sql, types, args string
	}{
		"claimable":     {claimableSQL, "text[], text[], int", "'{simulated}', NULL, 3"},
		"expired lease": {expiredLeasesSQL, "int", "100"},
		"past deadline": {pastDeadlineSQL, "int", "100"},
	} {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plan := func() string {
			defer conn.Release()
			if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `PREPARE q(`+c.types+`) AS `+c.sql); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			defer conn.Exec(ctx, `DEALLOCATE q; RESET plan_cache_mode`)
			rows, err := conn.Query(ctx, `EXPLAIN EXECUTE q(`+c.args+`)`)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			defer rows.Close()
			var lines []string
			for rows.Next() {
				var l string
				if err := rows.Scan(&l); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, l)
			}
			return strings.Join(lines, "\n")
		}()
		if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index Scan") {
			t.Errorf("%s scans runs instead of reading its index:\n%s", name, plan)
		}
	}
}
