package onboarding_test

import (
	"context"
	"encoding/json"
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
)

// adminToken is the admin token of every harness.
const adminToken = apptest.AdminToken

// Timings of the harness: a short heartbeat, a lease long enough that a
// loaded machine (several test packages at once) does not reap a healthy
// run between two late heartbeats, and the fallback poll of every
// subscriber.
const (
	pollInterval = 20 * time.Millisecond
	heartbeat    = 50 * time.Millisecond
	lease        = 2 * time.Second
)

// harness is one opsgate process with every role (api, projector, worker
// + the bootstrap process manager), from the test kit, on a database it
// does not own: it can be stopped and another harness started on the
// same database.
type harness struct {
	*apptest.App
}

// harnessOptions tune a harness.
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
func startHarness(t *testing.T, dbURL string, opts harnessOptions) *harness {
	t.Helper()
	return &harness{apptest.Start(t, apptest.OnDatabase(dbURL), apptest.Configure(func(c *config.Config) {
		c.ShutdownGrace, c.PollInterval, c.Heartbeat, c.Lease = opts.Grace, pollInterval, heartbeat, lease
		c.ReadYourWritesWait = 2 * time.Second
	}))}
}

// reply is an HTTP answer.
type reply = apptest.Reply

// call sends a request; body nil sends none, anything else is sent as JSON
// (a string as is).
func (h *harness) call(t *testing.T, method, path, token string, body any) reply {
	t.Helper()
	return h.Call(t, method, path, token, body)
}

// must sends a request, wants status and decodes the answer into dst
// (may be nil).
func (h *harness) must(t *testing.T, status int, method, path, token string, body, dst any) reply {
	t.Helper()
	return h.Must(t, status, method, path, token, body, dst)
}

// Shapes of contract section 5, as clients decode them.

type reason struct {
	Code    string `json:"code"`
	Class   string `json:"class"`
	Message string `json:"message"`
}

type connectionRef struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	Provider    string `json:"provider"`
}

type run struct {
	ID                 string         `json:"id"`
	TenantID           string         `json:"tenant_id"`
	Type               string         `json:"type"`
	CanonicalType      string         `json:"canonical_type"`
	Status             string         `json:"status"`
	Target             *string        `json:"target"`
	ProviderConnection *connectionRef `json:"provider_connection"`
	InitiatorID        string         `json:"initiator_id"`
	Surface            string         `json:"surface"`
	CreatedAt          time.Time      `json:"created_at"`
	StartedAt          *time.Time     `json:"started_at"`
	FinishedAt         *time.Time     `json:"finished_at"`
	Reason             *reason        `json:"reason"`
	Links              struct {
		Self string `json:"self"`
	} `json:"links"`
}

type startResult struct {
	Outcome   string  `json:"outcome"`
	Run       run     `json:"run"`
	Reason    *reason `json:"reason"`
	NextSteps []struct {
		Label  string  `json:"label"`
		Action string  `json:"action"`
		Href   *string `json:"href"`
	} `json:"next_steps"`
	Message struct {
		Title string `json:"title"`
		Body  string `json:"body"`
		Tone  string `json:"tone"`
	} `json:"message"`
}

// expectStart checks r is a StartResult with outcome and its status code.
func expectStart(t *testing.T, r reply, outcome string) startResult {
	t.Helper()
	want := map[string]int{"accepted": 202, "deduped": 200, "scope_busy": 409, "blocked": 422}[outcome]
	if r.Status != want {
		t.Fatalf("%s: want %d (%s)", r, want, outcome)
	}
	var res startResult
	r.Decode(t, &res)
	if res.Outcome != outcome || res.Run.ID == "" || res.Message.Title == "" {
		t.Fatalf("%s: want outcome %s with a run and a message", r, outcome)
	}
	if outcome == "accepted" && (res.Reason != nil || res.Run.Status != "queued") {
		t.Fatalf("%s: an accepted start has no reason and a queued run", r)
	}
	if outcome != "accepted" && (res.Reason == nil || len(res.NextSteps) == 0) {
		t.Fatalf("%s: want a reason and next steps", r)
	}
	return res
}

