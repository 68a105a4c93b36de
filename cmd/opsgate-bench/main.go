// Command opsgate-bench measures opsgate side by side with baselines in one
// run: it creates its own database on DATABASE_URL's server, starts the
// opsgate binary, drives it over HTTP on loopback and prints one table
// (also written as JSON under bench/results/).
//
//	go run ./cmd/opsgate-bench [-quick]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type config struct {
	quick       bool
	spreadTime  time.Duration
	hotTime     time.Duration
	replay      int
	scopeEvents int
	connections int
	only        string
	roles       string
	keep        bool   // keep the databases for inspection
	dashboard   string // where to draw the metrics of the run ("" for nowhere)
	backlog     int    // runs queued per side and round of the executor scenario
	rounds      int
	pickups     int
	runs        int           // runs of the lifecycle scenario
	overload    time.Duration // each offered rate of the overload scenario
	pprofAddr   string        // the server's pprof address
	// webhook says when a webhook endpoint of the main server's workspace,
	// on a receiver of the bench's own, is subscribed to every type of
	// change: lifecycle (during the lifecycle phase's second half only),
	// all (every phase of the main server) or none.
	webhook string
}

type report struct {
	Started  time.Time          `json:"started"`
	Machine  string             `json:"machine"`
	Quick    bool               `json:"quick"`
	Results  map[string]stats   `json:"results"`
	Ratios   map[string]float64 `json:"ratios"`
	Checks   map[string]string  `json:"checks"`
	Replay   map[string]float64 `json:"replay"`
	Audit    map[string]float64 `json:"audit"`
	Targets  map[string]string  `json:"targets"`
	Profiles []string           `json:"profiles"`
}

