package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/app"
)

type client struct {
	base string
	http *http.Client
}

func newClient(base string) *client {
	// Idle connections are kept for every request that may be in flight
	// (the overload scenario's 1024), so that no phase measures new TCP
	// connections instead of the server.
	tr := &http.Transport{MaxIdleConns: 2048, MaxIdleConnsPerHost: 2048, IdleConnTimeout: time.Minute}
	return &client{base: base, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *client) do(ctx context.Context, method, path, token string, body any, out any) (int, error) {
	return c.send(ctx, method, path, token, "", body, out)
}

// send is do on behalf of user onBehalfOf ("": none), for an
// integration's token.
func (c *client) send(ctx context.Context, method, path, token, onBehalfOf string, body any, out any) (int, error) {
	status, b, _, err := c.exchange(ctx, method, path, token, onBehalfOf, body)
	if err != nil {
		return status, err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return status, fmt.Errorf("%s %s: %d %s", method, path, status, b)
		}
	}
	if status >= 500 {
		return status, fmt.Errorf("%s %s: %d %s", method, path, status, b)
	}
	return status, nil
}

// exchange sends a request and reads its whole answer: the status, the
// body, and when the body had been read (before anything decodes it).
func (c *client) exchange(ctx context.Context, method, path, token, onBehalfOf string, body any) (int, []byte, time.Time, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if onBehalfOf != "" {
		req.Header.Set("Opsgate-On-Behalf-Of", onBehalfOf)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, time.Now(), err
}

type fixture struct {
	workspace, tenant, user, token string
	// onBehalfOf is the user an integration's token acts for ("": token
	// is the user's own).
	onBehalfOf string
	conns      []string
	hot        string
	// hooks is the webhook endpoint of the workspace and its receiver
	// (nil: none).
	hooks *hooks
}

func setup(ctx context.Context, c *client, n int) (*fixture, error) {
	var ws, tenant, user struct{ ID, Token string }
	if _, err := c.do(ctx, "POST", "/api/v1/admin/workspaces", adminToken, map[string]string{"name": "bench"}, &ws); err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, "POST", "/api/v1/admin/tenants", adminToken, map[string]string{"workspace_id": ws.ID, "name": "bench"}, &tenant); err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, "POST", "/api/v1/admin/users", adminToken, map[string]string{"email": "bench@example.com", "name": "Bench"}, &user); err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, "POST", "/api/v1/admin/memberships", adminToken, map[string]string{"user_id": user.ID, "tenant_id": tenant.ID, "role": "owner"}, nil); err != nil {
		return nil, err
	}
	fx := &fixture{workspace: ws.ID, tenant: tenant.ID, user: user.ID, token: user.Token}
	conns, err := createConnections(ctx, c, fx, "simulated", n+1)
	if err != nil {
		return nil, err
	}
	fx.hot, fx.conns = conns[0], conns[1:]
	return fx, nil
}

// vacuumAnalyze vacuums and analyzes the bench's database, as autovacuum has
// long since in a server that has run a while. A fresh database's tables
// grow from empty faster than autovacuum (a pass a minute) looks at them:
// a plan made without statistics, which a connection then keeps, scans a
// table for what an index finds (the claims' read of their runs' scopes
// took 12.8 ms a call instead of 0.3 ms in the lifecycle's second half),
// and the dead entries a phase leaves in the indexes (every run passes
// through the queued ones) are walked by the next phase. Each phase calls
// it once its fixtures exist.
func vacuumAnalyze(ctx context.Context, pool *pgxpool.Pool) {
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		progress("vacuum analyze: %v", err)
	}
}

