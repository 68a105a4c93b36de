package gate_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

const racers = 100

// race starts every request at once, request i through services[i %
// len(services)], and returns the results in request order.
func race(t *testing.T, a *apptest.App, services []*gate.Service, reqs []gate.StartRequest) []domain.StartResult {
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
			resp, err := svc.Start(a.Ctx, req)
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
func checkOneWinner(t *testing.T, a *apptest.App, scope domain.ScopeID, reqs []gate.StartRequest, results []domain.StartResult) {
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

	events := a.Stream(t, string(scope))
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
	state, version := scopeOf(t, a, scope)
	if version != int64(len(reqs)) || state.Active == nil || state.Active.RunID != winner.Run.ID {
		t.Errorf("snapshot = v%d %+v, want v%d held by %s", version, state.Active, len(reqs), winner.Run.ID)
	}
	if n := a.Count(t, `SELECT count(*) FROM runs WHERE status = 'queued'`); n != 1 {
		t.Errorf("queued runs = %d, want 1", n)
	}
	if n := a.Count(t, `SELECT count(*) FROM runs`); n != 1 {
		t.Errorf("runs rows = %d, want 1", n)
	}
	if n := queuedWork(t, a); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
}

// sameOperation is racers inventory syncs of one connection.
func sameOperation(tm apptest.Team, connID string) []gate.StartRequest {
	reqs := make([]gate.StartRequest, racers)
	for i := range reqs {
		reqs[i] = apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, connID)
	}
	return reqs
}

// mixedOperations is racers starts of four operations on one connection,
// which is the tenant's default.
func mixedOperations(tm apptest.Team, connID string) []gate.StartRequest {
	reqs := make([]gate.StartRequest, racers)
	for i := range reqs {
		switch i % 4 {
		case 0:
			reqs[i] = apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, connID)
		case 1:
			reqs[i] = apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, connID)
		case 2:
			reqs[i] = apptest.ConnStart(tm.Operator.ID, domain.SurfaceConnectionCheck, connID)
		case 3:
			reqs[i] = apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, "")
		}
	}
	return reqs
}

// twoServices starts the application of a gate test, a team on it and a
// second application on its database, and returns the gates of both, as
// two processes would have them.
func twoServices(t *testing.T) (*apptest.App, apptest.Team, []*gate.Service) {
	a, tm := newGate(t)
	other := apptest.Start(t, apptest.OnDatabase(a.DatabaseURL), apptest.Roles(app.Roles{}))
	return a, tm, []*gate.Service{a.Gate, other.Gate}
}

// raceOnOneConnection starts racers starts at once on a new connection
// (the same operation, or when mixed four operations on the tenant's
// default), through one gate or, with twoProcesses, the gates of two
// applications on one database, and checks that exactly one won. It
// returns the application and the connection's scope.
func raceOnOneConnection(t *testing.T, twoProcesses, mixed bool) (*apptest.App, domain.ScopeID) {
	t.Helper()
	var a *apptest.App
	var tm apptest.Team
	var services []*gate.Service
	if twoProcesses {
		a, tm, services = twoServices(t)
	} else {
		a, tm = newGate(t)
		services = []*gate.Service{a.Gate}
	}
	var opts []apptest.ConnectionOption
	reqsOf := sameOperation
	if mixed {
		opts, reqsOf = append(opts, apptest.AsDefault), mixedOperations
	}
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", opts...)
	scope := domain.ConnectionScope(conn.ID)
	reqs := reqsOf(tm, conn.ID)
	checkOneWinner(t, a, scope, reqs, race(t, a, services, reqs))
	return a, scope
}

// TestConcurrentStarts races starts on one connection, of one operation
// or of four, through one gate or through the gates of two processes:
// exactly one is accepted and every other points at it.
func TestConcurrentStarts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		twoProcesses, mixed bool
	}{
		{"SameOperation", false, false},
		{"MixedOperations", false, true},
		{"SameOperationTwoServices", true, false},
		{"MixedOperationsTwoServices", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raceOnOneConnection(t, tc.twoProcesses, tc.mixed)
		})
	}
}

