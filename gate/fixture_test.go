package gate_test

import (
	"context"
	"errors"
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
)

// worker is the actor of the results the tests record.
var worker = domain.ActorWorker("test")

// fixture is one fresh application (no roles running: the tests drive the
// gate themselves) with a workspace, a tenant and a user in each role on
// it, plus an outsider who is a member of no tenant.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	app   *apptest.App
	pool  *pgxpool.Pool
	svc   *gate.Service
	store *eventstore.Store

	workspace tenancy.Workspace
	tenant    tenancy.Tenant

	owner, operator, auditor, readonly, outsider string
}

// newFixture returns a fixture on a fresh database.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, apptest.Start(t, apptest.Roles(app.Roles{})))
}

// newFixtureOn returns a fixture on a, whose database must be fresh.
func newFixtureOn(t testing.TB, a *apptest.App) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: a.Ctx, app: a, pool: a.Pool, svc: a.Gate, store: a.Store}
	f.workspace = a.Workspace("Contoso MSP")
	f.tenant = f.newTenant("Fabrikam")
	f.owner = f.newUser("owner", f.tenant.ID, domain.RoleOwner)
	f.operator = f.newUser("operator", f.tenant.ID, domain.RoleOperator)
	f.auditor = f.newUser("auditor", f.tenant.ID, domain.RoleAuditor)
	f.readonly = f.newUser("readonly", f.tenant.ID, domain.RoleReadonly)
	f.outsider = f.newUser("outsider", "", "")
	return f
}

// on returns the fixture for use by subtest t.
func (f *fixture) on(t testing.TB) *fixture {
	g := *f
	g.t = t
	return &g
}

// newTenant creates a tenant in the fixture's workspace.
func (f *fixture) newTenant(name string) tenancy.Tenant {
	f.t.Helper()
	return f.app.On(f.t).Tenant(f.workspace.ID, name)
}

// newUser creates a user and, when tenantID is set, grants it role there.
func (f *fixture) newUser(name, tenantID string, role domain.Role) string {
	f.t.Helper()
	u := f.app.On(f.t).User(name)
	if tenantID != "" {
		f.grant(u.ID, tenantID, role)
	}
	return u.ID
}

func (f *fixture) grant(userID, tenantID string, role domain.Role) {
	f.t.Helper()
	f.app.On(f.t).Grant(userID, tenantID, role)
}

// connection creates a ready simulated connection on the fixture's tenant
// (consent granted, credentials valid, enabled, not default); change
// adjusts the request first.
func (f *fixture) connection(name string, change ...func(*connections.NewConnection)) connections.Connection {
	f.t.Helper()
	return f.connectionOn(f.tenant.ID, name, change...)
}

func (f *fixture) connectionOn(tenantID, name string, change ...func(*connections.NewConnection)) connections.Connection {
	f.t.Helper()
	return f.app.On(f.t).Connection(f.owner, tenantID, name, change...)
}

// Connection request tweaks.
var (
	asDefault   = apptest.AsDefault
	disabled    = apptest.Disabled
	consent     = apptest.Consent
	credentials = apptest.Credentials
)

// Starts of the connection- and tenant-scoped surfaces.
var (
	connStart   = apptest.ConnStart
	tenantStart = apptest.TenantStart
)

// start runs req through the gate and fails the test on an error.
func (f *fixture) start(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	resp := f.app.On(f.t).Start(req)
	if resp.Replayed {
		f.t.Fatalf("start %s: unexpected replay", req.Surface.Name)
	}
	return resp.Result
}

// accept starts req and fails the test unless it was accepted.
func (f *fixture) accept(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	return f.app.On(f.t).Expect(domain.OutcomeAccepted, req)
}

// stream returns the events of a stream.
func (f *fixture) stream(id string) []eventstore.Event { return f.app.On(f.t).Stream(id) }

// decode returns the typed payload of e.
func (f *fixture) decode(e eventstore.Event) eventstore.Payload { return f.app.On(f.t).Decode(e) }

// eventCount is the number of events in the store.
func (f *fixture) eventCount() int {
	f.t.Helper()
	return f.count(`SELECT count(*) FROM events`)
}

// queuedWork is the number of runs ever queued for execution: one per
// acceptance, whatever became of the run since.
func (f *fixture) queuedWork() int {
	f.t.Helper()
	return f.count(`SELECT count(*) FROM events WHERE event_type = 'StartAccepted'`)
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// runRow is a run as the runs table knows it.
type runRow struct {
	ScopeID, TenantID, Type, Surface, Status string
	Epoch                                    int64
}

func (f *fixture) runRow(id string) runRow {
	f.t.Helper()
	var r runRow
	err := f.pool.QueryRow(f.ctx, `SELECT scope_id, tenant_id, type, surface, status, epoch FROM runs WHERE id = $1`, id).
		Scan(&r.ScopeID, &r.TenantID, &r.Type, &r.Surface, &r.Status, &r.Epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		f.t.Fatalf("run %s has no runs row", id)
	}
	if err != nil {
		f.t.Fatalf("runs row %s: %v", id, err)
	}
	return r
}

// scope returns a scope's snapshot and version (0 and the zero state if
// the scope has none).
func (f *fixture) scope(id domain.ScopeID) (domain.ScopeState, int64) {
	f.t.Helper()
	var state domain.ScopeState
	var version int64
	err := f.pool.QueryRow(f.ctx, `SELECT version, state FROM scopes WHERE scope_id = $1`, string(id)).Scan(&version, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return state, 0
	}
	if err != nil {
		f.t.Fatalf("scope %s: %v", id, err)
	}
	return state, version
}

// activeRunID is the id of the run holding a scope, "" when it is free.
func (f *fixture) activeRunID(id domain.ScopeID) string {
	f.t.Helper()
	state, _ := f.scope(id)
	if state.Active == nil {
		return ""
	}
	return state.Active.RunID
}

// waitFor polls cond until it holds, failing the test at the deadline.
var waitFor = apptest.WaitFor

// beat heartbeats claim's lease (whoever holds it).
func (f *fixture) beat(c gate.Claim, lease time.Duration) error {
	_, err := f.svc.Heartbeat(f.ctx, gate.Claimant{}, c.RunID, c.Epoch, lease)
	return err
}