func main() {
	quick := flag.Bool("quick", false, "a short run (about two minutes)")
	only := flag.String("only", "", "run one phase alone, for iteration: spread, decision (the api role alone), hot, ask (availability, dry runs, batches), freshness, lifecycle, overload (after lifecycle), executors or replay")
	roles := flag.String("roles", "", "the server's --roles (default: every role)")
	keep := flag.Bool("keep", false, "keep the benchmark's databases for inspection (their names are printed)")
	dashboard := flag.String("dashboard", "", "scrape the server's /metrics every second and draw the dashboard's main panels into this PNG (needs Chromium)")
	webhook := flag.String("webhook", "lifecycle", "when a webhook endpoint on a local receiver is subscribed to every change of the main server's workspace: "+
		"lifecycle (the lifecycle is measured without it, then with it), all (every phase of the main server, the lifecycle's first half excepted) or none")
	tracing := flag.Bool("tracing", false, "export the servers' spans over OTLP to a sink in this process (the cost of tracing)")
	flag.Parse()
	if *webhook != "lifecycle" && *webhook != "all" && *webhook != "none" {
		fmt.Fprintln(os.Stderr, "opsgate-bench: -webhook must be lifecycle, all or none")
		os.Exit(2)
	}
	cfg := config{quick: *quick, spreadTime: 5 * time.Second, hotTime: 10 * time.Second,
		replay: 1_000_000, scopeEvents: 100_000, connections: 1500, only: *only, roles: *roles, keep: *keep, dashboard: *dashboard,
		backlog: 1000, rounds: 3, pickups: 500, runs: 20_000, overload: 10 * time.Second, webhook: *webhook}
	if cfg.quick {
		cfg.spreadTime, cfg.hotTime, cfg.replay, cfg.scopeEvents, cfg.connections = 2*time.Second, 3*time.Second, 100_000, 100_000, 600
		cfg.backlog, cfg.pickups, cfg.runs, cfg.overload = 300, 200, 5000, 3*time.Second
	}
	if *tracing {
		sink, err := startOTLPSink()
		if err != nil {
			fmt.Fprintln(os.Stderr, "opsgate-bench:", err)
			os.Exit(1)
		}
		defer func() { progress("%s", sink.summary()) }()
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "opsgate-bench:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(cfg config) error {
	ctx := context.Background()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		return fmt.Errorf("DATABASE_URL is not set (make bench sets it)")
	}
	rep := &report{Started: time.Now().UTC(), Machine: machine(), Quick: cfg.quick,
		Results: map[string]stats{}, Ratios: map[string]float64{}, Checks: map[string]string{}, Replay: map[string]float64{},
		Audit: map[string]float64{}, Targets: map[string]string{}}

	dbURL, drop, err := createDatabase(ctx, base)
	if err != nil {
		return err
	}
	if cfg.keep {
		progress("keeping %s", dbURL)
	} else {
		defer drop()
	}
	tmp, err := os.MkdirTemp("", "opsgate-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	progress("building opsgate and the River peer")
	bin := filepath.Join(tmp, "opsgate")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/opsgate").CombinedOutput(); err != nil {
		return fmt.Errorf("build opsgate: %v\n%s", err, out)
	}
	riverBin := filepath.Join(tmp, "riverbench")
	build := exec.Command("go", "build", "-o", riverBin, ".")
	build.Dir = "bench/river"
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the River peer: %v\n%s", err, out)
	}

	if cfg.only == "decision" {
		if err := decisionAlone(ctx, cfg, bin, base, riverBin, rep); err != nil {
			return err
		}
		printTable(os.Stdout, rep)
		return nil
	}
	if cfg.only == "executors" {
		if err := executorScenarios(ctx, cfg, bin, base, rep); err != nil {
			return err
		}
		printTable(os.Stdout, rep)
		return nil
	}

	addr, pprofAddr := freeAddr(), freeAddr()
	srv, err := startServer(ctx, bin, dbURL, addr, pprofAddr, cfg.roles)
	if err != nil {
		return err
	}
	defer srv.stop()
	cfg.pprofAddr = pprofAddr
	c := newClient("http://" + addr)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	if cfg.dashboard != "" {
		rec := &recorder{url: "http://" + addr + "/metrics"}
		recCtx, stopRec := context.WithCancel(ctx)
		go rec.run(recCtx)
		defer func() {
			stopRec()
			if err := renderDashboard(fmt.Sprintf("make bench%s, %s", map[bool]string{true: " QUICK=1"}[cfg.quick], rep.Started.Format("2006-01-02 15:04 UTC")),
				rec.panels(), cfg.dashboard); err != nil {
				progress("dashboard: %v", err)
			} else {
				progress("dashboard: drew %s", cfg.dashboard)
			}
		}()
	}
	progress("creating a tenant with %d connections", cfg.connections)
	fx, err := setup(ctx, c, cfg.connections)
	if err != nil {
		return err
	}
	// The webhook dispatcher runs with the worker role, the changes
	// consumer with the projector role.
	if cfg.webhook != "none" && (cfg.roles == "" || strings.Contains(cfg.roles, "worker") && strings.Contains(cfg.roles, "projector")) {
		if fx.hooks, err = newHooks(ctx, c, fx); err != nil {
			return err
		}
		defer fx.hooks.close()
		rep.Checks["webhook_endpoint"] = "subscribed to every change from the start, but for the lifecycle's first half (-webhook all)"
		if cfg.webhook == "lifecycle" {
			if err := fx.hooks.enable(ctx, c, false); err != nil {
				return err
			}
			rep.Checks["webhook_endpoint"] = "subscribed during the lifecycle's second half only (-webhook lifecycle)"
		}
	} else {
		rep.Checks["webhook_endpoint"] = "none"
	}

	switch cfg.only {
	case "lifecycle", "overload":
		if err := lifecyclePhases(ctx, cfg, c, pool, fx, riverBin, dbURL, rep); err != nil {
			return err
		}
		printTable(os.Stdout, rep)
		return nil
	case "ask":
		if err := askPhases(ctx, c, pool, fx, rep); err != nil {
			return err
		}
		checkTargets(rep)
		printTable(os.Stdout, rep)
		return nil
	case "replay":
		return replayOnly(ctx, cfg, bin, dbURL, srv, c, pool, fx, rep)
	case "hot":
		hotPhase(ctx, cfg, c, pool, fx, rep)
		printTable(os.Stdout, rep)
		return nil
	case "freshness":
		progress("freshness: commit-to-read-model lag and worker pickup")
		rep.Results["freshness_operations_view_lag"], rep.Results["freshness_worker_pickup"] = freshness(ctx, c, pool, fx, 400)
		printTable(os.Stdout, rep)
		return nil
	}

	for _, conc := range []int{1, 8, 32} {
		progress("spread at concurrency %d: opsgate, single-INSERT baseline, River", conc)
		vacuumAnalyze(ctx, pool)
		var profDone <-chan error
		profile := filepath.Join("bench", "results", "spread-c32-cpu.pprof")
		if conc == 32 {
			profDone = captureProfile(pprofAddr, cfg.spreadTime-time.Second, profile)
		}
		spread := startLoad(ctx, c, fx, fx.conns, conc, cfg.spreadTime, 0)
		if profDone != nil {
			if err := <-profDone; err == nil {
				rep.Profiles = append(rep.Profiles, profile)
			}
		}
		baseline := insertBaseline(ctx, dbURL, conc, cfg.spreadTime)
		peer, err := riverPeer(riverBin, dbURL, conc, cfg.spreadTime)
		if err != nil {
			return err
		}
		rep.Results[fmt.Sprintf("spread_c%d", conc)] = spread
		rep.Results[fmt.Sprintf("baseline_insert_c%d", conc)] = baseline
		rep.Results[fmt.Sprintf("river_unique_c%d", conc)] = peer
		rep.Ratios[fmt.Sprintf("spread_vs_baseline_c%d", conc)] = ratio(spread.Throughput, baseline.Throughput)
		rep.Ratios[fmt.Sprintf("spread_vs_river_c%d", conc)] = ratio(spread.Throughput, peer.Throughput)
	}

	// Latency at half the maximum throughput: pace 32 clients at half of
	// the best spread throughput, after a warm-up at that rate (River's
	// peer, just before, leaves the database busy for a moment).
	best := max(rep.Results["spread_c1"].Throughput, rep.Results["spread_c8"].Throughput, rep.Results["spread_c32"].Throughput)
	progress("latency at half the maximum throughput (%.0f starts/s)", best/2)
	rep.Results["spread_half_load"] = pacedLoad(ctx, c, fx, 32, best/2, halfLoadWarm, cfg.spreadTime)
	if cfg.only == "spread" {
		printTable(os.Stdout, rep)
		return nil
	}
	// The decisions alone, once this server's worker and projectors have
	// caught up with the runs above, so that they do not share the cores.
	drain(ctx, pool, time.Minute)
	if err := decisionAlone(ctx, cfg, bin, base, riverBin, rep); err != nil {
		return err
	}

	hotPhase(ctx, cfg, c, pool, fx, rep)
	if err := askPhases(ctx, c, pool, fx, rep); err != nil {
		return err
	}
	progress("freshness: commit-to-read-model lag and worker pickup")
	lag, pickup := freshness(ctx, c, pool, fx, 400)
	rep.Results["freshness_operations_view_lag"] = lag
	rep.Results["freshness_worker_pickup"] = pickup
	if err := lifecyclePhases(ctx, cfg, c, pool, fx, riverBin, dbURL, rep); err != nil {
		return err
	}
	if err := executorScenarios(ctx, cfg, bin, base, rep); err != nil {
		return err
	}

	progress("growth: %d earlier events on one scope", cfg.scopeEvents)
	small, large := fx.conns[len(fx.conns)-1], fx.conns[len(fx.conns)-2]
	if err := seedScope(ctx, pool, fx, large, cfg.scopeEvents); err != nil {
		return err
	}
	rep.Results["growth_scope_10_events"], rep.Results["growth_scope_large"] =
		interleave(ctx, 10, 30, startsOn(c, fx, []string{small}), startsOn(c, fx, []string{large}))
	rep.Ratios["growth_scope_p50_large_vs_small"] = ratio(rep.Results["growth_scope_large"].P50ms, rep.Results["growth_scope_10_events"].P50ms)

	progress("replay: seeding the store to %d events", cfg.replay)
	if err := seedHistory(ctx, pool, fx, cfg.replay); err != nil {
		return err
	}
	// The empty store is a second database with a server of its own, so
	// that the two stores are measured side by side.
	progress("growth: an empty store beside the large one")
	empty, err := startAside(ctx, bin, base, cfg.roles)
	if err != nil {
		return err
	}
	defer empty.close()
	emptyFx, err := setup(ctx, empty.client, 200)
	if err != nil {
		return err
	}
	rep.Results["growth_large_store"], rep.Results["growth_empty_store"] =
		interleave(ctx, 10, 30, startsOn(c, fx, fx.conns[:200]), startsOn(empty.client, emptyFx, emptyFx.conns))
	empty.close()
	rep.Ratios["growth_store_p50_large_vs_empty"] = ratio(rep.Results["growth_large_store"].P50ms, rep.Results["growth_empty_store"].P50ms)
	if err := auditFigures(ctx, c, pool, fx, bin, dbURL, srv.cmd.Process.Pid, rep); err != nil {
		return err
	}
	checkTargets(rep)
	if err := replay(bin, dbURL, rep); err != nil {
		return err
	}

	printTable(os.Stdout, rep)
	return writeJSON(rep)
}

