package onboarding_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/pgtest"
	"github.com/opsgate/opsgate/tenancy"
)

// Timings of the harness: a short heartbeat, a lease long enough that a
// loaded machine (several test packages at once) does not reap a healthy
// run between two late heartbeats, and the fallback poll of every
// subscriber.
const (
	pollInterval = 20 * time.Millisecond
	heartbeat    = 50 * time.Millisecond
	lease        = 5 * time.Second
)

// harnessOptions tune a harness: one opsgate process with every role
// (api, projector, worker + the bootstrap process manager), from the test
// kit, on a database it does not own, so that it can be stopped and
// another harness started on the same database.
type harnessOptions struct {
	// Grace is how long a stopping worker lets running operations finish
	// (the shutdown grace); 0 abandons them to their leases, as a crash
	// would.
	Grace time.Duration
}

// newDatabase returns the URL of a fresh migrated database, dropped when
// the test ends.
func newDatabase(t *testing.T) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	if databaseOf(t, url) == databaseOf(t, pgtest.URL(t)) {
		t.Fatalf("pgtest.NewDatabase answered the server's own database %q", databaseOf(t, url))
	}
	return url
}

func databaseOf(t *testing.T, connString string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatalf("parse %s: %v", connString, err)
	}
	return cfg.Database
}

// startHarness starts a harness on dbURL; it is stopped when the test
// ends unless stopped before.
func startHarness(t *testing.T, dbURL string, opts harnessOptions) *apptest.App {
	t.Helper()
	return apptest.Start(t, apptest.OnDatabase(dbURL), apptest.Configure(func(c *config.Config) {
		c.ShutdownGrace, c.PollInterval, c.Heartbeat, c.Lease = opts.Grace, pollInterval, heartbeat, lease
		c.ReadYourWritesWait = 2 * time.Second
	}))
}

// fixture is a test's world: its database, a harness serving it (replaced
// on restart), and a team: tenant A with a member in each role, and
// tenant B whose owner (outsider) is no member of A.
type fixture struct {
	dbURL string
	// db observes the write side directly, independent of any harness.
	db       *pgxpool.Pool
	h        *apptest.App
	tenant   string
	tenantB  string
	owner    tenancy.User
	operator tenancy.User
	readonly tenancy.User
	outsider tenancy.User
}

func newFixture(t *testing.T, opts harnessOptions) *fixture {
	t.Helper()
	dbURL := newDatabase(t)
	f := &fixture{dbURL: dbURL, db: pgtest.Connect(t, dbURL)}
	f.h = startHarness(t, dbURL, opts)
	t.Cleanup(func() {
		if t.Failed() {
			f.dumpEvents(t)
		}
	})

	tm := f.h.Team(t)
	f.tenant, f.tenantB = tm.Tenant.ID, tm.Other.ID
	f.owner, f.operator, f.readonly, f.outsider = tm.Owner, tm.Operator, tm.Readonly, tm.Outsider
	return f
}

// restart stops the harness and starts a new one on the same database.
func (f *fixture) restart(t *testing.T, opts harnessOptions) {
	t.Helper()
	f.h.Stop()
	f.h = startHarness(t, f.dbURL, opts)
}

// connection creates a simulated connection of tenant A (the default when
// isDefault) with the given consent and latency.
func (f *fixture) connection(t *testing.T, name, consent string, latencyMS int, isDefault bool) string {
	t.Helper()
	var c struct{ ID string }
	f.h.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/provider-connections", f.owner.Token, map[string]any{
		"provider": "simulated", "display_name": name, "is_default": isDefault,
		"consent": consent, "credentials": "valid", "enabled": true,
		"simulation": map[string]any{"latency_ms": latencyMS, "fail_with": nil},
	}, &c)
	return c.ID
}

// simulate sets a connection's simulation settings.
func (f *fixture) simulate(t *testing.T, conn string, latencyMS int, failWith any) {
	t.Helper()
	f.h.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+conn, f.owner.Token, map[string]any{
		"simulation": map[string]any{"latency_ms": latencyMS, "fail_with": failWith},
	}, nil)
}

// newSession opens an onboarding session of tenant A on conn.
func (f *fixture) newSession(t *testing.T, conn string) string {
	t.Helper()
	var s apptest.Session
	f.h.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/onboarding-sessions", f.owner.Token,
		map[string]any{"provider_connection_id": conn}, &s)
	if s.ID == "" || s.Status != "open" || s.Steps.Bootstrap.Status != "not_started" || s.Steps.Verification.Status != "not_run" {
		t.Fatalf("new session: %s", s)
	}
	return s.ID
}

func (f *fixture) session(t *testing.T, id string) apptest.Session {
	t.Helper()
	var s apptest.Session
	f.h.Must(t, 200, "GET", "/api/v1/onboarding-sessions/"+id, f.owner.Token, nil, &s)
	return s
}