type attempt struct {
	RunID   string  `json:"run_id"`
	Outcome string  `json:"outcome"`
	Reason  *reason `json:"reason"`
	Links   struct {
		Self string `json:"self"`
	} `json:"links"`
}

type item struct {
	Index         int       `json:"index"`
	Type          string    `json:"type"`
	CanonicalType string    `json:"canonical_type"`
	Status        string    `json:"status"`
	RunID         *string   `json:"run_id"`
	LastOutcome   *string   `json:"last_outcome"`
	LastRunStatus *string   `json:"last_run_status"`
	LastReason    *reason   `json:"last_reason"`
	Attempts      []attempt `json:"attempts"`
}

type session struct {
	ID                   string  `json:"id"`
	TenantID             string  `json:"tenant_id"`
	ProviderConnectionID *string `json:"provider_connection_id"`
	Status               string  `json:"status"`
	Steps                struct {
		Verification struct {
			Status   string    `json:"status"`
			Attempts []attempt `json:"attempts"`
		} `json:"verification"`
		Bootstrap struct {
			Status      string   `json:"status"`
			InitiatorID *string  `json:"initiator_id"`
			Items       []item   `json:"items"`
			Pending     []string `json:"pending"`
		} `json:"bootstrap"`
	} `json:"steps"`
}

func (s session) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// admitted counts the session's admitted items.
func (s session) admitted() int {
	n := 0
	for _, it := range s.Steps.Bootstrap.Items {
		if it.Status == "admitted" {
			n++
		}
	}
	return n
}

// user is a user and its token.
type user struct{ ID, Token string }

// fixture is a test's world: its database, a harness serving it (replaced
// on restart), and, created over HTTP, tenant A with an owner, an operator
// and a readonly member, and tenant B whose owner (outsider) is no member
// of A.
type fixture struct {
	dbURL string
	// db observes the write side directly, independent of any harness.
	db       *pgxpool.Pool
	h        *harness
	tenant   string
	tenantB  string
	owner    user
	operator user
	readonly user
	outsider user
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

	var ws struct{ ID string }
	f.h.must(t, 201, "POST", "/api/v1/admin/workspaces", adminToken, map[string]any{"name": "MSP"}, &ws)
	f.tenant = f.newTenant(t, ws.ID, "Contoso")
	f.tenantB = f.newTenant(t, ws.ID, "Fabrikam")
	f.owner = f.newUser(t, "owner", f.tenant, "owner")
	f.operator = f.newUser(t, "operator", f.tenant, "operator")
	f.readonly = f.newUser(t, "readonly", f.tenant, "readonly")
	f.outsider = f.newUser(t, "outsider", f.tenantB, "owner")
	return f
}

func (f *fixture) newTenant(t *testing.T, workspace, name string) string {
	t.Helper()
	var tn struct{ ID string }
	f.h.must(t, 201, "POST", "/api/v1/admin/tenants", adminToken, map[string]any{"workspace_id": workspace, "name": name}, &tn)
	return tn.ID
}

func (f *fixture) newUser(t *testing.T, name, tenant, role string) user {
	t.Helper()
	var u struct{ ID, Token string }
	f.h.must(t, 201, "POST", "/api/v1/admin/users", adminToken,
		map[string]any{"email": name + "@example.test", "name": name}, &u)
	if u.Token == "" {
		t.Fatalf("user %s: no token", name)
	}
	f.h.must(t, 201, "POST", "/api/v1/admin/memberships", adminToken,
		map[string]any{"user_id": u.ID, "tenant_id": tenant, "role": role}, nil)
	return user{ID: u.ID, Token: u.Token}
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
	f.h.must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/provider-connections", f.owner.Token, map[string]any{
		"provider": "simulated", "display_name": name, "is_default": isDefault,
		"consent": consent, "credentials": "valid", "enabled": true,
		"simulation": map[string]any{"latency_ms": latencyMS, "fail_with": nil},
	}, &c)
	return c.ID
}

