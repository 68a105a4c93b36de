package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/pgtest"
	"github.com/opsgate/opsgate/projections"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// opsgateBinary builds cmd/opsgate once per test binary.
func opsgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = fmt.Errorf("not inside a module (go env GOMOD = %q)", gomod)
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "opsgate-worker-test-"); buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "opsgate")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/opsgate")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/opsgate: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// process is one opsgate process of the test.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *apptest.Logs
	exited chan struct{}
	err    error // set before exited is closed
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// processEnv is the environment of the processes: the test's, without any
// opsgate setting it may carry, plus env.
func processEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OPSGATE_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// spawn starts bin with args; the process is killed when the test ends
// if it is still running, and its output is shown if the test failed.
func spawn(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), out: &apptest.Logs{}, exited: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			out := p.out.String()
			if len(out) > 8000 {
				out = "...\n" + out[len(out)-8000:]
			}
			t.Logf("output of %s:\n%s", name, out)
		}
	})
	return p
}

// apiClient talks to the api processes, alternating between them.
type apiClient struct {
	bases []string
	next  atomic.Int64
	http  *http.Client
}

type response struct {
	status int
	body   []byte
}

func (c *apiClient) do(method, path, token string, body any, header ...string) (response, error) {
	base := c.bases[int(c.next.Add(1))%len(c.bases)]
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s%s: %w", method, base, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s%s: read body: %w", method, base, path, err)
	}
	return response{status: resp.StatusCode, body: raw}, nil
}

// must does a request that must answer want, decoding the body into out.
func (c *apiClient) must(t *testing.T, want int, method, path, token string, body, out any) {
	t.Helper()
	resp, err := c.do(method, path, token, body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, resp.status, resp.body, want)
	}
	if out != nil {
		if err := json.Unmarshal(resp.body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, resp.body, err)
		}
	}
}

// startOutcome is what one start answered.
type startOutcome struct {
	path   string
	key    string
	status int
	result domain.StartResult
}

