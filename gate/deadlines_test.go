package gate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

// oneSecond are limits whose deadlines pass a second after acceptance,
// and a second after the claim.
var oneSecond = &domain.Limits{QueueTTL: time.Second, MaxDuration: time.Second}

// deadlined accepts an inventory sync of the operator with limits on a
// new connection per run, n times, and returns the runs.
func deadlined(t *testing.T, a *apptest.App, tm apptest.Team, n int, limits *domain.Limits) []domain.Run {
	t.Helper()
	runs := make([]domain.Run, n)
	for i := range runs {
		conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, fmt.Sprintf("Graph %d", i))
		req := apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)
		req.Limits = limits
		runs[i] = a.Expect(t, domain.OutcomeAccepted, req).Run
		if runs[i].Deadlines == nil {
			t.Fatalf("accepted run %s has no deadlines", runs[i].ID)
		}
	}
	return runs
}

// pastDeadlines waits until the database's clock is past every deadline of
// runs (claim_by, and finish_by once claimed).
func pastDeadlines(t *testing.T, a *apptest.App, ids []string) {
	t.Helper()
	apptest.WaitFor(t, 30*time.Second, "the deadlines to pass on the database's clock", func() bool {
		return a.Count(t, `SELECT count(*) FROM runs WHERE id = ANY($1) AND coalesce(finish_by, claim_by) >= clock_timestamp()`, ids) == 0
	})
}

func ends(t *testing.T, a *apptest.App, runID string) int {
	t.Helper()
	n := 0
	for _, e := range a.RunEvents(t, runID) {
		switch e.Type {
		case "RunSucceeded", "RunFailed", "RunCancelled":
			n++
		}
	}
	return n
}