// lifecyclePhases runs the lifecycle scenario against River's, then the
// overload scenario at 1, 4 and 8 times the lifecycle's throughput.
// hotPhase runs the hot scope (64 clients on one connection) with a CPU
// profile of the server, then waits for the backlogs it leaves to drain.
func hotPhase(ctx context.Context, cfg config, c *client, pool *pgxpool.Pool, fx *fixture, rep *report) {
	progress("hot scope: 64 clients on one connection for %s (profiling the server)", cfg.hotTime)
	vacuumAnalyze(ctx, pool)
	hotBegan := time.Now()
	profile := filepath.Join("bench", "results", "hot-scope-cpu.pprof")
	profDone := captureProfile(cfg.pprofAddr, cfg.hotTime-time.Second, profile)
	cpu0, requests0 := cpuTimes(), fx.hooks.received()
	hot, maxActive := hotScope(ctx, c, pool, fx, cfg.hotTime)
	cpu1 := cpuTimes()
	progress("hot scope: cpu %s", cpuShare(cpu0, cpu1, time.Since(hotBegan), runtime.NumCPU()))
	rep.Checks["hot_scope_cpu_per_start"] = cpuPer(cpu0, cpu1, hot.Count)
	if fx.hooks != nil {
		rep.Checks["hot_scope_webhook_requests_per_start"] = fmt.Sprintf("%.2f", float64(fx.hooks.received()-requests0)/float64(max(hot.Count, 1)))
	}
	if err := <-profDone; err == nil {
		rep.Profiles = append(rep.Profiles, profile)
	} else {
		progress("profile: %v", err)
	}
	rep.Results["hot_scope"] = hot
	rep.Checks["hot_scope_max_active_runs"] = fmt.Sprint(maxActive)
	if err := checkNeverTwoActive(ctx, pool, fx.hot); err != nil {
		rep.Checks["hot_scope_history"] = "VIOLATED: " + err.Error()
	} else {
		rep.Checks["hot_scope_history"] = "never two active runs"
	}

	progress("waiting for the projectors and the worker to drain their backlogs")
	projectorsDrained, workerDrained := drain(ctx, pool, 5*time.Minute)
	rep.Checks["projector_backlog_drain_after_hot_scope"] = projectorsDrained.Round(time.Millisecond).String()
	rep.Checks["worker_backlog_drain_after_hot_scope"] = workerDrained.Round(time.Millisecond).String()
	if fx.hooks != nil && cfg.webhook == "all" {
		took, why := drainWebhooksWhy(ctx, pool, 5*time.Minute)
		rep.Checks["webhook_backlog_drain_after_hot_scope"] = strings.TrimSuffix(took.Round(time.Millisecond).String()+" ("+why+")", " ()")
	}
	if lag, err := chainLag(ctx, pool, hotBegan); err == nil {
		rep.Results["audit_chain_lag_hot_scope"] = lag
	}
}

