package worker_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/worker"
)

// Short timings, so that heartbeats, cancellation and reaping happen
// within a test. The lease is kept well above the heartbeat (20 beats): a
// healthy run must never be reaped because heartbeats were late on a
// loaded machine or under -race. Tests of reaping itself use shorter
// leases on their own claims.
const (
	heartbeat       = 50 * time.Millisecond
	lease           = time.Second
	reapInterval    = 50 * time.Millisecond
	pollInterval    = 20 * time.Millisecond
	throttleBackoff = 5 * time.Millisecond
	// waitTimeout bounds every wait for a condition.
	waitTimeout = 30 * time.Second
	// testTimeout bounds every database call of a test.
	testTimeout = 2 * time.Minute
)

// providerRecording is a provider name that is not "simulated": the gate
// accepts connections of any provider, and the worker looks the adapter up
// by name.
const providerRecording = "recording"

// waitFor polls cond until it holds, failing the test at the deadline.
var waitFor = apptest.WaitFor

// testLogger logs through t until the test ends (goroutines that outlive
// it are then silenced instead of panicking).
func testLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done.Load() {
		w.t.Log(string(p))
	}
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)

// probe is a provider that records what the worker asks of it and then
// behaves as worker.Simulated (the connection's simulation settings). A
// connection can be held: its executions wait until released.
type probe struct {
	mu        sync.Mutex
	attempts  map[string]int    // run -> Execute calls
	conns     map[string]string // run -> connection it executed against
	ctxErrs   map[string]error  // run -> ctx.Err() seen when Execute returned
	returned  map[string]bool   // run -> an attempt returned
	holds     map[string]chan struct{}
	active    int
	maxActive int
}

func newProbe() *probe {
	return &probe{
		attempts: map[string]int{}, conns: map[string]string{}, ctxErrs: map[string]error{},
		returned: map[string]bool{}, holds: map[string]chan struct{}{},
	}
}

// Execute implements worker.Provider.
func (p *probe) Execute(ctx context.Context, job worker.Job) error {
	p.mu.Lock()
	p.attempts[job.RunID]++
	p.conns[job.RunID] = job.Connection.ID
	p.active++
	if p.active > p.maxActive {
		p.maxActive = p.active
	}
	hold := p.holds[job.Connection.ID]
	p.mu.Unlock()

	var err error
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		err = worker.Simulated{}.Execute(ctx, job)
	}

	p.mu.Lock()
	p.active--
	p.returned[job.RunID] = true
	if ctx.Err() != nil {
		p.ctxErrs[job.RunID] = ctx.Err()
	}
	p.mu.Unlock()
	return err
}

// hold makes executions against connectionID wait until release is called.
func (p *probe) hold(connectionID string) (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.holds[connectionID] = ch
	p.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// calls is the number of Execute calls for a run (attempts included).
func (p *probe) calls(runID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts[runID]
}

// executions is the number of runs executed at least once.
func (p *probe) executions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.attempts)
}

// totalCalls is the number of Execute calls for all runs.
func (p *probe) totalCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.attempts {
		n += c
	}
	return n
}

func (p *probe) connectionOf(runID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[runID]
}

func (p *probe) ctxErr(runID string) (error, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ctxErrs[runID], p.returned[runID]
}

func (p *probe) peak() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxActive
}

func (p *probe) executed() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]bool{}
	for id := range p.attempts {
		out[id] = true
	}
	return out
}

// fixture is a fresh application with a workspace, a tenant and its
// owner. No role runs: each test runs the workers it needs (runWorker).
type fixture struct {
	t      testing.TB
	ctx    context.Context
	app    *apptest.App
	pool   *pgxpool.Pool
	svc    *gate.Service
	store  *eventstore.Store
	probe  *probe
	logger *slog.Logger

	workspace tenancy.Workspace
	tenant    tenancy.Tenant
	owner     string
}

