package gate_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

const racers = 100

// race starts every request at once, request i through services[i %
// len(services)], and returns the results in request order.
func race(t *testing.T, f *fixture, services []*gate.Service, reqs []gate.StartRequest) []domain.StartResult {
	t.Helper()
	results := make([]domain.StartResult, len(reqs))
	errs := make([]error, len(reqs))
	release := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, req := range reqs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			svc := services[i%len(services)]
			ready.Done()
			<-release
			resp, err := svc.Start(f.ctx, req)
			results[i], errs[i] = resp.Result, err
		}()
	}
	ready.Wait()
	close(release)
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start %d (%s): %v", i, reqs[i].Surface.Name, err)
		}
	}
	return results
}

// checkOneWinner asserts that exactly one start was accepted, that every
// other one points at it (deduped when of the same operation, scope_busy
// otherwise), and that the scope's stream, snapshot and runs agree.
func checkOneWinner(t *testing.T, f *fixture, scope domain.ScopeID, reqs []gate.StartRequest, results []domain.StartResult) {
	t.Helper()
	var winner *domain.StartResult
	for i := range results {
		if results[i].Outcome == domain.OutcomeAccepted {
			if winner != nil {
				t.Fatalf("two starts accepted: %s and %s", winner.Run.ID, results[i].Run.ID)
			}
			winner = &results[i]
		}
	}
	if winner == nil {
		t.Fatalf("no start accepted")
	}
	counts := map[domain.Outcome]int{}
	for i, r := range results {
		counts[r.Outcome]++
		if r.Run.ID != winner.Run.ID {
			t.Errorf("start %d: %s -> %s, want a pointer to %s", i, r.Outcome, r.Run.ID, winner.Run.ID)
		}
		if r.Outcome == domain.OutcomeAccepted {
			continue
		}
		op := domain.MustOperation(reqs[i].Surface.Operation)
		want := domain.OutcomeScopeBusy
		if op.Canonical == winner.Run.CanonicalType {
			want = domain.OutcomeDeduped
		}
		if r.Outcome != want {
			t.Errorf("start %d (%s) while %s holds the scope: %s, want %s", i, op.Type, winner.Run.Type, r.Outcome, want)
		}
	}
	t.Logf("accepted %s; outcomes %v", winner.Run.Type, counts)

	events := f.stream(string(scope))
	if len(events) != len(reqs) {
		t.Fatalf("scope stream has %d events, want %d", len(events), len(reqs))
	}
	for i, e := range events {
		if e.StreamVersion != int64(i+1) {
			t.Fatalf("event %d at version %d: versions not contiguous", i, e.StreamVersion)
		}
	}
	if events[0].Type != "StartAccepted" {
		t.Errorf("first event = %s, want StartAccepted", events[0].Type)
	}
	state, version := f.scope(scope)
	if version != int64(len(reqs)) || state.Active == nil || state.Active.RunID != winner.Run.ID {
		t.Errorf("snapshot = v%d %+v, want v%d held by %s", version, state.Active, len(reqs), winner.Run.ID)
	}
	if n := f.count(`SELECT count(*) FROM runs WHERE status = 'queued'`); n != 1 {
		t.Errorf("queued runs = %d, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM runs`); n != 1 {
		t.Errorf("runs rows = %d, want 1", n)
	}
	if n := f.queuedWork(); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
}

// sameOperation is racers inventory syncs of one connection.
func sameOperation(f *fixture, connID string) []gate.StartRequest {
	reqs := make([]gate.StartRequest, racers)
	for i := range reqs {
		reqs[i] = connStart(f.operator, domain.SurfaceInventorySync, connID)
	}
	return reqs
}

// mixedOperations is racers starts of four operations on one connection,
// which is the tenant's default.
func mixedOperations(f *fixture, connID string) []gate.StartRequest {
	reqs := make([]gate.StartRequest, racers)
	for i := range reqs {
		switch i % 4 {
		case 0:
			reqs[i] = connStart(f.operator, domain.SurfaceInventorySync, connID)
		case 1:
			reqs[i] = connStart(f.operator, domain.SurfaceComplianceSnapshot, connID)
		case 2:
			reqs[i] = connStart(f.operator, domain.SurfaceConnectionCheck, connID)
		case 3:
			reqs[i] = tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, "")
		}
	}
	return reqs
}

