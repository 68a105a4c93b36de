package gate_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/opsgate/opsgate/domain"
)

// BenchmarkDecision measures one start decision (a deduped Start, which
// locks the scope, reads its snapshot, appends and saves it) on a scope
// with a short and with a long history: with the snapshot the cost must
// not grow with the history.
func BenchmarkDecision(b *testing.B) {
	for _, history := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			f := newFixture(b)
			conn := f.connection("Graph")
			scope := domain.ConnectionScope(conn.ID)
			f.seedHistory(scope, history)

			// One accepted start holds the scope; every measured start is deduped on it.
			req := connStart(f.operator, domain.SurfaceInventorySync, conn.ID)
			held := f.accept(req)
			for b.Loop() {
				resp, err := f.svc.Start(f.ctx, req)
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
func (f *fixture) seedHistory(scope domain.ScopeID, n int) {
	f.t.Helper()
	payload, err := json.Marshal(domain.StartDeduped{RunID: "01HISTORICRUN0000000000000", StartInfo: domain.StartInfo{
		TenantID: f.tenant.ID, ScopeID: scope, Type: domain.OpInventorySync, CanonicalType: "inventory.sync",
		Label: "Inventory sync", Surface: "inventory_sync", InitiatorID: f.operator,
	}})
	if err != nil {
		f.t.Fatal(err)
	}
	_, err = f.pool.Exec(f.ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
		SELECT $1, g, 'Z' || lpad(g::text, 25, '0'), 'StartDeduped', 1, $2, $3, '{}'::jsonb
		FROM generate_series(1, $4::bigint) AS g`, string(scope), f.tenant.ID, payload, n)
	if err != nil {
		f.t.Fatalf("seed history: %v", err)
	}
	_, err = f.pool.Exec(f.ctx, `INSERT INTO scopes (scope_id, tenant_id, version, state) VALUES ($1, $2, $3, '{}')`,
		string(scope), f.tenant.ID, n)
	if err != nil {
		f.t.Fatalf("seed snapshot: %v", err)
	}
	if _, err := f.pool.Exec(f.ctx, `ANALYZE events`); err != nil {
		f.t.Fatalf("analyze: %v", err)
	}
	if got := len(f.stream(string(scope))); got != n {
		f.t.Fatalf("seeded %d events, want %d", got, n)
	}
}

// The seeded history is consistent with what the gate reads: the next
// decision lands at version n+1.
func TestSeededHistoryIsConsistent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	f.seedHistory(scope, 10)
	res := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))
	events := f.stream(string(scope))
	if len(events) != 11 || events[10].Type != "StartAccepted" || events[10].StreamVersion != 11 {
		t.Fatalf("stream = %v, want 10 seeded events and the decision at version 11", types(events))
	}
	if _, ok := f.decode(events[0]).(domain.StartDeduped); !ok {
		t.Errorf("seeded event does not decode as StartDeduped")
	}
	if got := f.activeRunID(scope); got != res.Run.ID {
		t.Errorf("scope held by %q, want %s", got, res.Run.ID)
	}
}
