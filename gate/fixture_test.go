package gate_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/restores"
)

// newGate starts the application of a gate test on a fresh database, with
// no role running (the tests drive the gate themselves), and creates a
// team on it.
func newGate(t testing.TB, opts ...apptest.Option) (*apptest.App, apptest.Team) {
	t.Helper()
	a := apptest.Start(t, append([]apptest.Option{apptest.Roles(app.Roles{})}, opts...)...)
	return a, a.Team(t)
}

// queued creates a ready connection "Graph" on the team's tenant and an
// inventory sync of the operator accepted on it.
func queued(t testing.TB, a *apptest.App, tm apptest.Team) (connections.Connection, domain.Run) {
	t.Helper()
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)).Run
	return conn, run
}

// queuedWork is the number of runs ever queued for execution: one per
// acceptance, whatever became of the run since.
func queuedWork(t testing.TB, a *apptest.App) int {
	t.Helper()
	return a.Count(t, `SELECT count(*) FROM events WHERE event_type = 'StartAccepted'`)
}

// runRow is a run as the runs table knows it.
type runRow struct {
	ScopeID, TenantID, Type, Surface, Status string
	Epoch                                    int64
}

func runRowOf(t testing.TB, a *apptest.App, id string) runRow {
	t.Helper()
	var r runRow
	err := a.Pool.QueryRow(a.Ctx, `SELECT scope_id, tenant_id, type, surface, status, epoch FROM runs WHERE id = $1`, id).
		Scan(&r.ScopeID, &r.TenantID, &r.Type, &r.Surface, &r.Status, &r.Epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("run %s has no runs row", id)
	}
	if err != nil {
		t.Fatalf("runs row %s: %v", id, err)
	}
	return r
}

// scopeOf returns a scope's snapshot and version (0 and the zero state if
// the scope has none).
func scopeOf(t testing.TB, a *apptest.App, id domain.ScopeID) (domain.ScopeState, int64) {
	t.Helper()
	var state domain.ScopeState
	var version int64
	err := a.Pool.QueryRow(a.Ctx, `SELECT version, state FROM scopes WHERE scope_id = $1`, string(id)).Scan(&version, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return state, 0
	}
	if err != nil {
		t.Fatalf("scope %s: %v", id, err)
	}
	return state, version
}

// activeRunID is the id of the run holding a scope, "" when it is free.
func activeRunID(t testing.TB, a *apptest.App, id domain.ScopeID) string {
	t.Helper()
	state, _ := scopeOf(t, a, id)
	if state.Active == nil {
		return ""
	}
	return state.Active.RunID
}

// createRestoreRun drafts a restore run on tenantID as ownerID, who must
// own that tenant.
func createRestoreRun(t testing.TB, a *apptest.App, ownerID, tenantID, items string) restores.RestoreRun {
	t.Helper()
	r, err := a.Restores.Create(a.Ctx, apptest.As(ownerID), tenantID, "restore", json.RawMessage(items))
	if err != nil {
		t.Fatalf("create restore run: %v", err)
	}
	return r
}

// previewRestoreRun previews restore run id as ownerID.
func previewRestoreRun(t testing.TB, a *apptest.App, ownerID, id string) restores.RestoreRun {
	t.Helper()
	r, err := a.Restores.Preview(a.Ctx, apptest.As(ownerID), id)
	if err != nil {
		t.Fatalf("preview restore run: %v", err)
	}
	return r
}

func ptr[T any](v T) *T { return &v }
