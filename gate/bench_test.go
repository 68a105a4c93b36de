package gate_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// BenchmarkDecision measures one start decision (a deduped Start, which
// locks the scope, reads its snapshot, appends and saves it) on a scope
// with a short and with a long history: with the snapshot the cost must
// not grow with the history.
func BenchmarkDecision(b *testing.B) {
	for _, history := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			a, tm := newGate(b)
			conn := a.Connection(b, tm.Owner.ID, tm.Tenant.ID, "Graph")
			scope := domain.ConnectionScope(conn.ID)
			seedHistory(b, a, tm, scope, history)

			// One accepted start holds the scope; every measured start is deduped on it.
			req := apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)
			held := a.Expect(b, domain.OutcomeAccepted, req)
			for b.Loop() {
				resp, err := a.Gate.Start(a.Ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if resp.Result.Outcome != domain.OutcomeDeduped || resp.Result.Run.ID != held.Run.ID {
					b.Fatalf("outcome %s -> %s, want deduped -> %s", resp.Result.Outcome, resp.Result.Run.ID, held.Run.ID)
				}
			}
		})
	}
}

// seedHistory writes n earlier decisions (StartDeduped events pointing at
// a long finished run) straight into scope's stream and sets the scope's
// snapshot to agree: free, at version n.
func seedHistory(t testing.TB, a *apptest.App, tm apptest.Team, scope domain.ScopeID, n int) {
	t.Helper()
	payload, err := json.Marshal(domain.StartDeduped{RunID: "01HISTORICRUN0000000000000", StartInfo: domain.StartInfo{
		TenantID: tm.Tenant.ID, ScopeID: scope, Type: domain.OpInventorySync, CanonicalType: "inventory.sync",
		Label: "Inventory sync", Surface: "inventory_sync", InitiatorID: tm.Operator.ID,
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Pool.Exec(a.Ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
		SELECT $1, g, 'Z' || lpad(g::text, 25, '0'), 'StartDeduped', 1, $2, $3, '{}'::jsonb
		FROM generate_series(1, $4::bigint) AS g`, string(scope), tm.Tenant.ID, payload, n)
	if err != nil {
		t.Fatalf("seed history: %v", err)
	}
	_, err = a.Pool.Exec(a.Ctx, `INSERT INTO scopes (scope_id, tenant_id, version, state) VALUES ($1, $2, $3, '{}')`,
		string(scope), tm.Tenant.ID, n)
	if err != nil {
		t.Fatalf("seed snapshot: %v", err)
	}
	if _, err := a.Pool.Exec(a.Ctx, `ANALYZE events`); err != nil {
		t.Fatalf("analyze: %v", err)
	}
	if got := len(a.Stream(t, string(scope))); got != n {
		t.Fatalf("seeded %d events, want %d", got, n)
	}
}

// The seeded history is consistent with what the gate reads: the next
// decision lands at version n+1.
func TestSeededHistoryIsConsistent(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	scope := domain.ConnectionScope(conn.ID)
	seedHistory(t, a, tm, scope, 10)
	res := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))
	events := a.Stream(t, string(scope))
	if len(events) != 11 || events[10].Type != "StartAccepted" || events[10].StreamVersion != 11 {
		t.Fatalf("stream = %v, want 10 seeded events and the decision at version 11", apptest.Types(events))
	}
	if _, ok := a.Decode(t, events[0]).(domain.StartDeduped); !ok {
		t.Errorf("seeded event does not decode as StartDeduped")
	}
	if got := activeRunID(t, a, scope); got != res.Run.ID {
		t.Errorf("scope held by %q, want %s", got, res.Run.ID)
	}
}