// TestDeadlinesRacingCompletionsAndCancels: runs past finish_by whose
// executor completes them while the deadline is enforced, and runs past
// claim_by that an operator cancels meanwhile: each run is ended exactly
// once, and the loser is told (the completion lease_lost saying it timed
// out, the cancel run_not_active), many rounds at once.
func TestDeadlinesRacingCompletionsAndCancels(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	const rounds = 16
	running := deadlined(t, a, tm, rounds, oneSecond)
	queuedRuns := deadlined(t, a, tm, rounds, oneSecond)
	claims := make([]apptest.Claim, rounds)
	var ids []string
	for i, r := range running {
		var err error
		if claims[i], err = a.BeginRun(t, r.ID, "racer", time.Minute); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	for _, r := range queuedRuns {
		ids = append(ids, r.ID)
	}
	pastDeadlines(t, a, ids)

	holder := gate.Claimant{ID: "racer", Actor: domain.ActorWorker("racer")}
	completeErrs, cancelErrs := make([]error, rounds), make([]error, rounds)
	var wg sync.WaitGroup
	for i := range rounds {
		wg.Go(func() {
			_, _, completeErrs[i] = a.Gate.Complete(a.Ctx, holder, gate.Completion{RunID: running[i].ID, Epoch: claims[i].Epoch, Status: domain.StatusSucceeded})
		})
		wg.Go(func() { _, cancelErrs[i] = a.Gate.CancelRun(a.Ctx, apptest.As(tm.Owner.ID), queuedRuns[i].ID) })
		wg.Go(func() {
			if _, err := a.Gate.EnforceDeadlines(a.Ctx, 4); err != nil {
				t.Errorf("enforce deadlines: %v", err)
			}
		})
	}
	wg.Wait()
	if _, err := a.Gate.EnforceDeadlines(a.Ctx, 100); err != nil { // whatever no racer reached
		t.Fatal(err)
	}
	for i := range rounds {
		for _, id := range []string{running[i].ID, queuedRuns[i].ID} {
			if n := ends(t, a, id); n != 1 {
				t.Fatalf("run %s: %d ends recorded, want exactly 1", id, n)
			}
		}
		switch status := a.RunStatus(t, running[i].ID); {
		case status == domain.StatusSucceeded && completeErrs[i] != nil:
			t.Errorf("round %d: the completion was recorded but answered %v", i, completeErrs[i])
		case status == domain.StatusFailed:
			var lost *gate.LeaseLostError
			if !errors.As(completeErrs[i], &lost) || lost.Why != "timed out" {
				t.Errorf("round %d: the run timed out but its completion was answered %v", i, completeErrs[i])
			}
		case status != domain.StatusSucceeded:
			t.Errorf("round %d: the running run ended %s", i, status)
		}
		switch status := a.RunStatus(t, queuedRuns[i].ID); {
		case status == domain.StatusCancelled && cancelErrs[i] != nil:
			t.Errorf("round %d: the cancel was recorded but answered %v", i, cancelErrs[i])
		case status == domain.StatusFailed && !errors.Is(cancelErrs[i], domain.ErrRunNotActive):
			t.Errorf("round %d: the run was not picked up but its cancel was answered %v", i, cancelErrs[i])
		case status != domain.StatusCancelled && status != domain.StatusFailed:
			t.Errorf("round %d: the queued run ended %s", i, status)
		}
	}
}

// TestDeadlineEnforcedOnceAcrossProcesses: a process that dies while it
// enforces deadlines (its context ends after its first run) leaves the rest
// to another process on the same database, and no deadline is enforced
// twice, even by two processes at once.
func TestDeadlineEnforcedOnceAcrossProcesses(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	b := apptest.Start(t, apptest.Roles(app.Roles{}), apptest.OnDatabase(a.DatabaseURL))
	runs := deadlined(t, a, tm, 12, oneSecond)
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	pastDeadlines(t, a, ids)

	dying, die := context.WithCancel(a.Ctx)
	n, err := a.Gate.EnforceDeadlines(dying, 1)
	die()
	if err != nil || n != 1 {
		t.Fatalf("the first process ended %d runs (%v), want 1 before it died", n, err)
	}
	var total = n
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range []*apptest.App{a, b} {
		wg.Go(func() {
			n, err := p.Gate.EnforceDeadlines(p.Ctx, 100)
			if err != nil {
				t.Errorf("enforce deadlines: %v", err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != len(runs) {
		t.Errorf("%d deadlines enforced in all, want %d", total, len(runs))
	}
	for _, r := range runs {
		if n := ends(t, a, r.ID); n != 1 {
			t.Errorf("run %s: %d ends recorded, want exactly 1", r.ID, n)
		}
		if got := a.RunStatus(t, r.ID); got != domain.StatusFailed {
			t.Errorf("run %s is %s, want failed", r.ID, got)
		}
	}
	if n, err := b.Gate.EnforceDeadlines(b.Ctx, 100); err != nil || n != 0 {
		t.Errorf("a later pass ended %d runs (%v), want none", n, err)
	}
}

// TestBuiltinWorkerLiveness: an api-only deployment blocks starts of the
// built-in worker's provider (no worker process announced itself); a
// process with the worker role makes them executable from its start, and
// its stop blocks them again.
func TestBuiltinWorkerLiveness(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t, apptest.Roles(app.Roles{}), apptest.NoWorker())
	tm := a.Team(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	req := apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)
	blocked := a.Expect(t, domain.OutcomeBlocked, req)
	if blocked.Reason.Code != domain.ReasonNoExecutor {
		t.Fatalf("reason %+v, want provider.no_executor", blocked.Reason)
	}

	w := apptest.Start(t, apptest.Roles(app.Roles{Worker: true}), apptest.OnDatabase(a.DatabaseURL))
	run := a.Expect(t, domain.OutcomeAccepted, req).Run
	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Owner.ID), run.ID); err != nil {
		t.Fatal(err)
	}
	w.Stop() // withdraws its worker
	again := a.Expect(t, domain.OutcomeBlocked, req)
	if again.Reason.Code != domain.ReasonNoExecutor {
		t.Fatalf("reason %+v, want provider.no_executor", again.Reason)
	}
}