// createConnections creates n ready connections of provider in fx's
// tenant; the first of a tenant becomes its default.
func createConnections(ctx context.Context, c *client, fx *fixture, provider string, n int) ([]string, error) {
	ids := make([]string, n)
	var mu sync.Mutex
	var firstErr error
	st := load(ctx, 8, 0, n, func(ctx context.Context, _, i int) error {
		body := map[string]any{"provider": provider, "display_name": fmt.Sprintf("bench %s %d", provider, i),
			"is_default": i == 0 && provider == "simulated", "consent": "granted", "credentials": "valid", "enabled": true}
		if provider == "simulated" {
			body["simulation"] = map[string]any{"latency_ms": 0, "fail_with": nil}
		}
		var conn struct{ ID string }
		_, err := c.do(ctx, "POST", "/api/v1/tenants/"+fx.tenant+"/provider-connections", fx.token, body, &conn)
		mu.Lock()
		defer mu.Unlock()
		if err == nil && conn.ID == "" {
			err = fmt.Errorf("connection %d of %s not created", i, provider)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		ids[i] = conn.ID
		return err
	})
	if st.Errors > 0 {
		return nil, fmt.Errorf("create %s connections: %w", provider, firstErr)
	}
	return ids, nil
}

var operations = []string{"inventory-sync", "compliance-snapshot", "check"}

// startLoad posts starts spread over conns; each client walks its own
// stride of the connections.
func startLoad(ctx context.Context, c *client, fx *fixture, conns []string, concurrency int, d time.Duration, n int) stats {
	return load(ctx, concurrency, d, n, func(ctx context.Context, _, i int) error {
		return startOne(ctx, c, fx, conns, i)
	})
}

// startOne makes the i-th start of a rotation over conns and operations.
func startOne(ctx context.Context, c *client, fx *fixture, conns []string, i int) error {
	conn := conns[i%len(conns)]
	var res struct{ Outcome string }
	status, err := c.send(ctx, "POST", "/api/v1/provider-connections/"+conn+"/"+operations[(i/len(conns))%len(operations)], fx.token, fx.onBehalfOf, nil, &res)
	if err != nil {
		return err
	}
	if res.Outcome == "" || status >= 500 {
		return fmt.Errorf("start answered %d", status)
	}
	return nil
}

// startsOn returns an operation for interleave: the i-th start over conns.
func startsOn(c *client, fx *fixture, conns []string) func(context.Context, int) error {
	return func(ctx context.Context, i int) error { return startOne(ctx, c, fx, conns, i) }
}

// halfLoadWarm is how long a half-load phase runs at its rate before it
// is measured. Right after River's peer (the phase before each), a
// durable commit took up to 60 ms for about 100 ms, and the starts due
// then waited up to 150 ms behind it: a tail that was the peer's, not
// the half load's (docs/BENCHMARKS.md, issue 30).
const halfLoadWarm = time.Second

// pacedLoad issues starts at a fixed rate from concurrency clients for
// d, after warm at the same rate unmeasured (pacedLoadFn).
func pacedLoad(ctx context.Context, c *client, fx *fixture, concurrency int, rate float64, warm, d time.Duration) stats {
	if rate <= 0 {
		rate = 1
	}
	interval := time.Duration(float64(time.Second) * float64(concurrency) / rate)
	return pacedLoadFn(ctx, concurrency, d, 0, interval, warm, func(ctx context.Context, w, i int) error {
		conn := fx.conns[i%len(fx.conns)]
		_, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", fx.token, nil, nil)
		return err
	})
}

// drain waits until every projector has applied the last event, and
// until the worker has no queued or running run left, and returns how
// long each took.
func drain(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) (projectors, worker time.Duration) {
	start := time.Now()
	projectorsDone, workerDone := false, false
	for time.Since(start) < limit && !(projectorsDone && workerDone) {
		if !projectorsDone {
			var behind bool
			err := pool.QueryRow(ctx, `SELECT count(*) < 4 OR bool_or((c.tx_id, c.position) < (h.tx_id, h.position))
				FROM feed_checkpoints c,
				     (SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) h
				WHERE c.consumer IN ('operations', 'queue', 'notifications', 'audit.chain')`).Scan(&behind)
			if err == nil && !behind {
				projectorsDone, projectors = true, time.Since(start)
			}
		}
		if !workerDone {
			var active int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`).Scan(&active)
			if err == nil && active == 0 {
				workerDone, worker = true, time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !projectorsDone {
		projectors = time.Since(start)
	}
	if !workerDone {
		worker = time.Since(start)
	}
	return projectors, worker
}

func insertBaseline(ctx context.Context, dbURL string, concurrency int, d time.Duration) stats {
	cfg, _ := pgxpool.ParseConfig(dbURL)
	cfg.MaxConns = int32(concurrency + 1)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return stats{Errors: 1}
	}
	defer pool.Close()
	_, _ = pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_baseline (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)`)
	return load(ctx, concurrency, d, 0, func(ctx context.Context, w, i int) error {
		_, err := pool.Exec(ctx, `INSERT INTO bench_baseline (payload) VALUES ($1)`, []byte(`{"operation":"inventory.sync"}`))
		return err
	})
}

func riverPeer(bin, dbURL string, concurrency int, d time.Duration) (stats, error) {
	if out, err := exec.Command(bin, "-db", dbURL, "-migrate").CombinedOutput(); err != nil {
		return stats{}, fmt.Errorf("river migrate: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-db", dbURL, "-c", strconv.Itoa(concurrency), "-d", d.String()).Output()
	if err != nil {
		return stats{}, fmt.Errorf("river peer: %w", err)
	}
	var r struct {
		Count      int     `json:"count"`
		Errors     int     `json:"errors"`
		Seconds    float64 `json:"seconds"`
		Throughput float64 `json:"throughput"`
		P50ms      float64 `json:"p50_ms"`
		P95ms      float64 `json:"p95_ms"`
		P99ms      float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return stats{}, fmt.Errorf("river peer output %q: %w", out, err)
	}
	return stats{Count: r.Count, Errors: r.Errors, Seconds: r.Seconds, Throughput: r.Throughput,
		P50ms: r.P50ms, P95ms: r.P95ms, P99ms: r.P99ms}, nil
}

func captureProfile(pprofAddr string, d time.Duration, path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(d.Seconds())))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		f.Close()
		done <- err
	}()
	return done
}