func (f *fixture) bootstrap(t *testing.T, sessionID, token string, ops ...string) apptest.Reply {
	t.Helper()
	if ops == nil {
		ops = []string{}
	}
	return f.h.Call(t, "POST", "/api/v1/onboarding-sessions/"+sessionID+"/bootstrap", token, map[string]any{"operations": ops})
}

func (f *fixture) continueBootstrap(t *testing.T, sessionID, token string) apptest.Reply {
	t.Helper()
	return f.h.Call(t, "POST", "/api/v1/onboarding-sessions/"+sessionID+"/bootstrap/continue", token, nil)
}

// operation reads a run over the monitoring API; it waits for the run to
// be there (read-your-writes is bounded, see the report).
func (f *fixture) operation(t *testing.T, id string) apptest.Run {
	t.Helper()
	var r apptest.Run
	eventually(t, 30*time.Second, "run "+id+" in monitoring", func() (bool, string) {
		rep := f.h.Call(t, "GET", "/api/v1/operations/"+id, f.owner.Token, nil)
		if rep.Status == 404 {
			return false, rep.String()
		}
		if rep.Status != 200 {
			t.Fatalf("%s: want 200", rep)
		}
		rep.Decode(t, &r)
		return true, ""
	})
	return r
}

// waitOperation waits until the run's status (as monitoring shows it) is status.
func (f *fixture) waitOperation(t *testing.T, id, status string, timeout time.Duration) apptest.Run {
	t.Helper()
	var r apptest.Run
	eventually(t, timeout, "run "+id+" "+status, func() (bool, string) {
		r = f.operation(t, id)
		return string(r.Status) == status, fmt.Sprintf("%+v", r)
	})
	return r
}

// waitSession waits until cond holds for the session.
func (f *fixture) waitSession(t *testing.T, id string, timeout time.Duration, what string, cond func(apptest.Session) bool) apptest.Session {
	t.Helper()
	var s apptest.Session
	eventually(t, timeout, what, func() (bool, string) {
		s = f.session(t, id)
		return cond(s), s.String()
	})
	return s
}

// activeOn counts the runs holding scope (queued or running) in the
// write-side runs table.
func (f *fixture) activeOn(t *testing.T, scope string) int {
	t.Helper()
	var n int
	if err := f.db.QueryRow(context.Background(),
		`SELECT count(*) FROM runs WHERE status IN ('queued','running') AND scope_id = $1`, scope).Scan(&n); err != nil {
		t.Fatalf("count active runs: %v", err)
	}
	return n
}

// runStatuses returns id -> status of every run of scope in the runs table.
func (f *fixture) runStatuses(t *testing.T, scope string) map[string]string {
	t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT id, status FROM runs WHERE scope_id = $1`, scope)
	if err != nil {
		t.Fatalf("list runs: %v", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatalf("scan run: %v", err)
		}
		out[id] = status
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list runs: %v", err)
	}
	return out
}

// runStatus is a run's status in the runs table.
func (f *fixture) runStatus(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := f.db.QueryRow(context.Background(), `SELECT status FROM runs WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	return s
}

// watchScope polls the runs table of scope every few milliseconds in the
// background and records the largest number of runs active at once; stop
// returns it.
func (f *fixture) watchScope(t *testing.T, scope string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		most := 0
		for ctx.Err() == nil {
			var n int
			err := f.db.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('queued','running') AND scope_id = $1`, scope).Scan(&n)
			if err == nil && n > most {
				most = n
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Millisecond):
			}
		}
		done <- most
	}()
	var once sync.Once
	var most int
	stop = func() int {
		once.Do(func() { cancel(); most = <-done })
		return most
	}
	t.Cleanup(func() { stop() })
	return stop
}

func connectionScope(conn string) string { return "scope-connection-" + conn }

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

func randomID() string { return ulid.Make().String() }

// strp is *s ("<nil>" for nil), of a string or of a generated enum.
func strp[T ~string](s *T) string {
	if s == nil {
		return "<nil>"
	}
	return string(*s)
}

// dumpEvents logs every event of the database with its commit timing.
func (f *fixture) dumpEvents(t *testing.T) {
	rows, err := f.db.Query(context.Background(), `SELECT position, tx_id::text, event_type, stream_id, recorded_at FROM events ORDER BY position`)
	if err != nil {
		t.Logf("dump events: %v", err)
		return
	}
	defer rows.Close()
	var first time.Time
	for rows.Next() {
		var pos int64
		var tx, typ, stream string
		var at time.Time
		if err := rows.Scan(&pos, &tx, &typ, &stream, &at); err != nil {
			t.Logf("dump events: %v", err)
			return
		}
		if first.IsZero() {
			first = at
		}
		t.Logf("%4d tx=%s +%8s %-32s %s", pos, tx, at.Sub(first).Round(time.Millisecond), typ, stream)
	}
}