// The partial unique index refuses a second active run on a scope even
// to a writer that bypasses the gate.
func TestDatabaseRefusesSecondActiveRun(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn, run := queued(t, a, tm)
	scope := domain.ConnectionScope(conn.ID)

	for _, status := range []string{"queued", "running"} {
		tx, err := a.Pool.Begin(a.Ctx)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		_, err = tx.Exec(a.Ctx, `INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
			VALUES ($1, $2, $3, 'compliance.snapshot', 'compliance_snapshot', $4, now())`,
			"second-"+status, string(scope), tm.Tenant.ID, status)
		_ = tx.Rollback(a.Ctx)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" || pgErr.ConstraintName != "runs_one_active_per_scope" {
			t.Errorf("second %s run: err = %v, want a unique violation of runs_one_active_per_scope", status, err)
		}
	}
	// Nor may a terminal run be revived while another holds the scope.
	_, err := a.Pool.Exec(a.Ctx, `INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
		VALUES ('revived-blocked-run', $1, $2, 'compliance.snapshot', 'compliance_snapshot', 'blocked', now())`,
		string(scope), tm.Tenant.ID)
	if err != nil {
		t.Fatalf("insert a blocked run beside the active one: %v", err)
	}
	_, err = a.Pool.Exec(a.Ctx, `UPDATE runs SET status = 'queued' WHERE id = 'revived-blocked-run'`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "runs_one_active_per_scope" {
		t.Errorf("reviving a blocked run: err = %v, want a unique violation of runs_one_active_per_scope", err)
	}
	if got := runRowOf(t, a, run.ID).Status; got != "queued" {
		t.Errorf("active run status = %s, want queued", got)
	}
}

// TestHotScopeStartsAreGrouped checks that starts racing on one connection
// share transactions (group.go) and still each get their own decision:
// one event per start, versions contiguous, one winner.
func TestHotScopeStartsAreGrouped(t *testing.T) {
	t.Parallel()
	a, scope := raceOnOneConnection(t, false, false)
	events := a.Stream(t, string(scope))
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

// holdScope holds the lock of scope from another transaction until the
// returned release is called: a group transaction that needs it waits.
func holdScope(t testing.TB, a *apptest.App, scope domain.ScopeID) (release func()) {
	t.Helper()
	held, done, ended := make(chan error, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		ended <- a.Store.InTx(a.Ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			err := tx.Lock(ctx, scope.String())
			held <- err
			if err == nil {
				<-done
			}
			return err
		})
	}()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	return func() {
		close(done)
		if err := <-ended; err != nil {
			t.Fatal(err)
		}
	}
}

// startsAfterAHeldOne makes reqs wait behind a group transaction that
// waits for a lock, so that they are decided together in the next one, and
// returns their answers (in order) and the held start's. whileQueued, if
// given, runs while they wait.
func startsAfterAHeldOne(t *testing.T, a *apptest.App, tm apptest.Team, reqs []gate.StartRequest, whileQueued ...func()) ([]gate.StartResponse, []error, domain.StartResult) {
	t.Helper()
	held := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Held")
	release := holdScope(t, a, domain.ConnectionScope(held.ID))
	first := make(chan domain.StartResult, 1)
	go func() { first <- a.Start(t, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, held.ID)) }()
	// The held start's transaction is open and waiting: it left the queue.
	apptest.WaitFor(t, 30*time.Second, "the held start's transaction to wait", func() bool {
		return a.Count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 1
	})
	resps := make([]gate.StartResponse, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { resps[i], errs[i] = a.Gate.Start(a.Ctx, req) })
	}
	apptest.WaitFor(t, 30*time.Second, "the starts to queue behind it", func() bool { return a.Gate.Waiting() == len(reqs) })
	for _, fn := range whileQueued {
		fn()
	}
	release()
	wg.Wait()
	return resps, errs, <-first
}