func TestConcurrentSameOperation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	reqs := sameOperation(f, conn.ID)
	results := race(t, f, []*gate.Service{f.svc}, reqs)
	checkOneWinner(t, f, domain.ConnectionScope(conn.ID), reqs, results)
}

func TestConcurrentMixedOperations(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	reqs := mixedOperations(f, conn.ID)
	results := race(t, f, []*gate.Service{f.svc}, reqs)
	checkOneWinner(t, f, domain.ConnectionScope(conn.ID), reqs, results)
}

// twoServices returns a fixture on a fresh database and the gates of two
// applications on it, as two processes would have.
func twoServices(t *testing.T) (*fixture, []*gate.Service) {
	f := newFixture(t)
	other := apptest.Start(t, apptest.OnDatabase(f.app.DatabaseURL), apptest.Roles(app.Roles{}))
	return f, []*gate.Service{f.svc, other.Gate}
}

func TestConcurrentSameOperationTwoServices(t *testing.T) {
	t.Parallel()
	f, services := twoServices(t)
	conn := f.connection("Graph")
	reqs := sameOperation(f, conn.ID)
	results := race(t, f, services, reqs)
	checkOneWinner(t, f, domain.ConnectionScope(conn.ID), reqs, results)
}

func TestConcurrentMixedOperationsTwoServices(t *testing.T) {
	t.Parallel()
	f, services := twoServices(t)
	conn := f.connection("Graph", asDefault)
	reqs := mixedOperations(f, conn.ID)
	results := race(t, f, services, reqs)
	checkOneWinner(t, f, domain.ConnectionScope(conn.ID), reqs, results)
}

// The partial unique index refuses a second active run on a scope even
// to a writer that bypasses the gate.
func TestDatabaseRefusesSecondActiveRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run

	for _, status := range []string{"queued", "running"} {
		tx, err := f.pool.Begin(f.ctx)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		_, err = tx.Exec(f.ctx, `INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
			VALUES ($1, $2, $3, 'compliance.snapshot', 'compliance_snapshot', $4, now())`,
			"second-"+status, string(scope), f.tenant.ID, status)
		_ = tx.Rollback(f.ctx)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" || pgErr.ConstraintName != "runs_one_active_per_scope" {
			t.Errorf("second %s run: err = %v, want a unique violation of runs_one_active_per_scope", status, err)
		}
	}
	// Nor may a terminal run be revived while another holds the scope.
	_, err := f.pool.Exec(f.ctx, `INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
		VALUES ('revived-blocked-run', $1, $2, 'compliance.snapshot', 'compliance_snapshot', 'blocked', now())`,
		string(scope), f.tenant.ID)
	if err != nil {
		t.Fatalf("insert a blocked run beside the active one: %v", err)
	}
	_, err = f.pool.Exec(f.ctx, `UPDATE runs SET status = 'queued' WHERE id = 'revived-blocked-run'`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "runs_one_active_per_scope" {
		t.Errorf("reviving a blocked run: err = %v, want a unique violation of runs_one_active_per_scope", err)
	}
	if got := f.runRow(run.ID).Status; got != "queued" {
		t.Errorf("active run status = %s, want queued", got)
	}
}

// TestHotScopeStartsAreGrouped checks that starts racing on one connection
// share transactions (group.go) and still each get their own decision:
// one event per start, versions contiguous, one winner.
func TestHotScopeStartsAreGrouped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	reqs := sameOperation(f, conn.ID)
	results := race(t, f, []*gate.Service{f.svc}, reqs)
	checkOneWinner(t, f, domain.ConnectionScope(conn.ID), reqs, results)
	events := f.stream(string(domain.ConnectionScope(conn.ID)))
	if len(events) != racers {
		t.Fatalf("%d events for %d starts", len(events), racers)
	}
	txs := map[uint64]bool{}
	for _, e := range events {
		txs[e.TxID] = true
	}
	if len(txs) == racers {
		t.Errorf("%d starts racing on one connection took %d transactions: none was grouped", racers, len(txs))
	}
	t.Logf("%d starts decided in %d transactions", racers, len(txs))
}
