// Package apptest is the test kit of every package that needs the whole
// application: Start builds the real application through the composition
// root (internal/app), with the same pools and settings as production but
// short timings, on a fresh migrated database (internal/pgtest), serves
// its API on a loopback port and stops it when the test ends. Factories
// create workspaces, tenants, users, memberships and connections through
// the services; WaitFor is the one way to wait for a condition; Clock is
// a clock a test moves by hand.
package apptest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/pgtest"
	"github.com/opsgate/opsgate/tenancy"
)

// AdminToken is the admin token of every test application.
const AdminToken = "oga_test-admin-token"

// Timeout bounds the database calls of the kit and of tests that use Ctx,
// so that a deadlock fails a test instead of hanging its package.
const Timeout = 2 * time.Minute

// App is a running application of a test.
type App struct {
	*app.App
	t testing.TB
	// Ctx ends with the test (or after Timeout).
	Ctx context.Context
	// URL is the API's base URL ("" without the api role).
	URL string
	// DatabaseURL is the application's database.
	DatabaseURL string
	// Logs holds what the application logged.
	Logs *Logs

	stop *sync.Once
	halt func()
}

type settings struct {
	roles    app.Roles
	database string
	config   []func(*config.Config)
	app      []app.Option
}

// Option shapes a test application.
type Option func(*settings)

// Roles runs the given roles instead of all three.
func Roles(r app.Roles) Option { return func(s *settings) { s.roles = r } }

// OnDatabase runs the application on the database at url (another
// application's, to run two processes on one database) instead of a
// fresh one.
func OnDatabase(url string) Option { return func(s *settings) { s.database = url } }

// Configure adjusts the configuration (timings, wait bounds) after the
// kit's defaults.
func Configure(fn func(*config.Config)) Option {
	return func(s *settings) { s.config = append(s.config, fn) }
}

// With passes options to the composition root (a clock, providers, the
// worker's inner timings).
func With(opts ...app.Option) Option { return func(s *settings) { s.app = append(s.app, opts...) } }

// Config returns the configuration of a test application on databaseURL:
// production's, with timings short enough for tests yet generous enough
// for a loaded shared machine.
func Config(databaseURL string) config.Config {
	return config.Config{
		DatabaseURL: databaseURL, HTTPAddr: "127.0.0.1:0", AdminToken: AdminToken, LogLevel: slog.LevelInfo,
		DBMaxConns: 40, RequestTimeout: 30 * time.Second, ShutdownGrace: 5 * time.Second,
		PollInterval: 20 * time.Millisecond, WakeDelay: 0, WorkerConcurrency: 4, StartQueue: 512,
		Lease: 2 * time.Second, Heartbeat: 100 * time.Millisecond,
		// Subscribers read below the oldest transaction of the database in
		// flight, and tests of other packages load the shared server.
		ReadYourWritesWait: 10 * time.Second,
	}
}

// Start builds and runs the application for t; it stops when t ends.
func Start(t testing.TB, opts ...Option) *App {
	t.Helper()
	s := settings{roles: app.AllRoles()}
	for _, o := range opts {
		o(&s)
	}
	if s.database == "" {
		s.database = pgtest.NewDatabase(t)
	}
	cfg := Config(s.database)
	for _, fn := range s.config {
		fn(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	logs := &Logs{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := app.New(ctx, cfg, s.roles, logger, s.app...)
	if err != nil {
		t.Fatalf("start the application: %v", err)
	}
	ta := &App{App: a, t: t, Ctx: ctx, DatabaseURL: s.database, Logs: logs}
	var ln net.Listener
	if s.roles.API {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			a.Close()
			t.Fatalf("listen: %v", err)
		}
		ta.URL = "http://" + ln.Addr().String()
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, ln) }()
	ta.stop = &sync.Once{}
	ta.halt = func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("application stopped with: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the application did not stop within 30s")
		}
		a.Close()
	}
	t.Cleanup(func() {
		ta.Stop()
		if t.Failed() {
			t.Logf("application log:\n%s", logs.Tail(200))
		}
	})
	return ta
}

// Stop stops the application as SIGTERM would (draining within the
// configured grace period) and waits for it; the test's end does it too.
func (a *App) Stop() { a.stop.Do(a.halt) }

// On returns the application for use by t (a subtest): its failures are t's.
func (a *App) On(t testing.TB) *App {
	b := *a
	b.t = t
	return &b
}

// T is the test the application reports to.
func (a *App) T() testing.TB { return a.t }

var seq atomic.Int64

// Admin is the admin as an actor.
var Admin = domain.ActorAdmin

// As returns userID as an actor.
func As(userID string) domain.Actor { return domain.Actor{ID: userID} }

// Workspace creates a workspace.
func (a *App) Workspace(name string) tenancy.Workspace {
	a.t.Helper()
	w, err := a.Tenancy.CreateWorkspace(a.Ctx, Admin, name)
	if err != nil {
		a.t.Fatalf("create workspace %s: %v", name, err)
	}
	return w
}

// Tenant creates a tenant in workspace.
func (a *App) Tenant(workspaceID, name string) tenancy.Tenant {
	a.t.Helper()
	tn, err := a.Tenancy.CreateTenant(a.Ctx, Admin, workspaceID, name)
	if err != nil {
		a.t.Fatalf("create tenant %s: %v", name, err)
	}
	return tn
}

