package gate_test

import (
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

// leaseLong is a lease no test outlives.
const leaseLong = 5 * time.Minute

func TestLifecycleBeginSucceedFreesScope(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn, run := queued(t, a, tm)
	scope := domain.ConnectionScope(conn.ID)

	// A result for a run still queued is refused.
	if err := a.Succeed(apptest.Worker, apptest.Claim{RunID: run.ID, Epoch: 0}); !errors.Is(err, domain.ErrRunNotStarted) {
		t.Errorf("succeed while queued: err = %v, want ErrRunNotStarted", err)
	}

	claim, err := a.BeginRun(t, run.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if claim.Epoch != 1 || claim.RunID != run.ID {
		t.Errorf("claim = %+v, want epoch 1", claim)
	}
	if row := runRowOf(t, a, run.ID); row.Status != "running" || row.Epoch != 1 {
		t.Errorf("runs row = %+v, want running at epoch 1", row)
	}
	if state, _ := scopeOf(t, a, scope); state.Active == nil || state.Active.Status != domain.StatusRunning || state.Active.StartedAt == nil {
		t.Errorf("snapshot = %+v, want the run running", state.Active)
	}
	if _, err := a.BeginRun(t, run.ID, "worker-2", leaseLong); !errors.Is(err, domain.ErrRunAlreadyStarted) {
		t.Errorf("second begin: err = %v, want ErrRunAlreadyStarted", err)
	}
	if err := a.Heartbeat(claim, leaseLong); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	// While running, a new start of the same operation is deduped on the running run.
	if res := a.Start(t, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)); res.Outcome != domain.OutcomeDeduped || res.Run.Status != domain.StatusRunning {
		t.Errorf("start while running = %s (%s), want deduped on a running run", res.Outcome, res.Run.Status)
	}

	if err := a.Succeed(apptest.Worker, claim); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	if row := runRowOf(t, a, run.ID); row.Status != "succeeded" {
		t.Errorf("runs row status = %s, want succeeded", row.Status)
	}
	if got := activeRunID(t, a, scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	// Repeating the same completion is answered again and records nothing;
	// another one is refused.
	before := len(a.Stream(t, string(scope)))
	if err := a.Succeed(apptest.Worker, claim); err != nil {
		t.Errorf("repeated succeed: err = %v, want nil", err)
	}
	if err := a.Fail(apptest.Worker, claim, domain.ReasonUnavailable); !errors.Is(err, domain.ErrRunNotActive) || !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("fail after success: err = %v, want ErrRunNotActive and ErrLeaseLost", err)
	}
	if after := len(a.Stream(t, string(scope))); after != before {
		t.Errorf("the repeat and the refused completion recorded %d events", after-before)
	}
	if err := a.Heartbeat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after success: err = %v, want ErrLeaseLost", err)
	}

	next := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, conn.ID))
	if next.Run.ID == run.ID {
		t.Errorf("next start reused the finished run")
	}
	want := []string{"StartAccepted", "RunStarted", "StartDeduped", "RunSucceeded", "StartAccepted"}
	got := apptest.Types(a.Stream(t, string(scope)))
	if len(got) != len(want) {
		t.Fatalf("scope stream = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("scope stream = %v, want %v", got, want)
		}
	}
}

func TestLifecycleFailWithCatalogReason(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn, run := queued(t, a, tm)
	scope := domain.ConnectionScope(conn.ID)
	claim, err := a.BeginRun(t, run.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}

	before := len(a.Stream(t, string(scope)))
	if err := a.Fail(apptest.Worker, claim, "no.such.reason"); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("fail with an unknown reason: err = %v, want ErrInvalidCommand", err)
	}
	if err := a.Fail(apptest.Worker, claim, domain.ReasonDeduped); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("fail with start.deduped (a reason that never ends a run): err = %v, want ErrInvalidCommand", err)
	}
	if err := a.Fail(apptest.Worker, apptest.Claim{RunID: run.ID, Epoch: claim.Epoch + 1}, domain.ReasonThrottled); !errors.Is(err, domain.ErrStaleEpoch) {
		t.Errorf("fail from a future epoch: err = %v, want ErrStaleEpoch", err)
	}
	if err := a.Succeed(apptest.Worker, apptest.Claim{RunID: run.ID, Epoch: claim.Epoch - 1}); !errors.Is(err, domain.ErrStaleEpoch) {
		t.Errorf("succeed from a stale epoch: err = %v, want ErrStaleEpoch", err)
	}
	if after := len(a.Stream(t, string(scope))); after != before {
		t.Errorf("rejected results recorded %d events", after-before)
	}
	if row := runRowOf(t, a, run.ID); row.Status != "running" {
		t.Errorf("runs row status = %s after rejected results, want running", row.Status)
	}

	if err := a.Fail(apptest.Worker, claim, domain.ReasonThrottled); err != nil {
		t.Fatalf("fail: %v", err)
	}
	if row := runRowOf(t, a, run.ID); row.Status != "failed" {
		t.Errorf("runs row status = %s, want failed", row.Status)
	}
	events := a.Stream(t, string(scope))
	failed, ok := a.Decode(t, events[len(events)-1]).(domain.RunFailed)
	if !ok || failed.Reason.Code != domain.ReasonThrottled || failed.Reason.Class != domain.ClassProviderThrottled || failed.Epoch != 1 {
		t.Errorf("last event = %s %+v, want RunFailed provider.throttled at epoch 1", events[len(events)-1].Type, failed)
	}
	if got := activeRunID(t, a, scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))
}