func lifecyclePhases(ctx context.Context, cfg config, c *client, pool *pgxpool.Pool, fx *fixture, riverBin, dbURL string, rep *report) error {
	if err := pushedAtLightLoad(ctx, cfg, c, pool, fx, rep); err != nil {
		return err
	}
	if fx.hooks != nil {
		// The same lifecycle with the endpoint disabled first, so that
		// with and without are a ratio of one run (in this order, the
		// second, with it, also has the larger store).
		if err := fx.hooks.enable(ctx, c, false); err != nil {
			return err
		}
		progress("lifecycle: %d runs with the webhook endpoint disabled (a client long-polls the change feed)", cfg.runs)
		st, feed, _, err := lifecycleWatched(ctx, c, pool, fx, cfg.runs, nil, rep, "_no_webhook")
		if err != nil {
			return err
		}
		rep.Results["lifecycle_no_webhook"], rep.Results["change_feed_delay_no_webhook"] = st, feed
		if err := fx.hooks.enable(ctx, c, true); err != nil {
			return err
		}
	}
	progress("lifecycle: %d runs from start to succeeded, opsgate then River", cfg.runs)
	st, feed, delivery, err := lifecycleWatched(ctx, c, pool, fx, cfg.runs, fx.hooks, rep, "")
	if err != nil {
		return err
	}
	rep.Results["change_feed_delay"] = feed
	if fx.hooks != nil {
		rep.Results["webhook_delivery_delay"] = delivery
		rep.Ratios["lifecycle_webhook_vs_none"] = ratio(st.Throughput, rep.Results["lifecycle_no_webhook"].Throughput)
		rep.Checks["webhook_receiver"] = fx.hooks.summary()
		if cfg.webhook == "lifecycle" {
			// What was not delivered by now stays pending, unsent, so that
			// it does not load the phases after this one.
			if err := fx.hooks.enable(ctx, c, false); err != nil {
				return err
			}
		}
	}
	checkTargets(rep)
	peer, err := riverLifecycle(riverBin, dbURL, cfg.runs, 32, 16)
	if err != nil {
		return err
	}
	rep.Results["lifecycle"], rep.Results["river_lifecycle"] = st, peer
	rep.Ratios["lifecycle_vs_river"] = ratio(st.Throughput, peer.Throughput)
	if cfg.only == "lifecycle" {
		return nil
	}
	peak := st.Throughput
	conns := fx.conns[:min(300, len(fx.conns))]
	var ended1 float64
	for _, k := range []int{1, 4, 8} {
		if _, workerDrained := drain(ctx, pool, time.Minute); workerDrained >= time.Minute {
			return fmt.Errorf("overload: the runs of the previous phase did not end within a minute")
		}
		if fx.hooks != nil {
			drainWebhooks(ctx, pool, time.Minute)
		}
		progress("overload: %dx the lifecycle's %.0f runs/s offered on %d connections for %s", k, peak, len(conns), cfg.overload)
		profile := filepath.Join("bench", "results", fmt.Sprintf("overload-%dx-cpu.pprof", k))
		profDone := captureProfile(cfg.pprofAddr, cfg.overload-time.Second, profile)
		st, ended, byStatus, err := overload(ctx, c, pool, fx, conns, float64(k)*peak, cfg.overload)
		if err != nil {
			return err
		}
		if err := <-profDone; err == nil {
			rep.Profiles = append(rep.Profiles, profile)
		}
		key := fmt.Sprintf("overload_%dx", k)
		rep.Results[key] = st
		rep.Checks[key+"_answers"] = fmt.Sprint(byStatus)
		rep.Checks[key+"_runs_ended_per_s"] = fmt.Sprintf("%.0f", ended)
		if k == 1 {
			ended1 = ended
		} else {
			rep.Ratios[fmt.Sprintf("overload_%dx_runs_vs_1x", k)] = ratio(ended, ended1)
		}
	}
	return nil
}

