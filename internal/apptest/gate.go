package apptest

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
)

// ConnStart is a start of actor from a connection-scoped surface.
func ConnStart(actor string, surface domain.Surface, connectionID string) gate.StartRequest {
	return gate.StartRequest{Actor: As(actor), Surface: surface, ConnectionID: connectionID}
}

// TenantStart is a start of actor from a tenant-scoped surface;
// connectionID "" uses the tenant's default.
func TenantStart(actor string, surface domain.Surface, tenantID, connectionID string) gate.StartRequest {
	return gate.StartRequest{Actor: As(actor), Surface: surface, TenantID: tenantID, ConnectionID: connectionID}
}

// Start runs req through the gate and returns its result, failing the
// test on an error or on a replayed answer (requests with an idempotency
// key go through a.Gate.Start).
func (a *App) Start(t testing.TB, req gate.StartRequest) domain.StartResult {
	t.Helper()
	resp, err := a.Gate.Start(a.Ctx, req)
	if err != nil {
		t.Fatalf("start %s: %v", req.Surface.Name, err)
	}
	if resp.Replayed {
		t.Fatalf("start %s: unexpected replay", req.Surface.Name)
	}
	return resp.Result
}

// Expect runs req through the gate (as Start) and fails the test unless
// the outcome is want.
func (a *App) Expect(t testing.TB, want domain.Outcome, req gate.StartRequest) domain.StartResult {
	t.Helper()
	res := a.Start(t, req)
	if res.Outcome != want {
		t.Fatalf("start %s: outcome %s (reason %+v), want %s", req.Surface.Name, res.Outcome, res.Reason, want)
	}
	return res
}

// Stream returns the events of a stream, in version order.
func (a *App) Stream(t testing.TB, id string) []eventstore.Event {
	t.Helper()
	events, err := a.Store.ReadStream(a.Ctx, id, 1)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return events
}

// RunEvents returns the events recorded for a run, in commit order.
func (a *App) RunEvents(t testing.TB, runID string) []eventstore.Event {
	t.Helper()
	events, err := a.Store.ReadCorrelated(a.Ctx, runID, 10_000)
	if err != nil {
		t.Fatalf("events of %s: %v", runID, err)
	}
	return events
}

// Decode returns the typed payload of e.
func (a *App) Decode(t testing.TB, e eventstore.Event) eventstore.Payload {
	t.Helper()
	p, err := a.Store.Registry().Decode(e)
	if err != nil {
		t.Fatalf("decode %s: %v", e.Type, err)
	}
	return p
}

// Types returns the types of events, in order.
func Types(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// Count runs a query for one integer.
func (a *App) Count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := a.Pool.QueryRow(a.Ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// RunStatus is a run's status in the write side's runs table.
func (a *App) RunStatus(t testing.TB, runID string) domain.RunStatus {
	t.Helper()
	var s string
	err := a.Pool.QueryRow(a.Ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("run %s has no runs row", runID)
	}
	if err != nil {
		t.Fatalf("status of run %s: %v", runID, err)
	}
	return domain.RunStatus(s)
}