func TestLifecycleCancel(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn, run := queued(t, a, tm)
	scope := domain.ConnectionScope(conn.ID)

	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Outsider.ID), run.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("outsider cancel: err = %v, want ErrNotFound", err)
	}
	var fe *domain.ForbiddenError
	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Readonly.ID), run.ID); !errors.As(err, &fe) || fe.Capability != domain.CapInventorySync {
		t.Errorf("readonly cancel: err = %v, want ForbiddenError naming inventory.sync", err)
	}
	if got := runRowOf(t, a, run.ID).Status; got != "queued" {
		t.Fatalf("refused cancels changed the run to %s", got)
	}

	cancelled, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Operator.ID), run.ID)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if cancelled.WasRunning || cancelled.Reason.Code != domain.ReasonCancelled || cancelled.ActorID != tm.Operator.ID {
		t.Errorf("RunCancelled = %+v", cancelled)
	}
	if got := runRowOf(t, a, run.ID).Status; got != "cancelled" {
		t.Errorf("runs row status = %s, want cancelled", got)
	}
	if got := activeRunID(t, a, scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	if _, err := a.BeginRun(t, run.ID, "worker-1", leaseLong); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("begin after cancel: err = %v, want ErrRunNotActive", err)
	}
	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Operator.ID), run.ID); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("second cancel: err = %v, want ErrRunNotActive", err)
	}
	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Operator.ID), "01HZZZZZZZZZZZZZZZZZZZZZZZ"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("cancel of an unknown run: err = %v, want ErrNotFound", err)
	}

	// A running run can be cancelled too; its worker's claim is then dead.
	next := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID)).Run
	claim, err := a.BeginRun(t, next.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if c, err := a.Gate.CancelRun(a.Ctx, apptest.As(tm.Owner.ID), next.ID); err != nil || !c.WasRunning {
		t.Fatalf("cancel running = %+v, %v", c, err)
	}
	if err := a.Heartbeat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after cancel: err = %v, want ErrLeaseLost", err)
	}
	if err := a.Succeed(apptest.Worker, claim); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("succeed after cancel: err = %v, want ErrRunNotActive", err)
	}
	if got := runRowOf(t, a, next.ID).Status; got != "cancelled" {
		t.Errorf("runs row status = %s, want cancelled", got)
	}
}

func TestReapExpiredLease(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn, run := queued(t, a, tm)
	scope := domain.ConnectionScope(conn.ID)

	// A healthy run on another connection must survive the reaper. (The
	// runs are begun in the order they were accepted.)
	healthyConn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Healthy")
	healthy := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, healthyConn.ID)).Run
	claim, err := a.BeginRun(t, run.ID, "worker-1", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := a.BeginRun(t, healthy.ID, "worker-2", leaseLong); err != nil {
		t.Fatalf("begin healthy: %v", err)
	}
	apptest.WaitFor(t, 30*time.Second, "the reaper to end the expired run", func() bool {
		n, err := a.Gate.ReapExpired(a.Ctx, 10)
		if err != nil {
			t.Fatalf("reap: %v", err)
		}
		if n > 1 {
			t.Fatalf("reaped %d runs, want 1", n)
		}
		return n == 1
	})

	if got := runRowOf(t, a, run.ID).Status; got != "failed" {
		t.Errorf("reaped run status = %s, want failed", got)
	}
	events := a.Stream(t, string(scope))
	last := events[len(events)-1]
	failed, ok := a.Decode(t, last).(domain.RunFailed)
	if !ok || failed.Reason.Code != domain.ReasonExecutionLost || failed.Reason.Class != domain.ClassExecutionInterrupted {
		t.Errorf("last event = %s %+v, want RunFailed execution.lost", last.Type, failed)
	}
	if last.Metadata.Actor != "system:reaper" {
		t.Errorf("reap recorded by %q, want system:reaper", last.Metadata.Actor)
	}
	if got := activeRunID(t, a, scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	if got := runRowOf(t, a, healthy.ID).Status; got != "running" {
		t.Errorf("healthy run status = %s, want running", got)
	}

	// The lost worker comes back: everything it reports is refused.
	versionBefore := len(events)
	if err := a.Succeed(apptest.Worker, claim); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("late succeed: err = %v, want ErrRunNotActive", err)
	}
	if err := a.Heartbeat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after reaping: err = %v, want ErrLeaseLost", err)
	}
	if got := runRowOf(t, a, run.ID).Status; got != "failed" {
		t.Errorf("run status after late succeed = %s, want failed", got)
	}
	if got := len(a.Stream(t, string(scope))); got != versionBefore {
		t.Errorf("late reports recorded %d events", got-versionBefore)
	}
	if n, err := a.Gate.ReapExpired(a.Ctx, 10); err != nil || n != 0 {
		t.Errorf("second reap = %d, %v; want 0", n, err)
	}
	// The scope is free for the next start.
	a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))
}

