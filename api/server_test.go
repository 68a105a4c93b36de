package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// server returns a server of t's own: an application of the test kit
// serving the API, its projectors running but no worker (accepted runs
// stay queued and keep their scope busy).
func server(t *testing.T) *apptest.App {
	t.Helper()
	return privateServer(t, true)
}

// privateServer is a server for t, with or without projectors (without
// them it is an api-only process whose projectors are down or behind).
func privateServer(t *testing.T, projectors bool) *apptest.App {
	t.Helper()
	return apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: projectors}),
		apptest.Configure(func(c *config.Config) { c.ReadYourWritesWait = 2 * time.Second }))
}

// echoOf is the echo instance serving a's API, for its routes.
func echoOf(a *apptest.App) *echo.Echo { return a.Handler.(*echo.Echo) }

func randomID() string { return ulid.Make().String() }

// user is a user and its token.
type user struct {
	ID, Token, Name string
}

// fixture is a server with, created over HTTP: a workspace; tenant A with
// an owner, operator, auditor and readonly member and a ready default
// connection; tenant B whose owner (outsider) is no member of A, with a
// ready default connection; and tenant C with no connection at all.
type fixture struct {
	*apptest.App
	// exclusive: no other test runs meanwhile (the test is not parallel).
	exclusive                                    bool
	workspace                                    string
	tenantA, tenantB, tenantC                    string
	owner, operator, auditor, readonly, outsider user
	connA, connB                                 string
}

var userSeq atomic.Int64

// newExclusiveFixture is newFixture for a test that does not call
// t.Parallel, so that it may also check that nothing at all was recorded.
func newExclusiveFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.exclusive = true
	return f
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, server(t))
}

func newFixtureOn(t *testing.T, s *apptest.App) *fixture {
	t.Helper()
	f := &fixture{App: s}
	var ws struct{ ID string }
	s.Must(t, 201, "POST", "/api/v1/admin/workspaces", apptest.AdminToken, map[string]any{"name": "Contoso MSP"}, &ws)
	f.workspace = ws.ID
	f.tenantA = f.newTenant(t, "Fabrikam")
	f.tenantB = f.newTenant(t, "Northwind")
	f.tenantC = f.newTenant(t, "Tailspin")
	f.owner = f.newUser(t, "owner", f.tenantA, "owner")
	f.operator = f.newUser(t, "operator", f.tenantA, "operator")
	f.auditor = f.newUser(t, "auditor", f.tenantA, "auditor")
	f.readonly = f.newUser(t, "readonly", f.tenantA, "readonly")
	f.grant(t, f.owner.ID, f.tenantC, "owner")
	f.outsider = f.newUser(t, "outsider", f.tenantB, "owner")
	f.connA = f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Graph A", Default: true})
	f.connB = f.newConnection(t, f.tenantB, f.outsider.Token, conn{Name: "Graph B", Default: true})
	return f
}

func (f *fixture) newTenant(t *testing.T, name string) string {
	t.Helper()
	var tn struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/admin/tenants", apptest.AdminToken, map[string]any{"workspace_id": f.workspace, "name": name}, &tn)
	return tn.ID
}

// newUser creates a user with role on tenant (none when tenant is "").
func (f *fixture) newUser(t *testing.T, name, tenant, role string) user {
	t.Helper()
	var u struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	email := fmt.Sprintf("%s-%d@example.test", name, userSeq.Add(1))
	f.Must(t, 201, "POST", "/api/v1/admin/users", apptest.AdminToken, map[string]any{"email": email, "name": name}, &u)
	if u.Token == "" {
		t.Fatalf("user %s: no token in the answer", name)
	}
	if tenant != "" {
		f.grant(t, u.ID, tenant, role)
	}
	return user{ID: u.ID, Token: u.Token, Name: name}
}

func (f *fixture) grant(t *testing.T, userID, tenant, role string) {
	t.Helper()
	f.Must(t, 201, "POST", "/api/v1/admin/memberships", apptest.AdminToken,
		map[string]any{"user_id": userID, "tenant_id": tenant, "role": role}, nil)
}