// hotScope runs 64 clients against one connection and samples the number
// of active runs on it all along.
func hotScope(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, d time.Duration) (stats, int) {
	var maxActive atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int64
			if pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE scope_id = $1 AND status IN ('queued','running')`,
				string(domain.ConnectionScope(fx.hot))).Scan(&n) == nil && n > maxActive.Load() {
				maxActive.Store(n)
			}
		}
	}()
	st := load(ctx, 64, d, 0, func(ctx context.Context, w, i int) error {
		var res struct{ Outcome string }
		status, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+fx.hot+"/"+operations[w%2], fx.token, nil, &res)
		if err != nil {
			return err
		}
		if res.Outcome == "" {
			return fmt.Errorf("start answered %d", status)
		}
		return nil
	})
	close(stop)
	<-sampled
	return st, int(maxActive.Load())
}

// checkNeverTwoActive folds the hot scope's stream and fails if a start
// was accepted while another run held the scope.
func checkNeverTwoActive(ctx context.Context, pool *pgxpool.Pool, conn string) error {
	store := app.NewStore(pool)
	events, err := store.ReadStream(ctx, string(domain.ConnectionScope(conn)), 1)
	if err != nil {
		return err
	}
	var state domain.ScopeState
	for _, e := range events {
		p, err := store.Registry().Decode(e)
		if err != nil {
			return err
		}
		if _, ok := p.(domain.StartAccepted); ok && state.Active != nil {
			return fmt.Errorf("run accepted at version %d while %s was active", e.StreamVersion, state.Active.RunID)
		}
		state = domain.Evolve(state, p.(domain.Event))
	}
	return nil
}

// freshness measures, for n accepted starts, the time from the HTTP answer
// until the run is in the Operations view, and the worker's pickup time.
func freshness(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, n int) (stats, stats) {
	var ids []string
	var lags []time.Duration
	var mu sync.Mutex
	w := newRowWatcher(pool)
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go w.run(watchCtx)
	run := load(ctx, 4, 0, n, func(ctx context.Context, _, i int) error {
		conn := fx.conns[i%len(fx.conns)]
		var res struct {
			Outcome string
			Run     struct{ ID string }
		}
		if _, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conn+"/compliance-snapshot", fx.token, nil, &res); err != nil {
			return err
		}
		if res.Outcome != "accepted" {
			return fmt.Errorf("start on %s answered %s, not accepted", conn, res.Outcome)
		}
		lag, ok := w.wait(res.Run.ID, 5*time.Second)
		if !ok {
			return errors.New("never projected")
		}
		mu.Lock()
		ids = append(ids, res.Run.ID)
		lags = append(lags, lag)
		mu.Unlock()
		return nil
	})
	elapsed := time.Duration(run.Seconds * float64(time.Second))
	lag := summarise(lags, run.Errors, elapsed)
	lag.FirstError = run.FirstError
	var pickups []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var pending int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM projections.ops_runs WHERE id = ANY($1) AND started_at IS NULL`, ids).Scan(&pending)
		if pending == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := pool.Query(ctx, `SELECT extract(epoch FROM o.started_at - o.created_at)::float8 FROM projections.ops_runs o WHERE o.id = ANY($1) AND o.started_at IS NOT NULL`, ids)
	if err == nil {
		for rows.Next() {
			var s float64
			if rows.Scan(&s) == nil {
				pickups = append(pickups, time.Duration(s*float64(time.Second)))
			}
		}
		rows.Close()
	}
	return lag, summarise(pickups, len(ids)-len(pickups), elapsed)
}