// replayOnly seeds the history and times a rebuild, and nothing else.
func replayOnly(ctx context.Context, cfg config, bin, dbURL string, srv *server, c *client, pool *pgxpool.Pool, fx *fixture, rep *report) error {
	progress("replay: seeding the store to %d events", cfg.replay)
	if err := seedHistory(ctx, pool, fx, cfg.replay); err != nil {
		return err
	}
	if err := auditFigures(ctx, c, pool, fx, bin, dbURL, srv.cmd.Process.Pid, rep); err != nil {
		return err
	}
	checkTargets(rep)
	if err := replay(bin, dbURL, rep); err != nil {
		return err
	}
	printTable(os.Stdout, rep)
	return nil
}

// replay times `opsgate projections rebuild` into rep.
func replay(bin, dbURL string, rep *report) error {
	progress("replay: opsgate projections rebuild")
	events, perSec, err := rebuild(bin, dbURL)
	if err != nil {
		return err
	}
	rep.Replay["events"], rep.Replay["events_per_second"] = events, perSec
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%d CPU (%s), %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func createDatabase(ctx context.Context, base string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connect %s: %w", base, err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("opsgate_bench_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(context.Background())
		}
	}
	return u.String(), drop, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type server struct {
	cmd *exec.Cmd
	log string
}

