package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuTimes returns the CPU time (user and system) used so far by the
// processes of this machine, by command name (postgres, opsgate, ...).
// Processes that ended are missing, so compare snapshots of one phase.
func cpuTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15)
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		comm, fields := s[open+1:end], strings.Fields(s[end+1:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		out[comm] += time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	return out
}

// cpuShare describes the CPU used between two snapshots, by process name,
// as a share of the machine's capacity over wall.
func cpuShare(before, after map[string]time.Duration, wall time.Duration, cores int) string {
	type use struct {
		name string
		d    time.Duration
	}
	var uses []use
	var total time.Duration
	for name, d := range after {
		if strings.HasPrefix(name, "kworker") {
			continue // kernel threads' times are not this phase's alone
		}
		if delta := d - before[name]; delta > 0 {
			uses = append(uses, use{name, delta})
			total += delta
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].d > uses[j].d })
	capacity := wall * time.Duration(cores)
	var parts []string
	for _, u := range uses {
		if u.d*100 < capacity { // under 1%
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", u.name, 100*u.d.Seconds()/capacity.Seconds()))
	}
	return fmt.Sprintf("%s (busy %.0f%%)", strings.Join(parts, ", "), 100*total.Seconds()/capacity.Seconds())
}

// cpuPer describes the CPU used between two snapshots by PostgreSQL,
// opsgate and the bench's own process (the load generator and the webhook
// receiver), per unit of n (a phase's starts): what each start cost.
func cpuPer(before, after map[string]time.Duration, n int) string {
	if n == 0 {
		return ""
	}
	var parts []string
	for _, name := range []string{"postgres", "opsgate", "opsgate-bench"} {
		if d := after[name] - before[name]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %d µs", name, (d/time.Duration(n)).Microseconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// statementsReset clears pg_stat_statements, if the server has it, so that
// statementsTop reports one phase.
func statementsReset(ctx context.Context, pool *pgxpool.Pool) bool {
	_, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	if err == nil {
		_, err = pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	}
	if err != nil {
		progress("statements: %v (needs shared_preload_libraries = 'pg_stat_statements')", err)
	}
	return err == nil
}

// statementsTop prints the statements of this database that took the most
// time since statementsReset, with their calls and rows.
func statementsTop(ctx context.Context, pool *pgxpool.Pool, n int) {
	rows, err := pool.Query(ctx, `SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		progress("statements: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var calls, nrows int64
		var ms float64
		var q string
		if rows.Scan(&calls, &ms, &nrows, &q) == nil {
			fmt.Fprintf(os.Stderr, "  %7d calls %8.0f ms %8d rows  %s\n", calls, ms, nrows, q)
		}
	}
}