// rowWatcher measures when runs appear in the Operations view: one
// goroutine looks for every awaited run at once, every millisecond, so
// that the measurement adds one small query per millisecond to the load
// rather than one per waiting client.
type rowWatcher struct {
	pool    *pgxpool.Pool
	mu      sync.Mutex
	pending map[string]*awaited
}

type awaited struct {
	since time.Time
	seen  chan time.Duration
}

func newRowWatcher(pool *pgxpool.Pool) *rowWatcher {
	return &rowWatcher{pool: pool, pending: map[string]*awaited{}}
}

// wait returns how long after the call the run's row became visible.
func (w *rowWatcher) wait(id string, limit time.Duration) (time.Duration, bool) {
	a := &awaited{since: time.Now(), seen: make(chan time.Duration, 1)}
	w.mu.Lock()
	w.pending[id] = a
	w.mu.Unlock()
	select {
	case lag := <-a.seen:
		return lag, true
	case <-time.After(limit):
		w.mu.Lock()
		delete(w.pending, id)
		w.mu.Unlock()
		return 0, false
	}
}

func (w *rowWatcher) run(ctx context.Context) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.pending))
		for id := range w.pending {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		rows, err := w.pool.Query(ctx, `SELECT id FROM projections.ops_runs WHERE id = ANY($1)`, ids)
		if err != nil {
			continue
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			continue
		}
		now := time.Now()
		w.mu.Lock()
		for _, id := range found {
			if a, ok := w.pending[id]; ok {
				a.seen <- now.Sub(a.since)
				delete(w.pending, id)
			}
		}
		w.mu.Unlock()
	}
}

