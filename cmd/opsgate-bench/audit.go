package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// chainLag returns how long after their recording the events recorded
// since `since` were linked into the audit chain, once it caught up.
func chainLag(ctx context.Context, pool *pgxpool.Pool, since time.Time) (stats, error) {
	var st stats
	err := pool.QueryRow(ctx, `SELECT count(*),
			coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0),
			coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), 0),
			coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0)
		FROM (SELECT extract(epoch FROM c.chained_at - e.recorded_at) * 1000 AS lag
			FROM events e JOIN audit_chain c ON c.position = e.position WHERE e.recorded_at >= $1) l`, since).
		Scan(&st.Count, &st.P50ms, &st.P95ms, &st.P99ms)
	return st, err
}

// auditFigures exports the seeded tenant's chain over HTTP (timing it and
// sampling the server's resident memory meanwhile), then verifies the
// export offline and the chain against the database, and measures its
// tree (treeFigures), into rep.Audit.
func auditFigures(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, bin, dbURL string, serverPID int, rep *report) error {
	file, err := os.CreateTemp("", "opsgate-bench-export-*.ndjson")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	defer file.Close()
	progress("audit: exporting the tenant's chain")
	rss0 := residentKB(serverPID)
	var peak int64
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			peak = max(peak, residentKB(serverPID))
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	began := time.Now()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/api/v1/audit/export?tenant_id="+fx.tenant, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+fx.token)
	resp, err := (&http.Client{}).Do(req) // no client timeout: the export lasts as long as the history
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	lines := &lineCounter{}
	n, err := io.Copy(io.MultiWriter(file, lines), resp.Body)
	resp.Body.Close()
	elapsed := time.Since(began)
	close(stopSampling)
	wg.Wait()
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("export: status %d after %d bytes: %v", resp.StatusCode, n, err)
	}
	rep.Audit["export_events"] = float64(lines.n)
	rep.Audit["export_events_per_second"] = float64(lines.n) / elapsed.Seconds()
	rep.Audit["export_mb_per_second"] = float64(n) / 1e6 / elapsed.Seconds()
	rep.Audit["export_server_rss_growth_mb"] = float64(peak-rss0) / 1024
	progress("audit: exported %d events (%.0f MB) in %s", lines.n, float64(n)/1e6, elapsed.Round(time.Millisecond))

	for _, v := range []struct{ key, flag, arg string }{{"verify_file", "--file", file.Name()}, {"verify_database", "--tenant", fx.tenant}} {
		progress("audit: opsgate audit verify %s", v.flag)
		began := time.Now()
		cmd := exec.Command(bin, "audit", "verify", v.flag, v.arg)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("audit verify %s: %v: %s", v.flag, err, out)
		}
		events := verifiedLine.FindSubmatch(out)
		if events == nil {
			return fmt.Errorf("audit verify %s printed %q", v.flag, out)
		}
		count, _ := strconv.ParseFloat(string(events[1]), 64)
		rep.Audit[v.key+"_events_per_second"] = count / time.Since(began).Seconds()
	}
	return treeFigures(ctx, c, pool, fx, file.Name(), rep)
}

var verifiedLine = regexp.MustCompile(`: (\d+) event\(s\)`)

// lineCounter counts the lines written to it.
type lineCounter struct{ n int }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.n += bytes.Count(p, []byte("\n"))
	return len(p), nil
}

// residentKB is the resident set of process pid in kB (0 if unknown).
func residentKB(pid int) int64 {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}