// on returns the fixture for use by subtest t.
func (f *fixture) on(t testing.TB) *fixture {
	g := *f
	g.t = t
	g.app = f.app.On(t)
	return &g
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	p := newProbe()
	// The probe serves both providers; the gate must know the built-in
	// worker runs them (no worker role: each test runs its own workers).
	a := apptest.Start(t, apptest.Roles(app.Roles{}),
		apptest.With(app.WithProviders(worker.Providers{connections.ProviderSimulated: p, providerRecording: p})))
	f := newFixtureOn(t, a)
	f.probe = p
	return f
}

func newFixtureOn(t testing.TB, a *apptest.App) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: a.Ctx, app: a, pool: a.Pool, svc: a.Gate, store: a.Store, probe: newProbe(), logger: testLogger(t, slog.LevelWarn)}
	f.workspace = a.Workspace("Contoso MSP")
	f.tenant = f.newTenant("Fabrikam")
	f.owner = f.newUser("owner", f.tenant.ID, domain.RoleOwner)
	return f
}

func (f *fixture) newTenant(name string) tenancy.Tenant {
	f.t.Helper()
	return f.app.On(f.t).Tenant(f.workspace.ID, name)
}

func (f *fixture) newUser(name, tenantID string, role domain.Role) string {
	f.t.Helper()
	a := f.app.On(f.t)
	if tenantID == "" {
		return a.User(name).ID
	}
	return a.Member(name, tenantID, role).ID
}

// Connection request tweaks.
var (
	asDefault = apptest.AsDefault
	disabled  = apptest.Disabled
	recording = apptest.Provider(providerRecording)
	noConsent = apptest.Consent(domain.ConsentMissing)
	badCreds  = apptest.Credentials(domain.CredentialsInvalid)
	latency   = apptest.Latency
	failWith  = apptest.FailWith
	throttle  = apptest.Throttle
)

// connection creates a ready simulated connection on the fixture's tenant.
func (f *fixture) connection(name string, change ...func(*connections.NewConnection)) connections.Connection {
	f.t.Helper()
	return f.connectionOn(f.tenant.ID, name, change...)
}

func (f *fixture) connectionOn(tenantID, name string, change ...func(*connections.NewConnection)) connections.Connection {
	f.t.Helper()
	return f.app.On(f.t).Connection(f.owner, tenantID, name, change...)
}

// start runs a start through the gate.
func (f *fixture) start(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	return f.app.On(f.t).Start(req).Result
}

// startOn starts a connection-scoped surface on connectionID.
func (f *fixture) startOn(surface domain.Surface, connectionID string) domain.StartResult {
	f.t.Helper()
	return f.start(gate.StartRequest{Actor: apptest.As(f.owner), Surface: surface, ConnectionID: connectionID})
}

// expect starts a connection-scoped surface and checks its outcome.
func (f *fixture) expect(outcome domain.Outcome, surface domain.Surface, connectionID string) domain.Run {
	f.t.Helper()
	res := f.startOn(surface, connectionID)
	if res.Outcome != outcome {
		f.t.Fatalf("start %s on %s: outcome %s (reason %+v), want %s", surface.Name, connectionID, res.Outcome, res.Reason, outcome)
	}
	return res.Run
}

// accept starts inventory sync (or surface) on connectionID and requires acceptance.
func (f *fixture) accept(connectionID string, surface ...domain.Surface) domain.Run {
	f.t.Helper()
	s := domain.SurfaceInventorySync
	if len(surface) > 0 {
		s = surface[0]
	}
	return f.expect(domain.OutcomeAccepted, s, connectionID)
}

// status is the run's status in the write-side runs table.
func (f *fixture) status(runID string) string {
	f.t.Helper()
	var s string
	if err := f.pool.QueryRow(f.ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&s); err != nil {
		f.t.Fatalf("status of run %s: %v", runID, err)
	}
	return s
}