// TestStartsOnSeveralScopesShareACommit: starts on different scopes that
// wait together are decided in one transaction, each with its own
// decision and event on its own scope.
func TestStartsOnSeveralScopesShareACommit(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	var reqs []gate.StartRequest
	var scopes []domain.ScopeID
	for i := range 5 {
		c := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, fmt.Sprintf("Graph %d", i))
		reqs = append(reqs, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, c.ID))
		scopes = append(scopes, domain.ConnectionScope(c.ID))
	}
	reqs = append(reqs, reqs[0]) // and a second start on the first scope: deduped
	resps, errs, first := startsAfterAHeldOne(t, a, tm, reqs)
	if first.Outcome != domain.OutcomeAccepted {
		t.Fatalf("the held start: %s", first.Outcome)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	for i := 1; i < 5; i++ {
		if resps[i].Result.Outcome != domain.OutcomeAccepted {
			t.Errorf("start on scope %d: %s", i, resps[i].Result.Outcome)
		}
	}
	// The two starts on the first scope: one accepted, the other deduped to it.
	x, y := resps[0].Result, resps[5].Result
	if x.Outcome == domain.OutcomeDeduped {
		x, y = y, x
	}
	if x.Outcome != domain.OutcomeAccepted || y.Outcome != domain.OutcomeDeduped || y.Run.ID != x.Run.ID {
		t.Errorf("the two starts on the first scope: %s %s and %s %s, want one accepted and one deduped to it", x.Outcome, x.Run.ID, y.Outcome, y.Run.ID)
	}
	var txs []uint64
	for _, scope := range scopes {
		for _, e := range a.Stream(t, scope.String()) {
			if !slices.Contains(txs, e.TxID) {
				txs = append(txs, e.TxID)
			}
		}
	}
	if len(txs) != 1 {
		t.Errorf("the starts on 5 scopes were recorded in %d transactions, want one", len(txs))
	}
}

// TestGroupedTransactionFailingPartWay: when one scope's part of a group
// transaction fails (here a trigger refuses its runs row), the
// transaction rolls back and every scope is decided again on its own: the
// failing scope's start gets the error and records nothing; its
// neighbours are accepted.
func TestGroupedTransactionFailingPartWay(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	good1, bad, good2 := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Good 1"), a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Bad"), a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Good 2")
	badScope := domain.ConnectionScope(bad.ID)
	for _, sql := range []string{
		`CREATE FUNCTION refuse_bad_run() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.scope_id = '` + badScope.String() + `' THEN RAISE EXCEPTION 'the bad scope refuses runs'; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse_bad_run BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse_bad_run()`,
	} {
		if _, err := a.Pool.Exec(a.Ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	reqs := []gate.StartRequest{
		apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, good1.ID),
		apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, bad.ID),
		apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, good2.ID),
	}
	resps, errs, _ := startsAfterAHeldOne(t, a, tm, reqs)
	for _, i := range []int{0, 2} {
		if errs[i] != nil || resps[i].Result.Outcome != domain.OutcomeAccepted {
			t.Errorf("start %d next to the failing one: %v, %s", i, errs[i], resps[i].Result.Outcome)
		}
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "the bad scope refuses runs") {
		t.Errorf("the failing start: %v, %+v; want the trigger's error", errs[1], resps[1].Result)
	}
	if n := len(a.Stream(t, badScope.String())); n != 0 {
		t.Errorf("the failing scope has %d events", n)
	}
	if n := a.Count(t, `SELECT count(*) FROM runs WHERE scope_id = $1`, badScope.String()); n != 0 {
		t.Errorf("the failing scope has %d runs", n)
	}
}