// A heartbeat that commits while the reaper is deciding wins: the reaper
// must not end a run on the strength of a lease that was renewed before
// it recorded the loss (the worker was told its lease holds).
func TestReapDoesNotEndRunRenewedMeanwhile(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	_, run := queued(t, a, tm)
	claim, err := a.BeginRun(t, run.ID, "worker-1", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	apptest.WaitFor(t, 30*time.Second, "the lease to expire", func() bool {
		return a.Count(t, `SELECT count(*) FROM runs WHERE id = $1 AND lease_expires_at < clock_timestamp()`, run.ID) == 1
	})

	// The worker's heartbeat is in flight: its renewal is written, not yet committed.
	heartbeat, err := a.Pool.Begin(a.Ctx)
	if err != nil {
		t.Fatalf("begin heartbeat: %v", err)
	}
	defer heartbeat.Rollback(a.Ctx) //nolint:errcheck // no-op after commit
	tag, err := heartbeat.Exec(a.Ctx, `UPDATE runs SET lease_expires_at = clock_timestamp() + interval '5 minutes'
		WHERE id = $1 AND epoch = $2 AND status = 'running'`, run.ID, claim.Epoch)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("renew lease: %v (%d rows)", err, tag.RowsAffected())
	}

	type reaped struct {
		n   int
		err error
	}
	done := make(chan reaped, 1)
	go func() {
		n, err := a.Gate.ReapExpired(a.Ctx, 10)
		done <- reaped{n, err}
	}()
	// Wait until the reaper waits for the heartbeat's row (or has finished).
	apptest.WaitFor(t, 30*time.Second, "the reaper to reach the renewed run", func() bool {
		if len(done) > 0 {
			return true
		}
		return a.Count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
	})
	if err := heartbeat.Commit(a.Ctx); err != nil {
		t.Fatalf("commit heartbeat: %v", err)
	}
	var r reaped
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reaper did not finish")
	}
	if r.err != nil {
		t.Fatalf("reap: %v", r.err)
	}
	if r.n != 0 {
		t.Errorf("reaper ended %d runs whose lease had just been renewed, want 0", r.n)
	}
	if got := runRowOf(t, a, run.ID).Status; got != "running" {
		t.Fatalf("renewed run status = %s, want running", got)
	}
	if err := a.Heartbeat(claim, leaseLong); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	if err := a.Succeed(apptest.Worker, claim); err != nil {
		t.Errorf("succeed: %v", err)
	}
}

// TestRecordedTimesAreTheClocks: every decision records the time of the
// application's clock (injected here), so a run's times say when each
// step was decided, to the microsecond, whatever the wall clock did.
func TestRecordedTimesAreTheClocks(t *testing.T) {
	t.Parallel()
	clock := apptest.NewClock(time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC))
	a, tm := newGate(t, apptest.With(app.WithClock(clock.Now)))
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	accepted := clock.Now()
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Owner.ID, domain.SurfaceInventorySync, conn.ID)).Run
	if !run.CreatedAt.Equal(accepted) {
		t.Errorf("accepted at %v, the clock said %v", run.CreatedAt, accepted)
	}
	clock.Advance(90 * time.Second)
	claim, err := a.BeginRun(t, run.ID, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Minute)
	if err := a.Succeed(apptest.Worker, claim); err != nil {
		t.Fatal(err)
	}
	var started, finished time.Time
	for _, e := range a.RunEvents(t, run.ID) {
		switch p := a.Decode(t, e).(type) {
		case domain.RunStarted:
			started = p.At
		case domain.RunSucceeded:
			finished = p.At
		}
	}
	if want := accepted.Add(90 * time.Second); !started.Equal(want) {
		t.Errorf("started at %v, want %v", started, want)
	}
	if want := accepted.Add(90*time.Second + 5*time.Minute); !finished.Equal(want) {
		t.Errorf("finished at %v, want %v", finished, want)
	}
}