func (f *fixture) waitStatus(runID string, want domain.RunStatus) {
	f.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		got := f.status(runID)
		if got == string(want) {
			return
		}
		if want != domain.StatusFailed && got == string(domain.StatusFailed) {
			f.t.Fatalf("run %s failed (%+v) while waiting for it to be %s", runID, f.lastReason(runID), want)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %v waiting for run %s to be %s (it is %s)", waitTimeout, runID, want, got)
		}
	}
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// events returns the events recorded for a run, in commit order.
func (f *fixture) events(runID string) []eventstore.Event { return f.app.On(f.t).RunEvents(runID) }

func (f *fixture) stream(id string) []eventstore.Event { return f.app.On(f.t).Stream(id) }

func (f *fixture) decode(e eventstore.Event) eventstore.Payload { return f.app.On(f.t).Decode(e) }

// countType is the number of events of type typ among events.
func countType(events []eventstore.Event, typ string) int {
	n := 0
	for _, e := range events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func types(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// lastReason is the reason of the run's RunFailed or RunCancelled event,
// nil when it has none.
func (f *fixture) lastReason(runID string) *domain.Reason {
	f.t.Helper()
	var reason *domain.Reason
	for _, e := range f.events(runID) {
		switch p := f.decode(e).(type) {
		case domain.RunFailed:
			r := p.Reason
			reason = &r
		case domain.RunCancelled:
			r := p.Reason
			reason = &r
		}
	}
	return reason
}

// runningWorker is a worker.Run in progress.
type runningWorker struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
}

// stop cancels the worker's context and waits for Run to return.
func (r *runningWorker) stop(t testing.TB) time.Duration {
	t.Helper()
	began := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("worker.Run: %v", err)
		}
		r.done <- nil // stop is idempotent
	case <-time.After(waitTimeout):
		t.Fatalf("worker.Run did not return within %v of its context ending", waitTimeout)
	}
	return time.Since(began)
}

// config is the worker configuration of the tests.
func config(id string) worker.Config {
	return worker.Config{
		ID: id, Concurrency: 4, Lease: lease, Heartbeat: heartbeat, PollInterval: pollInterval,
		ThrottleBackoff: throttleBackoff, ThrottleRetries: 2,
	}
}

// providers serves the simulated provider (and the recording one) through the probe.
func (f *fixture) providers() worker.Providers {
	return worker.Providers{connections.ProviderSimulated: f.probe, providerRecording: f.probe}
}

// runWorker starts a worker with cfg, woken by acceptances (unless cfg
// says otherwise), and a reaper beside it, as a process with the worker
// role runs them; grace is passed to Run. The worker is stopped when the
// test ends.
func (f *fixture) runWorker(cfg worker.Config, grace time.Duration) *runningWorker {
	f.t.Helper()
	if cfg.Wake == nil {
		cfg.Wake = f.app.Notifier.SubscribeTopic(gate.TopicStartsAccepted)
	}
	w, err := worker.New(cfg, f.svc, f.app.Connections, f.providers(), f.logger)
	if err != nil {
		f.t.Fatalf("worker.New: %v", err)
	}
	r := &runningWorker{w: w, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go f.svc.RunReaper(ctx, reapInterval, f.logger)
	go func() { r.done <- w.Run(ctx, grace) }()
	f.t.Cleanup(func() { r.stop(f.t) })
	return r
}

// eventsOfType returns every event of type typ, in commit order.
func (f *fixture) eventsOfType(typ string) []eventstore.Event {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT position, event_type, schema_version, payload FROM events WHERE event_type = $1 ORDER BY position`, typ)
	if err != nil {
		f.t.Fatalf("events of type %s: %v", typ, err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Event, error) {
		var e eventstore.Event
		return e, r.Scan(&e.Position, &e.Type, &e.SchemaVersion, &e.Data)
	})
	if err != nil {
		f.t.Fatalf("events of type %s: %v", typ, err)
	}
	return events
}

// beat heartbeats claim's lease (whoever holds it).
func (f *fixture) beat(c gate.Claim, lease time.Duration) error {
	_, err := f.svc.Heartbeat(f.ctx, gate.Claimant{}, c.RunID, c.Epoch, lease)
	return err
}

var testWorker = domain.ActorWorker("test")
