// Package apptest is the test kit of every package that needs the whole
// application: Start builds the real application through the composition
// root (internal/app), with the same pools and settings as production but
// short timings, on a fresh migrated database (internal/pgtest), serves
// its API on a loopback port and stops it when the test ends.
//
// Every helper takes the test it reports to per call, as River's
// testfactory does, so that no package needs a wrapper around the kit:
// factories (factory.go) create workspaces, tenants, users, memberships,
// connections and a whole Team through the services; starts and their
// outcomes go through the gate (gate.go); runs are begun, heartbeaten and
// completed over the executors' public API (run.go); HTTP exchanges are
// checked against the OpenAPI document (client.go, openapi.go) and decoded
// into the wire shapes of wire.go. WaitFor is the one way to wait for a
// condition; Clock is a clock a test moves by hand; Proxy cuts the
// database away from one application.
package apptest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/faultproxy"
	"github.com/opsgate/opsgate/internal/pgtest"
	"github.com/opsgate/opsgate/worker"
	"golang.org/x/mod/sumdb/note"
)

// AdminToken is the admin token of every test application.
const AdminToken = "oga_test-admin-token"

// Timeout bounds the database calls of the kit and of tests that use Ctx,
// so that a deadlock fails a test instead of hanging its package.
const Timeout = 2 * time.Minute

// App is a running application of a test.
type App struct {
	*app.App
	// Ctx ends with the test (or after Timeout).
	Ctx context.Context
	// URL is the API's base URL ("" without the api role).
	URL string
	// DatabaseURL is the application's database.
	DatabaseURL string
	// Logs holds what the application logged.
	Logs *Logs
	// Reaped is told after each pass of the reaper, Fed after each batch
	// of the feed: a test that waits on one of them waits with Until.
	Reaped, Fed *Signal

	stop *sync.Once
	halt func()
}

type settings struct {
	roles     app.Roles
	database  string
	config    []func(*config.Config)
	providers []string
	app       []app.Option
	noWorker  bool
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

// Providers makes the built-in worker run connections of the named
// providers besides simulated, as simulated ones, so that the gate accepts
// their starts. Connections of distinct providers let a test begin a run
// that is not the oldest one queued (BeginRun). With(app.WithProviders)
// replaces them.
func Providers(names ...string) Option {
	return func(s *settings) { s.providers = append(s.providers, names...) }
}

// NoWorker says that no built-in worker runs anywhere. Without the worker
// role, an application of the kit otherwise behaves as if a worker process
// ran beside it (the kit announces one for the built-in providers, as a
// worker process does), so that starts of those providers are accepted;
// with NoWorker they are blocked with provider.no_executor.
func NoWorker() Option { return func(s *settings) { s.noWorker = true } }

// Config returns the configuration of a test application on databaseURL:
// production's, with timings short enough for tests yet generous enough
// for a loaded shared machine.
func Config(databaseURL string) config.Config {
	return config.Config{
		DatabaseURL: databaseURL, HTTPAddr: "127.0.0.1:0", AdminToken: AdminToken, LogLevel: slog.LevelInfo,
		DBMaxConns: 40, RequestTimeout: 30 * time.Second, ShutdownGrace: 5 * time.Second,
		PollInterval: 20 * time.Millisecond, WakeDelay: 0, WorkerConcurrency: 4, StartQueue: 512,
		Lease: 2 * time.Second, Heartbeat: 100 * time.Millisecond,
		QueueTTL: 15 * time.Minute, MaxDuration: time.Hour, ExecutorLiveness: time.Minute,
		// Subscribers read below the oldest transaction of the database in
		// flight, and tests of other packages load the shared server.
		ReadYourWritesWait: 10 * time.Second,
		// Webhook receivers of tests listen on loopback, and retries come
		// quickly.
		WebhookAllowPrivate:  true,
		WebhookRetrySchedule: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond},
		WebhookSecretOverlap: 24 * time.Hour,
		// Tests send what they need as fast as they can; the limit's own
		// test sets one.
		RateLimit: 0,
		// Checkpoints come quickly.
		AuditOrigin: "opsgate", AuditCheckpointInterval: 200 * time.Millisecond,
	}
}

