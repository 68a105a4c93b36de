package gate_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// testTimeout bounds every database call of a test, so that a deadlock
// fails the test instead of hanging the package.
const testTimeout = 2 * time.Minute

// newService builds a gate over pool the way the application wires it.
func newService(pool *pgxpool.Pool) *gate.Service {
	store := eventstore.New(pool, gate.NewRegistry(), eventstore.WithRoute(gate.Route))
	return gate.New(store)
}

// fixture is one fresh database with a workspace, a tenant and a user in
// each role on it, plus an outsider who is a member of no tenant.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	pool  *pgxpool.Pool
	svc   *gate.Service
	store *eventstore.Store

	workspace gate.Workspace
	tenant    gate.Tenant

	owner, operator, auditor, readonly, outsider string
}

var fixtureSeq atomic.Int64

// newFixture returns a fixture on a fresh migrated database.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, pgtest.Connect(t, freshDatabase(t)))
}

// freshDatabase returns the URL of a fresh migrated database, dropped when
// the test ends.
func freshDatabase(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t)
}

// newFixtureOn returns a fixture on pool, whose database must be fresh.
func newFixtureOn(t testing.TB, pool *pgxpool.Pool) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	svc := newService(pool)
	f := &fixture{t: t, ctx: ctx, pool: pool, svc: svc, store: svc.Store()}
	var err error
	if f.workspace, err = svc.CreateWorkspace(ctx, "Contoso MSP"); err != nil {
		t.Fatalf("create workspace: %v", err)
	}
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
func (f *fixture) newTenant(name string) gate.Tenant {
	f.t.Helper()
	tenant, err := f.svc.CreateTenant(f.ctx, f.workspace.ID, name)
	if err != nil {
		f.t.Fatalf("create tenant %s: %v", name, err)
	}
	return tenant
}

// newUser creates a user and, when tenantID is set, grants it role there.
func (f *fixture) newUser(name, tenantID string, role domain.Role) string {
	f.t.Helper()
	n := fixtureSeq.Add(1)
	u, err := f.svc.CreateUser(f.ctx, fmt.Sprintf("%s-%d@example.test", name, n), name)
	if err != nil {
		f.t.Fatalf("create user %s: %v", name, err)
	}
	if tenantID != "" {
		f.grant(u.ID, tenantID, role)
	}
	return u.ID
}

func (f *fixture) grant(userID, tenantID string, role domain.Role) {
	f.t.Helper()
	if _, err := f.svc.GrantMembership(f.ctx, userID, tenantID, string(role)); err != nil {
		f.t.Fatalf("grant %s on %s: %v", role, tenantID, err)
	}
}

// connection creates a ready simulated connection on the fixture's tenant
// (consent granted, credentials valid, enabled, not default); change
// adjusts the request first.
func (f *fixture) connection(name string, change ...func(*gate.NewConnection)) gate.Connection {
	f.t.Helper()
	return f.connectionOn(f.tenant.ID, name, change...)
}

func (f *fixture) connectionOn(tenantID, name string, change ...func(*gate.NewConnection)) gate.Connection {
	f.t.Helper()
	in := gate.NewConnection{
		Provider: gate.ProviderSimulated, DisplayName: name,
		Consent: domain.ConsentGranted, Credentials: domain.CredentialsValid, Enabled: true,
	}
	for _, c := range change {
		c(&in)
	}
	c, err := f.svc.CreateConnection(f.ctx, f.owner, tenantID, in)
	if err != nil {
		f.t.Fatalf("create connection %s: %v", name, err)
	}
	return c
}

// Connection request tweaks.
func asDefault(in *gate.NewConnection) { in.IsDefault = true }
func disabled(in *gate.NewConnection)  { in.Enabled = false }
func consent(v string) func(*gate.NewConnection) {
	return func(in *gate.NewConnection) { in.Consent = v }
}
func credentials(v string) func(*gate.NewConnection) {
	return func(in *gate.NewConnection) { in.Credentials = v }
}

// connStart is a start from a connection-scoped surface.
func connStart(actor string, surface domain.Surface, connectionID string) gate.StartRequest {
	return gate.StartRequest{ActorID: actor, Surface: surface, ConnectionID: connectionID}
}

// tenantStart is a start from a tenant-scoped surface; connectionID "" uses
// the tenant's default.
func tenantStart(actor string, surface domain.Surface, tenantID, connectionID string) gate.StartRequest {
	return gate.StartRequest{ActorID: actor, Surface: surface, TenantID: tenantID, ConnectionID: connectionID}
}

// start runs req through the gate and fails the test on an error.
func (f *fixture) start(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	resp, err := f.svc.Start(f.ctx, req)
	if err != nil {
		f.t.Fatalf("start %s: %v", req.Surface.Name, err)
	}
	if resp.Replayed {
		f.t.Fatalf("start %s: unexpected replay", req.Surface.Name)
	}
	return resp.Result
}

// accept starts req and fails the test unless it was accepted.
func (f *fixture) accept(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	res := f.start(req)
	if res.Outcome != domain.OutcomeAccepted {
		f.t.Fatalf("start %s: outcome %s (%+v), want accepted", req.Surface.Name, res.Outcome, res.Reason)
	}
	return res
}

// stream returns the events of a stream.
func (f *fixture) stream(id string) []eventstore.Event {
	f.t.Helper()
	events, err := f.store.ReadStream(f.ctx, id, 1)
	if err != nil {
		f.t.Fatalf("read %s: %v", id, err)
	}
	return events
}

// decode returns the typed payload of e.
func (f *fixture) decode(e eventstore.Event) eventstore.Payload {
	f.t.Helper()
	p, err := f.store.Registry().Decode(e)
	if err != nil {
		f.t.Fatalf("decode %s: %v", e.Type, err)
	}
	return p
}

// eventCount is the number of events in the store.
func (f *fixture) eventCount() int {
	f.t.Helper()
	return f.count(`SELECT count(*) FROM events`)
}

// queuedWork is the number of messages the worker would pick up.
func (f *fixture) queuedWork() int {
	f.t.Helper()
	return f.count(`SELECT count(*) FROM watermill_starts_accepted`)
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
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
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