// seedScope appends n StartDeduped events to conn's scope as history and
// moves its snapshot along, as n earlier starts would have.
func seedScope(ctx context.Context, pool *pgxpool.Pool, fx *fixture, conn string, n int) error {
	scope := string(domain.ConnectionScope(conn))
	var version int64
	_ = pool.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, scope).Scan(&version)
	_, err := pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
		SELECT $1::text, $2::bigint + g, 'D' || lpad(g::text, 25, '0'), 'StartDeduped', 1, $3,
			json_build_object('run_id', 'SEEDRUN', 'tenant_id', $3::text, 'scope_id', $1::text, 'type', 'inventory.sync',
				'canonical_type', 'inventory.sync', 'label', 'Inventory sync', 'surface', 'inventory_sync',
				'initiator_id', $4::text, 'at', now()),
			json_build_object('actor', $4::text, 'tenant_id', $3::text, 'correlation_id', 'SEEDRUN')
		FROM generate_series(1, $5::int) g`, scope, version, fx.tenant, fx.user, n)
	if err != nil {
		return fmt.Errorf("seed scope: %w", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE scopes SET version = $2 WHERE scope_id = $1`, scope, version+int64(n)); err != nil {
		return err
	}
	settle(ctx, pool)
	return nil
}

// seedHistory grows the store to total events with complete synthetic run
// histories (accepted, started, succeeded) on scopes of their own.
func seedHistory(ctx context.Context, pool *pgxpool.Pool, fx *fixture, total int) error {
	var have int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&have); err != nil {
		return err
	}
	runs := (total - have) / 3
	const batch = 50_000
	for from := 0; from < runs; from += batch {
		to := min(from+batch, runs)
		_, err := pool.Exec(ctx, `WITH r AS (
				SELECT g, 'R' || lpad(g::text, 25, '0') AS run, 'scope-connection-SYN' || g AS scope FROM generate_series($1::int, $2::int - 1) g)
			INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
			SELECT r.scope, k, chr(64 + k) || lpad(r.g::text, 25, '0'),
				(ARRAY['StartAccepted','RunStarted','RunSucceeded'])[k], 1, $3,
				CASE k WHEN 1 THEN json_build_object('run_id', r.run, 'tenant_id', $3::text, 'scope_id', r.scope,
						'type', 'inventory.sync', 'canonical_type', 'inventory.sync', 'label', 'Inventory sync',
						'surface', 'inventory_sync', 'initiator_id', $4::text, 'at', now(),
						'provider_connection', json_build_object('id', 'SYN' || r.g, 'display_name', 'synthetic', 'provider', 'simulated'))
					WHEN 2 THEN json_build_object('run_id', r.run, 'tenant_id', $3::text, 'scope_id', r.scope, 'epoch', 1, 'worker_id', 'seed', 'at', now())
					ELSE json_build_object('run_id', r.run, 'tenant_id', $3::text, 'scope_id', r.scope, 'epoch', 1, 'at', now()) END,
				json_build_object('actor', $4::text, 'tenant_id', $3::text, 'correlation_id', r.run)
			FROM r CROSS JOIN generate_series(1, 3) k ORDER BY r.g, k`, from, to, fx.tenant, fx.user)
		if err != nil {
			return fmt.Errorf("seed history: %w", err)
		}
		progress("replay: seeded %d of %d synthetic runs", to, runs)
	}
	// A long-lived store has been vacuumed (hint bits set, visibility map
	// current); a freshly seeded one would make the first reader pay for that.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		return err
	}
	settle(ctx, pool)
	return nil
}

// settle waits until the running server's projectors have applied what
// seeding wrote (they read the event log itself), then flushes it, so that
// the figures that follow compare store sizes rather than a catch-up or a
// checkpoint running meanwhile. It needs the right to CHECKPOINT; without
// it the figures carry that noise.
func settle(ctx context.Context, pool *pgxpool.Pool) {
	began := time.Now()
	if projectors, _ := drain(ctx, pool, 5*time.Minute); projectors >= 5*time.Minute {
		progress("the projectors did not catch up with the seeded history within 5 minutes")
	} else {
		progress("the projectors applied the seeded history in %s", time.Since(began).Round(time.Millisecond))
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		progress("no CHECKPOINT after seeding (%v); the next figures include background flushing", err)
	}
}

var rebuildLine = regexp.MustCompile(`from (\d+) events in .* \((\d+) events/s\)`)