// TestCompletionRacingTheReaperOrACancel: a completion racing the reaper
// (its lease expired) or an operator's cancel, round after round: exactly
// one of them is recorded, and the completion is told when it lost.
func TestCompletionRacingTheReaperOrACancel(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	holder := gate.Claimant{ID: "racer", Actor: domain.ActorWorker("racer")}
	for round := range 40 {
		run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Owner.ID, domain.SurfaceInventorySync, conn.ID)).Run
		// A lease that has expired by the time the racers run.
		claim, err := a.BeginRun(t, run.ID, "racer", time.Microsecond)
		if err != nil {
			t.Fatal(err)
		}
		var completeErr, otherErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, completeErr = a.Gate.Complete(a.Ctx, holder, gate.Completion{RunID: run.ID, Epoch: claim.Epoch, Status: domain.StatusSucceeded})
		}()
		go func() {
			defer wg.Done()
			if round%2 == 0 {
				_, otherErr = a.Gate.ReapExpired(a.Ctx, 10)
			} else {
				_, otherErr = a.Gate.CancelRun(a.Ctx, apptest.As(tm.Owner.ID), run.ID)
			}
		}()
		wg.Wait()
		ends := 0
		for _, e := range a.RunEvents(t, run.ID) {
			switch e.Type {
			case "RunSucceeded", "RunFailed", "RunCancelled":
				ends++
			}
		}
		if ends != 1 {
			t.Fatalf("round %d: %d ends recorded, want exactly 1", round, ends)
		}
		succeeded := runRowOf(t, a, run.ID).Status == "succeeded"
		switch {
		case succeeded && completeErr != nil:
			t.Fatalf("round %d: the completion was recorded but answered %v", round, completeErr)
		case !succeeded && !errors.Is(completeErr, gate.ErrLeaseLost):
			t.Fatalf("round %d: the completion lost the race but was answered %v", round, completeErr)
		case round%2 == 1 && succeeded && !errors.Is(otherErr, domain.ErrRunNotActive):
			t.Fatalf("round %d: the cancel lost the race but was answered %v", round, otherErr)
		}
	}
}

// TestBatchCompletionWithAStaleEpoch: completions recorded together are
// each fenced by their own epoch: a stale one is refused (lease lost) and
// records nothing, the others are recorded, and a repeat in the same
// batch is answered again without a second event.
func TestBatchCompletionWithAStaleEpoch(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	var claims []apptest.Claim
	for i := range 3 {
		c := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, fmt.Sprintf("Graph %d", i))
		run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, c.ID)).Run
		claim, err := a.BeginRun(t, run.ID, "w", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, claim)
	}
	done := func(c apptest.Claim, epoch int64) gate.Completion {
		return gate.Completion{RunID: c.RunID, Epoch: epoch, Status: domain.StatusSucceeded}
	}
	runs, repeated, errs := a.Gate.CompleteTogether(a.Ctx, gate.Claimant{Actor: apptest.Worker}, []gate.Completion{
		done(claims[0], claims[0].Epoch),
		done(claims[1], claims[1].Epoch+1), // stale: not the epoch of its claim
		done(claims[2], claims[2].Epoch),
		done(claims[0], claims[0].Epoch), // a repeat within the batch
	})
	for _, i := range []int{0, 2} {
		if errs[i] != nil || runs[i].Status != domain.StatusSucceeded || repeated[i] {
			t.Errorf("completion %d: %+v repeated=%v %v", i, runs[i], repeated[i], errs[i])
		}
	}
	if !errors.Is(errs[1], gate.ErrLeaseLost) {
		t.Errorf("the stale completion: %v, want lease lost", errs[1])
	}
	if errs[3] != nil || !repeated[3] || runs[3].ID != claims[0].RunID {
		t.Errorf("the repeat: %+v repeated=%v %v", runs[3], repeated[3], errs[3])
	}
	if got := a.RunStatus(t, claims[1].RunID); got != domain.StatusRunning {
		t.Errorf("the stale completion's run is %s, want still running", got)
	}
	for i, c := range claims {
		want := 1
		if i == 1 {
			want = 0
		}
		if n := a.Count(t, `SELECT count(*) FROM events WHERE event_type = 'RunSucceeded' AND payload->>'run_id' = $1`, c.RunID); n != want {
			t.Errorf("run %d has %d RunSucceeded events, want %d", i, n, want)
		}
	}
}