// TestTwoProcessesGroupOverlappingScopes: two gates on one database (two
// processes) group starts on overlapping sets of scopes while runs end
// and others begin; no transaction deadlocks, and no scope ever has two
// active runs.
func TestTwoProcessesGroupOverlappingScopes(t *testing.T) {
	t.Parallel()
	a, tm, services := twoServices(t)
	var conns []string
	for i := range 12 {
		conns = append(conns, a.Connection(t, tm.Owner.ID, tm.Tenant.ID, fmt.Sprintf("Graph %d", i)).ID)
	}
	surfaces := []domain.Surface{domain.SurfaceInventorySync, domain.SurfaceComplianceSnapshot, domain.SurfaceConnectionCheck}
	const clients, perClient = 24, 60
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			svc := services[w%len(services)]
			for range perClient {
				conn := conns[rng.Intn(len(conns))]
				resp, err := svc.Start(a.Ctx, apptest.ConnStart(tm.Operator.ID, surfaces[rng.Intn(len(surfaces))], conn))
				if err != nil {
					errs <- err
					return
				}
				// Now and then the run holding the scope ends, so that new
				// runs are accepted and the scopes' locks are wanted by
				// lifecycle transactions too.
				if r := resp.Result; r.Outcome != domain.OutcomeBlocked && rng.Intn(4) == 0 {
					if _, err := svc.CancelRun(a.Ctx, apptest.As(tm.Owner.ID), r.Run.ID); err != nil && !strings.Contains(err.Error(), "not active") {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a client failed: %v", err)
	}
	accepted := 0
	for _, conn := range conns {
		var active string
		for _, e := range a.Stream(t, domain.ConnectionScope(conn).String()) {
			switch p := a.Decode(t, e).(type) {
			case domain.StartAccepted:
				if active != "" {
					t.Fatalf("scope of %s: %s accepted while %s was active", conn, p.RunID, active)
				}
				active = p.RunID
				accepted++
			case domain.RunCancelled:
				if p.RunID == active {
					active = ""
				}
			}
		}
	}
	if accepted < len(conns) {
		t.Errorf("only %d runs accepted", accepted)
	}
	t.Logf("%d runs accepted over %d scopes", accepted, len(conns))
}

// TestStartsBeyondTheQueueAreShed: with starts of as many scopes as the
// queue takes waiting (a quarter of its length), a start on yet another
// scope is refused at once with ErrOverloaded and records nothing, while
// one on a scope already waiting joins it; once the queue drains, starts
// are decided again. The process counts as shedding for a moment after
// (the webhook dispatcher yields to the decisions meanwhile).
func TestStartsBeyondTheQueueAreShed(t *testing.T) {
	t.Parallel()
	clock := apptest.NewClock(time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC))
	a, tm := newGate(t, apptest.With(app.WithClock(clock.Now)))
	a.Gate.SetStartQueue(12) // starts of 3 scopes, 12 in all
	if a.Gate.Shedding() {
		t.Error("shedding before any start was refused")
	}
	var reqs []gate.StartRequest
	for i := range 3 {
		reqs = append(reqs, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, a.Connection(t, tm.Owner.ID, tm.Tenant.ID, fmt.Sprintf("Graph %d", i)).ID))
	}
	extra := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Extra")
	var shed error
	var joined gate.StartResponse
	var joinedErr error
	joinedDone := make(chan struct{})
	_, errs, _ := startsAfterAHeldOne(t, a, tm, reqs, func() {
		// A fourth scope is refused at once ...
		_, shed = a.Gate.Start(a.Ctx, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, extra.ID))
		// ... a start on a scope already waiting joins it.
		go func() {
			defer close(joinedDone)
			joined, joinedErr = a.Gate.Start(a.Ctx, apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, reqs[0].ConnectionID))
		}()
		apptest.WaitFor(t, 30*time.Second, "the start to join its scope's", func() bool { return a.Gate.Waiting() == 4 })
	})
	<-joinedDone
	if joinedErr != nil || joined.Result.Outcome != domain.OutcomeScopeBusy {
		t.Errorf("the start that joined a waiting scope: %v %s, want scope_busy", joinedErr, joined.Result.Outcome)
	}
	if !errors.Is(shed, gate.ErrOverloaded) {
		t.Fatalf("a start on a fourth scope: %v, want ErrOverloaded", shed)
	}
	if !a.Gate.Shedding() {
		t.Error("not shedding right after a start was refused")
	}
	clock.Advance(100 * time.Millisecond)
	if a.Gate.Shedding() {
		t.Error("shedding still 100 ms after the last start was refused")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("queued start %d: %v", i, err)
		}
	}
	if n := len(a.Stream(t, domain.ConnectionScope(extra.ID).String())); n != 0 {
		t.Errorf("the refused start recorded %d events", n)
	}
	a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, extra.ID))
}