func rebuild(bin, dbURL string) (float64, float64, error) {
	cmd := exec.Command(bin, "projections", "rebuild", "--cpuprofile", filepath.Join("bench", "results", "replay-cpu.pprof"))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "OPSGATE_LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild: %w", err)
	}
	m := rebuildLine.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("rebuild printed %q", out)
	}
	events, _ := strconv.ParseFloat(string(m[1]), 64)
	perSec, _ := strconv.ParseFloat(string(m[2]), 64)
	return events, perSec, nil
}

func printTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\nopsgate benchmark, %s, %s%s\n\n", rep.Started.Format(time.RFC3339), rep.Machine, map[bool]string{true: " (quick)", false: ""}[rep.Quick])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tcount\terrors\tper second\tp50 ms\tp95 ms\tp99 ms\t")
	order := []string{"spread_c1", "baseline_insert_c1", "river_unique_c1", "spread_c8", "baseline_insert_c8", "river_unique_c8",
		"spread_c32", "baseline_insert_c32", "river_unique_c32", "spread_half_load",
		"decision_alone_c32", "river_unique_c32_beside", "decision_alone_half_load", "decision_c1_own_token", "decision_c1_integration", "hot_scope",
		"audit_chain_lag_hot_scope", "freshness_operations_view_lag", "freshness_worker_pickup",
		"availability_50_connections", "dry_run_c1", "start_after_dry_run_c1", "spread_c32_beside_batch", "batch_500_starts", "change_feed_delay_light", "change_feed_delay_light_from_commit", "wait_answer_after_end", "webhook_delivery_delay_light", "webhook_delivery_delay_light_from_commit",
		"lifecycle_no_webhook", "change_feed_delay_no_webhook", "change_feed_delay_from_commit_no_webhook", "lifecycle", "change_feed_delay", "change_feed_delay_from_commit",
		"webhook_delivery_delay", "webhook_delivery_delay_from_commit", "river_lifecycle", "overload_1x", "overload_4x", "overload_8x",
		"executor_backlog_builtin", "executor_backlog_http", "executor_pickup_builtin", "executor_pickup_http", "growth_empty_store", "growth_large_store",
		"growth_scope_10_events", "growth_scope_large", "audit_inclusion_proof"}
	for _, k := range order {
		s, ok := rep.Results[k]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t\n", k, s.Count, s.Errors, s.Throughput, s.P50ms, s.P95ms, s.P99ms)
	}
	tw.Flush()
	for _, k := range order {
		if s := rep.Results[k]; s.FirstError != "" {
			fmt.Fprintf(w, "%s: %d errors, the first: %s\n", k, s.Errors, s.FirstError)
		}
	}
	fmt.Fprintln(w)
	for _, k := range []string{"spread_vs_baseline_c1", "spread_vs_baseline_c8", "spread_vs_baseline_c32",
		"spread_vs_river_c1", "spread_vs_river_c8", "spread_vs_river_c32", "decision_alone_vs_river_c32",
		"decision_c1_p50_integration_vs_own_token", "dry_run_p50_vs_start", "batch_starts_per_s_vs_spread_c32", "growth_store_p50_large_vs_empty", "growth_scope_p50_large_vs_small", "lifecycle_vs_river", "lifecycle_webhook_vs_none", "overload_4x_runs_vs_1x", "overload_8x_runs_vs_1x", "executor_backlog_http_vs_builtin"} {
		if v, ok := rep.Ratios[k]; ok {
			fmt.Fprintf(w, "%-34s %.2fx\n", k, v)
		}
	}
	if len(rep.Replay) > 0 {
		fmt.Fprintf(w, "%-34s %.0f events, %.0f events/s\n", "replay (projections rebuild)", rep.Replay["events"], rep.Replay["events_per_second"])
	}
	if a := rep.Audit; len(a) > 0 {
		fmt.Fprintf(w, "%-34s %.0f events, %.0f events/s, %.1f MB/s, server RSS +%.0f MB\n", "audit export", a["export_events"],
			a["export_events_per_second"], a["export_mb_per_second"], a["export_server_rss_growth_mb"])
		fmt.Fprintf(w, "%-34s %.0f events/s offline, %.0f events/s against the database\n", "audit verify", a["verify_file_events_per_second"], a["verify_database_events_per_second"])
		fmt.Fprintf(w, "%-34s %.1f us/event chain alone, %.1f us/event chain + tree (%.2fx), %.0f bytes/event of tree\n", "audit tree",
			a["chain_us_per_event"], a["chain_tree_us_per_event"], ratio(a["chain_tree_us_per_event"], a["chain_us_per_event"]), a["tree_bytes_per_event"])
	}
	for k, v := range rep.Checks {
		fmt.Fprintf(w, "%-34s %s\n", k, v)
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets")
		for _, t := range targets {
			if v, ok := rep.Targets[t.result+"_p99"]; ok {
				fmt.Fprintf(w, "%-76s %s\n", t.what, v)
			}
		}
	}
}

