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

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
)

// holdScope holds the lock of scope from another transaction until the
// returned release is called: a group transaction that needs it waits.
func (f *fixture) holdScope(scope domain.ScopeID) (release func()) {
	f.t.Helper()
	held, done, ended := make(chan error, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		ended <- f.store.InTx(f.ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			err := tx.Lock(ctx, scope.String())
			held <- err
			if err == nil {
				<-done
			}
			return err
		})
	}()
	if err := <-held; err != nil {
		f.t.Fatal(err)
	}
	return func() {
		close(done)
		if err := <-ended; err != nil {
			f.t.Fatal(err)
		}
	}
}

// startsAfterAHeldOne makes reqs wait behind a group transaction that
// waits for a lock, so that they are decided together in the next one, and
// returns their answers (in order) and the held start's. whileQueued, if
// given, runs while they wait.
func (f *fixture) startsAfterAHeldOne(reqs []gate.StartRequest, whileQueued ...func()) ([]gate.StartResponse, []error, domain.StartResult) {
	f.t.Helper()
	held := f.connection("Held")
	release := f.holdScope(domain.ConnectionScope(held.ID))
	first := make(chan domain.StartResult, 1)
	go func() { first <- f.start(connStart(f.operator, domain.SurfaceInventorySync, held.ID)) }()
	// The held start's transaction is open and waiting: it left the queue.
	apptest.WaitFor(f.t, 30*time.Second, "the held start's transaction to wait", func() bool {
		return f.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 1
	})
	resps := make([]gate.StartResponse, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { resps[i], errs[i] = f.svc.Start(f.ctx, req) })
	}
	apptest.WaitFor(f.t, 30*time.Second, "the starts to queue behind it", func() bool { return f.svc.Waiting() == len(reqs) })
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
	f := newFixture(t)
	var reqs []gate.StartRequest
	var scopes []domain.ScopeID
	for i := range 5 {
		c := f.connection(fmt.Sprintf("Graph %d", i))
		reqs = append(reqs, connStart(f.operator, domain.SurfaceInventorySync, c.ID))
		scopes = append(scopes, domain.ConnectionScope(c.ID))
	}
	reqs = append(reqs, reqs[0]) // and a second start on the first scope: deduped
	resps, errs, first := f.startsAfterAHeldOne(reqs)
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
	a, b := resps[0].Result, resps[5].Result
	if a.Outcome == domain.OutcomeDeduped {
		a, b = b, a
	}
	if a.Outcome != domain.OutcomeAccepted || b.Outcome != domain.OutcomeDeduped || b.Run.ID != a.Run.ID {
		t.Errorf("the two starts on the first scope: %s %s and %s %s, want one accepted and one deduped to it", a.Outcome, a.Run.ID, b.Outcome, b.Run.ID)
	}
	var txs []uint64
	for _, scope := range scopes {
		for _, e := range f.stream(scope.String()) {
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
	f := newFixture(t)
	good1, bad, good2 := f.connection("Good 1"), f.connection("Bad"), f.connection("Good 2")
	badScope := domain.ConnectionScope(bad.ID)
	for _, sql := range []string{
		`CREATE FUNCTION refuse_bad_run() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.scope_id = '` + badScope.String() + `' THEN RAISE EXCEPTION 'the bad scope refuses runs'; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse_bad_run BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse_bad_run()`,
	} {
		if _, err := f.pool.Exec(f.ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	reqs := []gate.StartRequest{
		connStart(f.operator, domain.SurfaceInventorySync, good1.ID),
		connStart(f.operator, domain.SurfaceInventorySync, bad.ID),
		connStart(f.operator, domain.SurfaceComplianceSnapshot, good2.ID),
	}
	resps, errs, _ := f.startsAfterAHeldOne(reqs)
	for _, i := range []int{0, 2} {
		if errs[i] != nil || resps[i].Result.Outcome != domain.OutcomeAccepted {
			t.Errorf("start %d next to the failing one: %v, %s", i, errs[i], resps[i].Result.Outcome)
		}
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "the bad scope refuses runs") {
		t.Errorf("the failing start: %v, %+v; want the trigger's error", errs[1], resps[1].Result)
	}
	if n := len(f.stream(badScope.String())); n != 0 {
		t.Errorf("the failing scope has %d events", n)
	}
	if n := f.count(`SELECT count(*) FROM runs WHERE scope_id = $1`, badScope.String()); n != 0 {
		t.Errorf("the failing scope has %d runs", n)
	}
}

// TestTwoProcessesGroupOverlappingScopes: two gates on one database (two
// processes) group starts on overlapping sets of scopes while runs end
// and others begin; no transaction deadlocks, and no scope ever has two
// active runs.
func TestTwoProcessesGroupOverlappingScopes(t *testing.T) {
	t.Parallel()
	f, services := twoServices(t)
	var conns []string
	for i := range 12 {
		conns = append(conns, f.connection(fmt.Sprintf("Graph %d", i)).ID)
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
				resp, err := svc.Start(f.ctx, connStart(f.operator, surfaces[rng.Intn(len(surfaces))], conn))
				if err != nil {
					errs <- err
					return
				}
				// Now and then the run holding the scope ends, so that new
				// runs are accepted and the scopes' locks are wanted by
				// lifecycle transactions too.
				if r := resp.Result; r.Outcome != domain.OutcomeBlocked && rng.Intn(4) == 0 {
					if _, err := svc.CancelRun(f.ctx, apptest.As(f.owner), r.Run.ID); err != nil && !strings.Contains(err.Error(), "not active") {
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
		for _, e := range f.stream(domain.ConnectionScope(conn).String()) {
			switch p := f.decode(e).(type) {
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
// are decided again.
func TestStartsBeyondTheQueueAreShed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.svc.SetStartQueue(12) // starts of 3 scopes, 12 in all
	var reqs []gate.StartRequest
	for i := range 3 {
		reqs = append(reqs, connStart(f.operator, domain.SurfaceInventorySync, f.connection(fmt.Sprintf("Graph %d", i)).ID))
	}
	extra := f.connection("Extra")
	var shed error
	var joined gate.StartResponse
	var joinedErr error
	joinedDone := make(chan struct{})
	_, errs, _ := f.startsAfterAHeldOne(reqs, func() {
		// A fourth scope is refused at once ...
		_, shed = f.svc.Start(f.ctx, connStart(f.operator, domain.SurfaceInventorySync, extra.ID))
		// ... a start on a scope already waiting joins it.
		go func() {
			defer close(joinedDone)
			joined, joinedErr = f.svc.Start(f.ctx, connStart(f.operator, domain.SurfaceComplianceSnapshot, reqs[0].ConnectionID))
		}()
		apptest.WaitFor(t, 30*time.Second, "the start to join its scope's", func() bool { return f.svc.Waiting() == 4 })
	})
	<-joinedDone
	if joinedErr != nil || joined.Result.Outcome != domain.OutcomeScopeBusy {
		t.Errorf("the start that joined a waiting scope: %v %s, want scope_busy", joinedErr, joined.Result.Outcome)
	}
	if !errors.Is(shed, gate.ErrOverloaded) {
		t.Fatalf("a start on a fourth scope: %v, want ErrOverloaded", shed)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("queued start %d: %v", i, err)
		}
	}
	if n := len(f.stream(domain.ConnectionScope(extra.ID).String())); n != 0 {
		t.Errorf("the refused start recorded %d events", n)
	}
	f.accept(connStart(f.operator, domain.SurfaceInventorySync, extra.ID))
}