const adminToken = "bench-admin-token-0123456789"

func startServer(ctx context.Context, bin, dbURL, addr, pprofAddr, roles string) (*server, error) {
	s, err := startProcess(bin, dbURL, addr, pprofAddr, roles)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("opsgate did not become ready (log: %s)", s.log)
}

// aside is opsgate on a database of its own, for a phase measured apart
// from the main server.
type aside struct {
	dbURL, url string
	client     *client
	srv        *server
	drop       func()
	closed     bool
}

// startAside creates a database on base's server and starts opsgate with
// roles (every role when empty) on it.
func startAside(ctx context.Context, bin, base, roles string) (*aside, error) {
	dbURL, drop, err := createDatabase(ctx, base)
	if err != nil {
		return nil, err
	}
	addr := freeAddr()
	srv, err := startServer(ctx, bin, dbURL, addr, freeAddr(), roles)
	if err != nil {
		drop()
		return nil, err
	}
	url := "http://" + addr
	return &aside{dbURL: dbURL, url: url, client: newClient(url), srv: srv, drop: drop}, nil
}

// close stops the server and drops its database; once is enough.
func (a *aside) close() {
	if a.closed {
		return
	}
	a.closed = true
	a.srv.stop()
	a.drop()
}

// startProcess starts `opsgate serve` with roles (every role when empty)
// and does not wait for it: a process without the api role serves no
// HTTP to ask.
func startProcess(bin, dbURL, addr, pprofAddr, roles string) (*server, error) {
	args := []string{"serve"}
	if roles != "" {
		args = append(args, "--roles", roles)
	}
	key, err := benchKey(dbURL)
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "OPSGATE_HTTP_ADDR="+addr, "OPSGATE_ADMIN_TOKEN="+adminToken, "OPSGATE_AUDIT_SIGNING_KEY_FILE="+key,
		"OPSGATE_PPROF_ADDR="+pprofAddr, "OPSGATE_LOG_LEVEL=warn", "OPSGATE_DB_MAX_CONNS=48", "OPSGATE_WORKER_CONCURRENCY="+workerSlots(),
		// The bench's webhook receiver is on loopback; its one user sends
		// thousands of starts a second, far over any caller's rate limit.
		"OPSGATE_WEBHOOK_ALLOW_PRIVATE=true", "OPSGATE_RATE_LIMIT=0")
	logFile, err := os.CreateTemp("", "opsgate-bench-server-*.log")
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start opsgate: %w", err)
	}
	return &server{cmd: cmd, log: logFile.Name()}, nil
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

func writeJSON(rep *report) error {
	if err := os.MkdirAll(filepath.Join("bench", "results"), 0o755); err != nil {
		return err
	}
	name := filepath.Join("bench", "results", "latest.json")
	if rep.Quick {
		name = filepath.Join("bench", "results", "latest-quick.json")
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return err
	}
	progress("wrote %s", name)
	return nil
}

// workerSlots is the built-in worker's concurrency in the benchmark
// (OPSGATE_BENCH_WORKER_CONCURRENCY, default 16, River's worker count).
func workerSlots() string {
	if v := os.Getenv("OPSGATE_BENCH_WORKER_CONCURRENCY"); v != "" {
		return v
	}
	return "16"
}