// conn describes a connection to create; zero values make a ready one.
type conn struct {
	Provider    string // simulated unless set
	Name        string
	Default     bool
	Consent     string // granted unless set
	Credentials string // valid unless set
	Disabled    bool
}

func (f *fixture) newConnection(t *testing.T, tenant, token string, c conn) string {
	t.Helper()
	if c.Consent == "" {
		c.Consent = "granted"
	}
	if c.Credentials == "" {
		c.Credentials = "valid"
	}
	if c.Name == "" {
		c.Name = "Graph " + strconv.FormatInt(userSeq.Add(1), 10)
	}
	if c.Provider == "" {
		c.Provider = "simulated"
	}
	var out struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/tenants/"+tenant+"/provider-connections", token, map[string]any{
		"provider": c.Provider, "display_name": c.Name, "is_default": c.Default,
		"consent": c.Consent, "credentials": c.Credentials, "enabled": !c.Disabled,
	}, &out)
	return out.ID
}

// newRestoreRun drafts a restore run on tenant A, previewed when asked.
func (f *fixture) newRestoreRun(t *testing.T, items string, preview bool) string {
	t.Helper()
	var r struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenantA+"/restore-runs", f.owner.Token,
		json.RawMessage(`{"name":"Mailbox restore","items":`+items+`}`), &r)
	if preview {
		f.Must(t, 200, "POST", "/api/v1/restore-runs/"+r.ID+"/preview", f.owner.Token, nil, nil)
	}
	return r.ID
}

// unchanged runs fn and fails if it recorded any event of tenant A, in
// the store and through the audit API; for a fixture of a test that runs
// alone (newExclusiveFixture), any event at all.
func (f *fixture) unchanged(t *testing.T, what string, fn func()) {
	t.Helper()
	before := f.Count(t, `SELECT count(*) FROM events`)
	audit := len(f.AuditTrail(t, f.tenantA, f.owner.Token))
	fn()
	if after := f.Count(t, `SELECT count(*) FROM events`); after != before && f.exclusive {
		t.Errorf("%s recorded %d event(s)", what, after-before)
	}
	if got := len(f.AuditTrail(t, f.tenantA, f.owner.Token)); got != audit {
		t.Errorf("%s: tenant A's audit trail went from %d to %d events", what, audit, got)
	}
}

// waitRun waits until run id can be read; tests that are not about
// read-your-writes use it before they act on a run they just started.
func (f *fixture) waitRun(t *testing.T, id string, token ...string) {
	t.Helper()
	tok := f.owner.Token
	if len(token) > 0 {
		tok = token[0]
	}
	apptest.WaitFor(t, 30*time.Second, "run "+id+" to be readable", func() bool {
		return f.Send(t, "GET", "/api/v1/operations/"+id, tok, nil).Status == 200
	})
}

// horizonHolders lists the transactions of the whole cluster that hold a
// transaction id for more than 200ms. The event store's readers only see
// events below the oldest of them (pg_snapshot_xmin), whatever database
// it runs in, so these explain a projector or the audit API lagging.
func (f *fixture) horizonHolders() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := f.Pool.Query(ctx, `SELECT coalesce(datname, ''), state, extract(epoch FROM now() - xact_start)::float8,
		left(regexp_replace(query, '\s+', ' ', 'g'), 80)
		FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND now() - xact_start > interval '200 milliseconds'
		ORDER BY xact_start`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var db, state, query string
		var age float64
		if rows.Scan(&db, &state, &age, &query) == nil {
			out = append(out, fmt.Sprintf("  db=%s %s for %.2fs: %s", db, state, age, query))
		}
	}
	if len(out) == 0 {
		return "  (none now)"
	}
	return strings.Join(out, "\n")
}

// foreignHorizonHolders is horizonHolders limited to other databases.
func (f *fixture) foreignHorizonHolders() string {
	var own string
	_ = f.Pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&own)
	var out []string
	for _, l := range strings.Split(f.horizonHolders(), "\n") {
		if strings.HasPrefix(l, "  db=") && !strings.HasPrefix(l, "  db="+own+" ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
