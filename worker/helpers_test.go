package worker_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
)

// providerRecording is a provider name that is not "simulated": the gate
// accepts connections of any provider, and the worker looks the adapter up
// by name.
const providerRecording = "recording"

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

// fixture is a fresh application with a team on it. No role runs: each
// test runs the workers it needs (runWorker). The probe serves both
// providers, and the gate knows the built-in worker runs them.
type fixture struct {
	*apptest.App
	probe  *probe
	logger *slog.Logger

	workspace tenancy.Workspace
	tenant    tenancy.Tenant
	owner     string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	p := newProbe()
	a := apptest.Start(t, apptest.Roles(app.Roles{}),
		apptest.With(app.WithProviders(worker.Providers{connections.ProviderSimulated: p, providerRecording: p})))
	tm := a.Team(t)
	// The workers and reapers of the tests log where the application does:
	// the kit shows it when a test fails.
	logger := slog.New(slog.NewTextHandler(a.Logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &fixture{App: a, probe: p, logger: logger, workspace: tm.Workspace, tenant: tm.Tenant, owner: tm.Owner.ID}
}

// waitStatus waits until the run's status in the write-side runs table is
// want, failing the test at once if the run failed while another status
// was wanted.
func (f *fixture) waitStatus(t testing.TB, runID string, want domain.RunStatus) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		got := f.RunStatus(t, runID)
		if got == want {
			return
		}
		if want != domain.StatusFailed && got == domain.StatusFailed {
			t.Fatalf("run %s failed (%+v) while waiting for it to be %s", runID, f.lastReason(t, runID), want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for run %s to be %s (it is %s)", waitTimeout, runID, want, got)
		}
	}
}

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

// lastReason is the reason of the run's RunFailed or RunCancelled event,
// nil when it has none.
func (f *fixture) lastReason(t testing.TB, runID string) *domain.Reason {
	t.Helper()
	var reason *domain.Reason
	for _, e := range f.RunEvents(t, runID) {
		switch p := f.Decode(t, e).(type) {
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
func (f *fixture) runWorker(t testing.TB, cfg worker.Config, grace time.Duration) *runningWorker {
	t.Helper()
	if cfg.Wake == nil {
		cfg.Wake = f.Notifier.SubscribeTopic(gate.TopicStartsAccepted)
	}
	w, err := worker.New(cfg, f.Gate, f.Connections, f.providers(), f.logger)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	r := &runningWorker{w: w, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go f.Gate.RunReaper(ctx, reapInterval, f.logger)
	go func() { r.done <- w.Run(ctx, grace) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// eventsOfType returns every event of type typ, in commit order.
func (f *fixture) eventsOfType(t testing.TB, typ string) []eventstore.Event {
	t.Helper()
	rows, err := f.Pool.Query(f.Ctx, `SELECT position, event_type, schema_version, payload FROM events WHERE event_type = $1 ORDER BY position`, typ)
	if err != nil {
		t.Fatalf("events of type %s: %v", typ, err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Event, error) {
		var e eventstore.Event
		return e, r.Scan(&e.Position, &e.Type, &e.SchemaVersion, &e.Data)
	})
	if err != nil {
		t.Fatalf("events of type %s: %v", typ, err)
	}
	return events
}