// Five processes on one database, two of them workers: every start ends
// in one of the four outcomes, at no moment are two runs active on one
// connection, every accepted run is started exactly once and succeeds,
// the read models match the history, and every process drains on SIGTERM.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the opsgate binary")
	}
	t0 := time.Now()
	bin := opsgateBinary(t)
	t.Logf("binary built in %v", time.Since(t0))
	dbURL := pgtest.NewDatabase(t)
	pool := pgtest.Connect(t, dbURL)
	store := app.NewStore(pool)
	ctx, cancel := context.WithTimeout(context.Background(), apptest.Timeout)
	defer cancel()

	const adminToken = "multi-process-admin-token-0123456789"
	settings := map[string]string{
		"DATABASE_URL":           dbURL,
		"OPSGATE_ADMIN_TOKEN":    adminToken,
		"OPSGATE_HEARTBEAT":      "200ms",
		"OPSGATE_LEASE":          "1s",
		"OPSGATE_POLL_INTERVAL":  "50ms",
		"OPSGATE_DB_MAX_CONNS":   "10",
		"OPSGATE_SHUTDOWN_GRACE": "5s",
		"OPSGATE_LOG_LEVEL":      "info",
		"OPSGATE_RATE_LIMIT":     "0", // many starts of one user at once
	}
	env := processEnv(settings)

	migrate := exec.Command(bin, "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("opsgate migrate: %v\n%s", err, out)
	}

	ports := []int{freePort(t), freePort(t)}
	var procs []*process
	var bases []string
	for i, port := range ports {
		settings["OPSGATE_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
		procs = append(procs, spawn(t, fmt.Sprintf("api-%d", i+1), bin, processEnv(settings), "serve", "--roles", "api"))
		bases = append(bases, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	delete(settings, "OPSGATE_HTTP_ADDR")
	procs = append(procs, spawn(t, "projector", bin, env, "serve", "--roles", "projector"))
	procs = append(procs, spawn(t, "worker-1", bin, env, "serve", "--roles", "worker"))
	procs = append(procs, spawn(t, "worker-2", bin, env, "serve", "--roles", "worker"))

	client := &apiClient{bases: bases, http: &http.Client{Timeout: 20 * time.Second}}
	for _, base := range bases {
		apptest.WaitFor(t, waitTimeout, base+"/readyz", func() bool {
			for _, p := range procs {
				if !p.running() {
					t.Fatalf("%s exited early: %v", p.name, p.err)
				}
			}
			resp, err := client.http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	t.Logf("five processes ready after %v", time.Since(t0))

	// Tenancy over HTTP.
	var ws, tenant struct{ ID string }
	client.must(t, 201, "POST", "/api/v1/admin/workspaces", adminToken, map[string]any{"name": "Contoso MSP"}, &ws)
	client.must(t, 201, "POST", "/api/v1/admin/tenants", adminToken, map[string]any{"workspace_id": ws.ID, "name": "Fabrikam"}, &tenant)
	var user struct{ ID, Token string }
	client.must(t, 201, "POST", "/api/v1/admin/users", adminToken, map[string]any{"email": "owner@example.test", "name": "Owner"}, &user)
	client.must(t, 201, "POST", "/api/v1/admin/memberships", adminToken, map[string]any{"user_id": user.ID, "tenant_id": tenant.ID, "role": "owner"}, nil)
	if user.Token == "" {
		t.Fatal("user creation answered no token")
	}
	var conns []string
	for i := 0; i < 10; i++ {
		var c struct{ ID string }
		client.must(t, 201, "POST", "/api/v1/tenants/"+tenant.ID+"/provider-connections", user.Token, map[string]any{
			"provider": "simulated", "display_name": fmt.Sprintf("Graph %d", i), "is_default": i == 0,
			"consent": "granted", "credentials": "valid", "enabled": true,
			"simulation": map[string]any{"latency_ms": 10 + 5*i, "fail_with": nil},
		}, &c)
		conns = append(conns, c.ID)
	}
	var off struct{ ID string }
	client.must(t, 201, "POST", "/api/v1/tenants/"+tenant.ID+"/provider-connections", user.Token, map[string]any{
		"provider": "simulated", "display_name": "Disabled", "consent": "granted", "credentials": "valid", "enabled": false,
	}, &off)
	targets := append(append([]string{}, conns...), off.ID)

	// One start end to end before the workload: the pipeline is live.
	var first domain.StartResult
	client.must(t, http.StatusAccepted, "POST", "/api/v1/provider-connections/"+conns[0]+"/check", user.Token, nil, &first)
	apptest.WaitFor(t, waitTimeout, "the first run to succeed", func() bool {
		var status string
		err := pool.QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`, first.Run.ID).Scan(&status)
		return err == nil && status == "succeeded"
	})
	t.Logf("first run succeeded after %v", time.Since(t0))

	// On failure, show the runs' timeline.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := pool.Query(ctx, `SELECT recorded_at, event_type, metadata->>'correlation_id', COALESCE(metadata->>'actor', '')
			FROM events WHERE stream_id LIKE 'scope-%' ORDER BY position`)
		if err != nil {
			t.Logf("timeline: %v", err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var at time.Time
			var typ, run, actor string
			if err := rows.Scan(&at, &typ, &run, &actor); err != nil {
				t.Logf("timeline: %v", err)
				return
			}
			t.Logf("timeline %s %-14s %s %s", at.Format("15:04:05.000"), typ, run, actor)
		}
	})

	// The one-active-run-per-connection invariant, watched while the workload runs.
	var violations []string
	var polls atomic.Int64
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case <-tick.C:
			}
			rows, err := pool.Query(ctx, `SELECT scope_id, count(*) FROM runs WHERE status IN ('queued','running') GROUP BY scope_id HAVING count(*) > 1`)
			if err != nil {
				continue
			}
			for rows.Next() {
				var scope string
				var n int
				if rows.Scan(&scope, &n) == nil {
					violations = append(violations, fmt.Sprintf("%s has %d active runs", scope, n))
				}
			}
			rows.Close()
			polls.Add(1)
		}
	}()

	// ~200 starts from concurrent clients, alternating between the api processes.
	const clients, perClient = 8, 25
	surfaces := []string{"inventory-sync", "compliance-snapshot", "check"}
	wantStatus := map[domain.Outcome]int{
		domain.OutcomeAccepted: http.StatusAccepted, domain.OutcomeDeduped: http.StatusOK,
		domain.OutcomeScopeBusy: http.StatusConflict, domain.OutcomeBlocked: http.StatusUnprocessableEntity,
	}
	var (
		mu       sync.Mutex
		outcomes []startOutcome
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	began := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			var mine []startOutcome
			for i := 0; i < perClient; i++ {
				var path, key string
				switch r := rng.IntN(10); {
				case r == 0 && len(mine) > 0: // replay an earlier idempotent start
					prev := mine[rng.IntN(len(mine))]
					path, key = prev.path, prev.key
				case r <= 2 && len(mine) > 0: // repeat the previous start
					path = mine[len(mine)-1].path
					key = fmt.Sprintf("client-%d-start-%d", c, i)
				default:
					path = fmt.Sprintf("/api/v1/provider-connections/%s/%s", targets[rng.IntN(len(targets))], surfaces[rng.IntN(len(surfaces))])
					key = fmt.Sprintf("client-%d-start-%d", c, i)
				}
				resp, err := client.do("POST", path, user.Token, nil, "Idempotency-Key", key)
				if err != nil {
					report("%v", err)
					return
				}
				var res domain.StartResult
				if err := json.Unmarshal(resp.body, &res); err != nil {
					report("POST %s = %d %s: %v", path, resp.status, resp.body, err)
					continue
				}
				want, known := wantStatus[res.Outcome]
				switch {
				case !known:
					report("POST %s = %d with outcome %q: %s", path, resp.status, res.Outcome, resp.body)
					continue
				case resp.status != want:
					report("POST %s: outcome %s answered %d, want %d", path, res.Outcome, resp.status, want)
				}
				switch res.Outcome {
				case domain.OutcomeAccepted:
					if res.Reason != nil {
						report("accepted start with reason %+v", res.Reason)
					}
				case domain.OutcomeBlocked:
					if res.Reason == nil || res.Run.Status != domain.StatusBlocked {
						report("blocked start without reason or with status %s", res.Run.Status)
					}
				default:
					if !res.Run.Status.Active() {
						report("%s start points to a %s run", res.Outcome, res.Run.Status)
					}
				}
				o := startOutcome{path: path, key: key, status: resp.status, result: res}
				for _, prev := range mine {
					if prev.key == key && (prev.status != o.status || prev.result.Run.ID != res.Run.ID || prev.result.Outcome != res.Outcome) {
						report("replay of %s answered %d %s %s, first %d %s %s", key, o.status, res.Outcome, res.Run.ID,
							prev.status, prev.result.Outcome, prev.result.Run.ID)
					}
				}
				mine = append(mine, o)
			}
			mu.Lock()
			outcomes = append(outcomes, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	workload := time.Since(began)

	accepted := map[string]bool{}
	counts := map[domain.Outcome]int{}
	for _, o := range outcomes {
		counts[o.result.Outcome]++
		if o.result.Outcome == domain.OutcomeAccepted {
			accepted[o.result.Run.ID] = true
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d starts in %v: %v; %d distinct accepted runs", len(outcomes), workload, counts, len(accepted))
	if len(outcomes) != clients*perClient {
		t.Fatalf("%d starts answered, want %d", len(outcomes), clients*perClient)
	}
	for _, o := range []domain.Outcome{domain.OutcomeAccepted, domain.OutcomeDeduped, domain.OutcomeScopeBusy, domain.OutcomeBlocked} {
		if counts[o] == 0 {
			t.Errorf("the workload produced no %s outcome", o)
		}
	}

	// Every accepted run succeeds, as the API tells.
	pending := map[string]bool{}
	for id := range accepted {
		pending[id] = true
	}
	apptest.WaitFor(t, 60*time.Second, "every accepted run to succeed", func() bool {
		for id := range pending {
			var run struct {
				Status domain.RunStatus `json:"status"`
				Reason *domain.Reason   `json:"reason"`
			}
			resp, err := client.do("GET", "/api/v1/operations/"+id, user.Token, nil)
			if err != nil || resp.status != http.StatusOK {
				return false
			}
			if err := json.Unmarshal(resp.body, &run); err != nil {
				t.Fatalf("GET operation %s: %v", id, err)
			}
			switch run.Status {
			case domain.StatusSucceeded:
				delete(pending, id)
			case domain.StatusQueued, domain.StatusRunning:
				return false
			default:
				t.Fatalf("run %s ended %s (%+v)", id, run.Status, run.Reason)
			}
		}
		return true
	})
	t.Logf("every accepted run succeeded after %v", time.Since(t0))
	close(stopWatch)
	<-watchDone
	t.Logf("the active-run invariant was checked %d times", polls.Load())
	for _, v := range violations {
		t.Errorf("two active runs on one scope: %s", v)
	}

	// Exactly one RunStarted per accepted run.
	for id := range accepted {
		events, err := store.ReadCorrelated(ctx, id, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n := countType(events, "RunStarted"); n != 1 {
			t.Errorf("run %s has %d RunStarted events, want 1", id, n)
		}
	}
	var stray int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status NOT IN ('succeeded','blocked')`).Scan(&stray); err != nil || stray != 0 {
		t.Errorf("%d runs neither succeeded nor blocked (%v)", stray, err)
	}

	// Replaying each connection's history: no acceptance while a run was active.
	for _, id := range targets {
		scope := string(domain.ConnectionScope(id))
		events, err := store.ReadStream(ctx, scope, 1)
		if err != nil {
			t.Fatal(err)
		}
		var state domain.ScopeState
		for _, e := range events {
			p, err := store.Registry().Decode(e)
			if err != nil {
				t.Fatalf("decode %s: %v", e.Type, err)
			}
			switch ev := p.(type) {
			case domain.StartAccepted:
				if state.Active != nil {
					t.Errorf("%s v%d: %s accepted while %s was %s", scope, e.StreamVersion, ev.RunID, state.Active.RunID, state.Active.Status)
				}
			case domain.StartDeduped:
				if state.Active == nil || state.Active.RunID != ev.RunID {
					t.Errorf("%s v%d: deduped onto %s, which is not the active run", scope, e.StreamVersion, ev.RunID)
				}
			case domain.StartScopeBusy:
				if state.Active == nil || state.Active.RunID != ev.RunID {
					t.Errorf("%s v%d: scope_busy naming %s, which is not the active run", scope, e.StreamVersion, ev.RunID)
				}
			case domain.RunStarted:
				if state.Active == nil || state.Active.RunID != ev.RunID || state.Active.Status != domain.StatusQueued {
					t.Errorf("%s v%d: %s started while not the queued run", scope, e.StreamVersion, ev.RunID)
				}
			}
			state = domain.Evolve(state, p.(domain.Event))
		}
		if state.Active != nil {
			t.Errorf("%s still held by %s at the end", scope, state.Active.RunID)
		}
	}

	// The read models match the history once the projectors caught up.
	apptest.WaitFor(t, waitTimeout, "the projectors to catch up", func() bool {
		var behind int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) AS p(name)
			LEFT JOIN feed_checkpoints c ON c.consumer = p.name
			WHERE c.consumer IS NULL OR EXISTS (SELECT 1 FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position))`,
			projections.Names()).Scan(&behind)
		return err == nil && behind == 0
	})
	t.Logf("projectors caught up after %v", time.Since(t0))
	verify := exec.Command(bin, "projections", "verify")
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("opsgate projections verify: %v\n%s", err, out)
	}

	t.Logf("verified after %v", time.Since(t0))

	// SIGTERM drains every process, which then exits 0.
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM %s: %v", p.name, err)
		}
	}
	deadline := time.After(20 * time.Second)
	for _, p := range procs {
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("%s exited with %v after SIGTERM", p.name, p.err)
			}
		case <-deadline:
			t.Errorf("%s did not exit within 20s of SIGTERM", p.name)
		}
	}
	t.Logf("all processes exited after %v", time.Since(t0))
}