// decisionAlone measures the spread at c=32, and the paced load at half its
// throughput, against a server of its own on a database of its own with the
// api role only: the decisions without the worker, the projectors and the
// audit chain that follow each accepted start, as River's unique insert is
// measured without River's workers. River's insert is measured again on
// the same database right after, so that the ratio compares neighbours.
func decisionAlone(ctx context.Context, cfg config, bin, base, riverBin string, rep *report) error {
	own, err := startAside(ctx, bin, base, "api")
	if err != nil {
		return err
	}
	defer own.close()
	c := own.client
	pool, err := pgxpool.New(ctx, own.dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	// The api role alone: a worker process elsewhere is live.
	stopLive, err := keepLive(ctx, pool, own.url)
	if err != nil {
		return err
	}
	defer stopLive()
	fx, err := setup(ctx, c, cfg.connections)
	if err != nil {
		return err
	}
	vacuumAnalyze(ctx, pool)
	progress("decision alone: spread at concurrency 32 against the api role, then River's unique insert")
	spread := startLoad(ctx, c, fx, fx.conns, 32, cfg.spreadTime, 0)
	peer, err := riverPeer(riverBin, own.dbURL, 32, cfg.spreadTime)
	if err != nil {
		return err
	}
	progress("decision alone: latency at half its throughput (%.0f starts/s)", spread.Throughput/2)
	rep.Results["decision_alone_c32"] = spread
	rep.Results["river_unique_c32_beside"] = peer
	rep.Results["decision_alone_half_load"] = pacedLoad(ctx, c, fx, 32, spread.Throughput/2, halfLoadWarm, cfg.spreadTime)
	rep.Ratios["decision_alone_vs_river_c32"] = ratio(spread.Throughput, peer.Throughput)

	// The same starts with the user's own token and through an
	// integration on the user's behalf, one at a time and alternating, on
	// fresh connections of their own: what acting on behalf costs.
	progress("decision alone: a user's own token and an integration's, alternating")
	var in struct {
		Token struct{ Token string }
	}
	if _, err := c.do(ctx, "POST", "/api/v1/admin/integrations", adminToken, map[string]string{"workspace_id": fx.workspace, "name": "bench platform"}, &in); err != nil {
		return err
	}
	via := *fx
	via.token, via.onBehalfOf = in.Token.Token, fx.user
	conns, err := createConnections(ctx, c, fx, "simulated", 200)
	if err != nil {
		return err
	}
	rep.Results["decision_c1_own_token"], rep.Results["decision_c1_integration"] =
		interleave(ctx, 10, 30, startsOn(c, fx, conns[:100]), startsOn(c, &via, conns[100:]))
	rep.Ratios["decision_c1_p50_integration_vs_own_token"] = ratio(rep.Results["decision_c1_integration"].P50ms, rep.Results["decision_c1_own_token"].P50ms)
	return nil
}