// simulate sets a connection's simulation settings.
func (f *fixture) simulate(t *testing.T, conn string, latencyMS int, failWith any) {
	t.Helper()
	f.h.must(t, 200, "PATCH", "/api/v1/provider-connections/"+conn, f.owner.Token, map[string]any{
		"simulation": map[string]any{"latency_ms": latencyMS, "fail_with": failWith},
	}, nil)
}

// newSession opens an onboarding session of tenant A on conn.
func (f *fixture) newSession(t *testing.T, conn string) string {
	t.Helper()
	var s session
	f.h.must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/onboarding-sessions", f.owner.Token,
		map[string]any{"provider_connection_id": conn}, &s)
	if s.ID == "" || s.Status != "open" || s.Steps.Bootstrap.Status != "not_started" || s.Steps.Verification.Status != "not_run" {
		t.Fatalf("new session: %s", s)
	}
	return s.ID
}

func (f *fixture) session(t *testing.T, id string) session {
	t.Helper()
	var s session
	f.h.must(t, 200, "GET", "/api/v1/onboarding-sessions/"+id, f.owner.Token, nil, &s)
	return s
}

func (f *fixture) bootstrap(t *testing.T, sessionID, token string, ops ...string) reply {
	t.Helper()
	if ops == nil {
		ops = []string{}
	}
	return f.h.call(t, "POST", "/api/v1/onboarding-sessions/"+sessionID+"/bootstrap", token, map[string]any{"operations": ops})
}

func (f *fixture) continueBootstrap(t *testing.T, sessionID, token string) reply {
	t.Helper()
	return f.h.call(t, "POST", "/api/v1/onboarding-sessions/"+sessionID+"/bootstrap/continue", token, nil)
}

// operation reads a run over the monitoring API; it waits for the run to
// be there (read-your-writes is bounded, see the report).
func (f *fixture) operation(t *testing.T, id string) run {
	t.Helper()
	var r run
	eventually(t, 30*time.Second, "run "+id+" in monitoring", func() (bool, string) {
		rep := f.h.call(t, "GET", "/api/v1/operations/"+id, f.owner.Token, nil)
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
func (f *fixture) waitOperation(t *testing.T, id, status string, timeout time.Duration) run {
	t.Helper()
	var r run
	eventually(t, timeout, "run "+id+" "+status, func() (bool, string) {
		r = f.operation(t, id)
		return r.Status == status, fmt.Sprintf("%+v", r)
	})
	return r
}

// waitSession waits until cond holds for the session.
func (f *fixture) waitSession(t *testing.T, id string, timeout time.Duration, what string, cond func(session) bool) session {
	t.Helper()
	var s session
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

// auditCount counts tenant A's events over the audit API, as its owner,
// once the audit trail shows every event committed for the tenant (the
// trail only shows events below the cluster-wide snapshot xmin, so it may
// lag while any older transaction of the PostgreSQL server is open).
func (f *fixture) auditCount(t *testing.T) int {
	t.Helper()
	n := 0
	eventually(t, 30*time.Second, "the audit trail caught up", func() (bool, string) {
		var committed int
		if err := f.db.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenant).Scan(&committed); err != nil {
			t.Fatalf("count events: %v", err)
		}
		n = len(f.audit(t))
		return n == committed, fmt.Sprintf("audit shows %d of %d committed events", n, committed)
	})
	return n
}

// auditEvent is an event of the audit trail.
type auditEvent struct {
	Position int64           `json:"position"`
	Stream   string          `json:"stream"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
}

// audit reads tenant A's audit trail over HTTP, as its owner.
func (f *fixture) audit(t *testing.T) []auditEvent {
	t.Helper()
	var all []auditEvent
	after := ""
	for {
		var page struct {
			Items     []auditEvent `json:"items"`
			NextAfter *int64       `json:"next_after"`
		}
		f.h.must(t, 200, "GET", "/api/v1/audit/events?tenant_id="+f.tenant+"&limit=200"+after, f.owner.Token, nil, &page)
		all = append(all, page.Items...)
		if page.NextAfter == nil {
			return all
		}
		after = fmt.Sprintf("&after=%d", *page.NextAfter)
	}
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

func strp(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
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