// TestKey writes the audit signing key of the database at databaseURL
// into dir and returns its file: the applications of one database (the
// processes of one deployment) sign with the same key.
func TestKey(t testing.TB, dir, databaseURL string) string {
	t.Helper()
	seed := sha256.Sum256([]byte(databaseURL))
	skey, _, err := note.GenerateKey(bytes.NewReader(seed[:]), "opsgate-test")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(file, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
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
	// Every application signs audit checkpoints, with its database's key.
	cfg.AuditSigningKeyFile = TestKey(t, t.TempDir(), s.database)
	for _, fn := range s.config {
		fn(&cfg)
	}
	if len(s.providers) > 0 {
		providers := worker.Providers{connections.ProviderSimulated: worker.Simulated{}}
		for _, name := range s.providers {
			providers[name] = worker.Simulated{}
		}
		s.app = append([]app.Option{app.WithProviders(providers)}, s.app...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	logs := &Logs{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	reaped, fed := &Signal{}, &Signal{}
	obs := app.WithObservers(app.Observers{ReaperPass: func(int) { reaped.tell() }, FeedBatch: func(int, error) { fed.tell() }})
	a, err := app.New(ctx, cfg, s.roles, logger, append([]app.Option{obs}, s.app...)...)
	if err != nil {
		t.Fatalf("start the application: %v", err)
	}
	ta := &App{App: a, Ctx: ctx, DatabaseURL: s.database, Logs: logs, Reaped: reaped, Fed: fed}
	if !s.roles.Worker && !s.noWorker {
		ta.announceWorker(t)
	}
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

// announceWorker announces a built-in worker for the application's
// providers, as a worker process beside it would, until t ends.
func (a *App) announceWorker(t testing.TB) {
	t.Helper()
	id := fmt.Sprintf("apptest-%d", seq.Add(1))
	if err := a.Executors.Announce(a.Ctx, id, a.BuiltinProviders()); err != nil {
		t.Fatalf("announce a worker: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = a.Executors.Announce(ctx, id, a.BuiltinProviders())
			}
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// Stop stops the application as SIGTERM would (draining within the
// configured grace period) and waits for it; the test's end does it too.
func (a *App) Stop() { a.stop.Do(a.halt) }

// Proxy puts a fault proxy in front of the database at databaseURL (a
// fresh one when it is "") and returns it with the URL of the same
// database through it; the proxy is closed when t ends. An application
// started OnDatabase(the URL) loses its database at proxy.Cut.
func Proxy(t testing.TB, databaseURL string) (*faultproxy.Proxy, string) {
	t.Helper()
	if databaseURL == "" {
		databaseURL = pgtest.NewDatabase(t)
	}
	proxy, proxied, err := faultproxy.ForDatabase(databaseURL)
	if err != nil {
		t.Fatalf("proxy the database: %v", err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	return proxy, proxied
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

// Signal is an internal step of the application (a pass of the reaper, a
// batch of the feed) that a test waits on, as River's test signals: the
// test checks its condition after each step instead of polling.
type Signal struct {
	mu     sync.Mutex
	passed chan struct{} // closed at the next step
}

func (s *Signal) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passed == nil {
		s.passed = make(chan struct{})
	}
	return s.passed
}

func (s *Signal) tell() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passed != nil {
		close(s.passed)
	}
	s.passed = make(chan struct{})
}

// Until waits for steps until cond holds (checking it first, and after
// each step), failing t if it does not within timeout.
func (s *Signal) Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		next := s.next()
		if cond() {
			return
		}
		select {
		case <-next:
		case <-deadline.C:
			if cond() {
				return
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
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

// Logs collects an application's log lines; it is safe for concurrent
// writers, so it also serves as the output of a worker, a client or a
// process a test reads back.
type Logs struct {
	mu    sync.Mutex
	lines []string
	part  []byte
}

// Write implements io.Writer.
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

// String returns everything logged, a last unfinished line included.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		return strings.Join(append(l.lines[:len(l.lines):len(l.lines)], string(l.part)), "\n")
	}
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