// User creates a user (with a unique email) and returns it with its token.
func (a *App) User(name string) tenancy.User {
	a.t.Helper()
	u, err := a.Tenancy.CreateUser(a.Ctx, Admin, fmt.Sprintf("%s-%d@example.test", strings.ToLower(strings.ReplaceAll(name, " ", "-")), seq.Add(1)), name)
	if err != nil {
		a.t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

// Grant gives userID role on tenantID.
func (a *App) Grant(userID, tenantID string, role domain.Role) {
	a.t.Helper()
	if _, err := a.Tenancy.GrantMembership(a.Ctx, Admin, userID, tenantID, string(role)); err != nil {
		a.t.Fatalf("grant %s on %s: %v", role, tenantID, err)
	}
}

// Member creates a user with role on tenantID.
func (a *App) Member(name, tenantID string, role domain.Role) tenancy.User {
	a.t.Helper()
	u := a.User(name)
	a.Grant(u.ID, tenantID, role)
	return u
}

// Connection creates a connection on tenantID on behalf of ownerID: a
// ready simulated one (consent granted, credentials valid, enabled, not
// the default) unless change says otherwise.
func (a *App) Connection(ownerID, tenantID, name string, change ...func(*connections.NewConnection)) connections.Connection {
	a.t.Helper()
	in := connections.NewConnection{
		Provider: connections.ProviderSimulated, DisplayName: name,
		Consent: domain.ConsentGranted, Credentials: domain.CredentialsValid, Enabled: true,
	}
	for _, c := range change {
		c(&in)
	}
	c, err := a.Connections.Create(a.Ctx, As(ownerID), tenantID, in)
	if err != nil {
		a.t.Fatalf("create connection %s: %v", name, err)
	}
	return c
}

// Changes of a new connection.
func AsDefault(in *connections.NewConnection) { in.IsDefault = true }
func Disabled(in *connections.NewConnection)  { in.Enabled = false }
func Consent(c domain.Consent) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { in.Consent = c }
}
func Credentials(c domain.Credentials) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { in.Credentials = c }
}
func Provider(name string) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { in.Provider = name }
}
func Latency(ms int) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { simOf(in).LatencyMS = ms }
}
func FailWith(code domain.ReasonCode) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { simOf(in).FailWith = &code }
}
func Throttle(times int) func(*connections.NewConnection) {
	return func(in *connections.NewConnection) { simOf(in).ThrottleTimes = times }
}

func simOf(in *connections.NewConnection) *domain.Simulation {
	if in.Simulation == nil {
		in.Simulation = &domain.Simulation{}
	}
	return in.Simulation
}

// Stream returns the events of a stream, in version order.
func (a *App) Stream(id string) []eventstore.Event {
	a.t.Helper()
	events, err := a.Store.ReadStream(a.Ctx, id, 1)
	if err != nil {
		a.t.Fatalf("read %s: %v", id, err)
	}
	return events
}

// RunEvents returns the events recorded for a run, in commit order.
func (a *App) RunEvents(runID string) []eventstore.Event {
	a.t.Helper()
	events, err := a.Store.ReadCorrelated(a.Ctx, runID, 10_000)
	if err != nil {
		a.t.Fatalf("events of %s: %v", runID, err)
	}
	return events
}

// Decode returns the typed payload of e.
func (a *App) Decode(e eventstore.Event) eventstore.Payload {
	a.t.Helper()
	p, err := a.Store.Registry().Decode(e)
	if err != nil {
		a.t.Fatalf("decode %s: %v", e.Type, err)
	}
	return p
}

// Count runs a query for one integer.
func (a *App) Count(sql string, args ...any) int {
	a.t.Helper()
	var n int
	if err := a.Pool.QueryRow(a.Ctx, sql, args...).Scan(&n); err != nil {
		a.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// RunStatus is a run's status in the write side's runs table.
func (a *App) RunStatus(runID string) domain.RunStatus {
	a.t.Helper()
	var s string
	err := a.Pool.QueryRow(a.Ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		a.t.Fatalf("run %s has no runs row", runID)
	}
	if err != nil {
		a.t.Fatalf("status of run %s: %v", runID, err)
	}
	return domain.RunStatus(s)
}

// WaitFor polls cond until it holds, failing the test at the deadline.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// Clock is a clock a test sets and moves by hand; pass Now to the
// application with app.WithClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at t (UTC, microsecond precision, as stored).
func NewClock(t time.Time) *Clock { return &Clock{now: t.UTC().Truncate(time.Microsecond)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Logs collects an application's log lines.
type Logs struct {
	mu    sync.Mutex
	lines []string
	part  []byte
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := strings.IndexByte(string(l.part), '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

// String returns everything logged.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// With returns the logged lines that contain s.
func (l *Logs) With(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// Tail returns the last n lines logged.
func (l *Logs) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

// ConnStart is a start of actor from a connection-scoped surface.
func ConnStart(actor string, surface domain.Surface, connectionID string) gate.StartRequest {
	return gate.StartRequest{Actor: As(actor), Surface: surface, ConnectionID: connectionID}
}

// TenantStart is a start of actor from a tenant-scoped surface;
// connectionID "" uses the tenant's default.
func TenantStart(actor string, surface domain.Surface, tenantID, connectionID string) gate.StartRequest {
	return gate.StartRequest{Actor: As(actor), Surface: surface, TenantID: tenantID, ConnectionID: connectionID}
}

// Start runs req through the gate, failing the test on an error.
func (a *App) Start(req gate.StartRequest) gate.StartResponse {
	a.t.Helper()
	resp, err := a.Gate.Start(a.Ctx, req)
	if err != nil {
		a.t.Fatalf("start %s: %v", req.Surface.Name, err)
	}
	return resp
}

// Expect runs req through the gate and fails the test unless the outcome
// is want.
func (a *App) Expect(want domain.Outcome, req gate.StartRequest) domain.StartResult {
	a.t.Helper()
	res := a.Start(req).Result
	if res.Outcome != want {
		a.t.Fatalf("start %s: outcome %s (reason %+v), want %s", req.Surface.Name, res.Outcome, res.Reason, want)
	}
	return res
}
