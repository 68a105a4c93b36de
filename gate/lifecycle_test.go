package gate_test

import (
	"errors"
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
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run

	// A result for a run still queued is refused.
	if err := f.svc.Succeed(f.ctx, worker, gate.Claim{RunID: run.ID, Epoch: 0}); !errors.Is(err, domain.ErrRunNotStarted) {
		t.Errorf("succeed while queued: err = %v, want ErrRunNotStarted", err)
	}

	claim, err := f.svc.BeginRun(f.ctx, run.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if claim.Epoch != 1 || claim.RunID != run.ID {
		t.Errorf("claim = %+v, want epoch 1", claim)
	}
	if row := f.runRow(run.ID); row.Status != "running" || row.Epoch != 1 {
		t.Errorf("runs row = %+v, want running at epoch 1", row)
	}
	if state, _ := f.scope(scope); state.Active == nil || state.Active.Status != domain.StatusRunning || state.Active.StartedAt == nil {
		t.Errorf("snapshot = %+v, want the run running", state.Active)
	}
	if _, err := f.svc.BeginRun(f.ctx, run.ID, "worker-2", leaseLong); !errors.Is(err, domain.ErrRunAlreadyStarted) {
		t.Errorf("second begin: err = %v, want ErrRunAlreadyStarted", err)
	}
	if err := f.beat(claim, leaseLong); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	// While running, a new start of the same operation is deduped on the running run.
	if res := f.start(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)); res.Outcome != domain.OutcomeDeduped || res.Run.Status != domain.StatusRunning {
		t.Errorf("start while running = %s (%s), want deduped on a running run", res.Outcome, res.Run.Status)
	}

	if err := f.svc.Succeed(f.ctx, worker, claim); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	if row := f.runRow(run.ID); row.Status != "succeeded" {
		t.Errorf("runs row status = %s, want succeeded", row.Status)
	}
	if got := f.activeRunID(scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	// Repeating the same completion is answered again and records nothing;
	// another one is refused.
	before := len(f.stream(string(scope)))
	if err := f.svc.Succeed(f.ctx, worker, claim); err != nil {
		t.Errorf("repeated succeed: err = %v, want nil", err)
	}
	if err := f.svc.Fail(f.ctx, worker, claim, domain.ReasonUnavailable); !errors.Is(err, domain.ErrRunNotActive) || !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("fail after success: err = %v, want ErrRunNotActive and ErrLeaseLost", err)
	}
	if after := len(f.stream(string(scope))); after != before {
		t.Errorf("the repeat and the refused completion recorded %d events", after-before)
	}
	if err := f.beat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after success: err = %v, want ErrLeaseLost", err)
	}

	next := f.accept(connStart(f.operator, domain.SurfaceComplianceSnapshot, conn.ID))
	if next.Run.ID == run.ID {
		t.Errorf("next start reused the finished run")
	}
	want := []string{"StartAccepted", "RunStarted", "StartDeduped", "RunSucceeded", "StartAccepted"}
	got := types(f.stream(string(scope)))
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
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run
	claim, err := f.svc.BeginRun(f.ctx, run.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}

	before := len(f.stream(string(scope)))
	if err := f.svc.Fail(f.ctx, worker, claim, "no.such.reason"); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("fail with an unknown reason: err = %v, want ErrInvalidCommand", err)
	}
	if err := f.svc.Fail(f.ctx, worker, claim, domain.ReasonDeduped); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Errorf("fail with start.deduped (a reason that never ends a run): err = %v, want ErrInvalidCommand", err)
	}
	if err := f.svc.Fail(f.ctx, worker, gate.Claim{RunID: run.ID, Epoch: claim.Epoch + 1}, domain.ReasonThrottled); !errors.Is(err, domain.ErrStaleEpoch) {
		t.Errorf("fail from a future epoch: err = %v, want ErrStaleEpoch", err)
	}
	if err := f.svc.Succeed(f.ctx, worker, gate.Claim{RunID: run.ID, Epoch: claim.Epoch - 1}); !errors.Is(err, domain.ErrStaleEpoch) {
		t.Errorf("succeed from a stale epoch: err = %v, want ErrStaleEpoch", err)
	}
	if after := len(f.stream(string(scope))); after != before {
		t.Errorf("rejected results recorded %d events", after-before)
	}
	if row := f.runRow(run.ID); row.Status != "running" {
		t.Errorf("runs row status = %s after rejected results, want running", row.Status)
	}

	if err := f.svc.Fail(f.ctx, worker, claim, domain.ReasonThrottled); err != nil {
		t.Fatalf("fail: %v", err)
	}
	if row := f.runRow(run.ID); row.Status != "failed" {
		t.Errorf("runs row status = %s, want failed", row.Status)
	}
	events := f.stream(string(scope))
	failed, ok := f.decode(events[len(events)-1]).(domain.RunFailed)
	if !ok || failed.Reason.Code != domain.ReasonThrottled || failed.Reason.Class != domain.ClassProviderThrottled || failed.Epoch != 1 {
		t.Errorf("last event = %s %+v, want RunFailed provider.throttled at epoch 1", events[len(events)-1].Type, failed)
	}
	if got := f.activeRunID(scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))
}

func TestLifecycleCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run

	if _, err := f.svc.CancelRun(f.ctx, apptest.As(f.outsider), run.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("outsider cancel: err = %v, want ErrNotFound", err)
	}
	var fe *domain.ForbiddenError
	if _, err := f.svc.CancelRun(f.ctx, apptest.As(f.readonly), run.ID); !errors.As(err, &fe) || fe.Capability != domain.CapInventorySync {
		t.Errorf("readonly cancel: err = %v, want ForbiddenError naming inventory.sync", err)
	}
	if got := f.runRow(run.ID).Status; got != "queued" {
		t.Fatalf("refused cancels changed the run to %s", got)
	}

	cancelled, err := f.svc.CancelRun(f.ctx, apptest.As(f.operator), run.ID)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if cancelled.WasRunning || cancelled.Reason.Code != domain.ReasonCancelled || cancelled.ActorID != f.operator {
		t.Errorf("RunCancelled = %+v", cancelled)
	}
	if got := f.runRow(run.ID).Status; got != "cancelled" {
		t.Errorf("runs row status = %s, want cancelled", got)
	}
	if got := f.activeRunID(scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	if _, err := f.svc.BeginRun(f.ctx, run.ID, "worker-1", leaseLong); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("begin after cancel: err = %v, want ErrRunNotActive", err)
	}
	if _, err := f.svc.CancelRun(f.ctx, apptest.As(f.operator), run.ID); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("second cancel: err = %v, want ErrRunNotActive", err)
	}
	if _, err := f.svc.CancelRun(f.ctx, apptest.As(f.operator), "01HZZZZZZZZZZZZZZZZZZZZZZZ"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("cancel of an unknown run: err = %v, want ErrNotFound", err)
	}

	// A running run can be cancelled too; its worker's claim is then dead.
	next := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run
	claim, err := f.svc.BeginRun(f.ctx, next.ID, "worker-1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if c, err := f.svc.CancelRun(f.ctx, apptest.As(f.owner), next.ID); err != nil || !c.WasRunning {
		t.Fatalf("cancel running = %+v, %v", c, err)
	}
	if err := f.beat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after cancel: err = %v, want ErrLeaseLost", err)
	}
	if err := f.svc.Succeed(f.ctx, worker, claim); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("succeed after cancel: err = %v, want ErrRunNotActive", err)
	}
	if got := f.runRow(next.ID).Status; got != "cancelled" {
		t.Errorf("runs row status = %s, want cancelled", got)
	}
}

func TestReapExpiredLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	scope := domain.ConnectionScope(conn.ID)
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run

	// A healthy run on another connection must survive the reaper.
	healthyConn := f.connection("Healthy")
	healthy := f.accept(connStart(f.operator, domain.SurfaceInventorySync, healthyConn.ID)).Run
	if _, err := f.svc.BeginRun(f.ctx, healthy.ID, "worker-2", leaseLong); err != nil {
		t.Fatalf("begin healthy: %v", err)
	}

	claim, err := f.svc.BeginRun(f.ctx, run.ID, "worker-1", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	waitFor(t, 30*time.Second, "the reaper to end the expired run", func() bool {
		n, err := f.svc.ReapExpired(f.ctx, 10)
		if err != nil {
			t.Fatalf("reap: %v", err)
		}
		if n > 1 {
			t.Fatalf("reaped %d runs, want 1", n)
		}
		return n == 1
	})

	if got := f.runRow(run.ID).Status; got != "failed" {
		t.Errorf("reaped run status = %s, want failed", got)
	}
	events := f.stream(string(scope))
	last := events[len(events)-1]
	failed, ok := f.decode(last).(domain.RunFailed)
	if !ok || failed.Reason.Code != domain.ReasonExecutionLost || failed.Reason.Class != domain.ClassExecutionInterrupted {
		t.Errorf("last event = %s %+v, want RunFailed execution.lost", last.Type, failed)
	}
	if last.Metadata.Actor != "system:reaper" {
		t.Errorf("reap recorded by %q, want system:reaper", last.Metadata.Actor)
	}
	if got := f.activeRunID(scope); got != "" {
		t.Errorf("scope still held by %s", got)
	}
	if got := f.runRow(healthy.ID).Status; got != "running" {
		t.Errorf("healthy run status = %s, want running", got)
	}

	// The lost worker comes back: everything it reports is refused.
	versionBefore := len(events)
	if err := f.svc.Succeed(f.ctx, worker, claim); !errors.Is(err, domain.ErrRunNotActive) {
		t.Errorf("late succeed: err = %v, want ErrRunNotActive", err)
	}
	if err := f.beat(claim, leaseLong); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("heartbeat after reaping: err = %v, want ErrLeaseLost", err)
	}
	if got := f.runRow(run.ID).Status; got != "failed" {
		t.Errorf("run status after late succeed = %s, want failed", got)
	}
	if got := len(f.stream(string(scope))); got != versionBefore {
		t.Errorf("late reports recorded %d events", got-versionBefore)
	}
	if n, err := f.svc.ReapExpired(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("second reap = %d, %v; want 0", n, err)
	}
	// The scope is free for the next start.
	f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))
}

// A heartbeat that commits while the reaper is deciding wins: the reaper
// must not end a run on the strength of a lease that was renewed before
// it recorded the loss (the worker was told its lease holds).
func TestReapDoesNotEndRunRenewedMeanwhile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID)).Run
	claim, err := f.svc.BeginRun(f.ctx, run.ID, "worker-1", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	waitFor(t, 30*time.Second, "the lease to expire", func() bool {
		return f.count(`SELECT count(*) FROM runs WHERE id = $1 AND lease_expires_at < clock_timestamp()`, run.ID) == 1
	})

	// The worker's heartbeat is in flight: its renewal is written, not yet committed.
	heartbeat, err := f.pool.Begin(f.ctx)
	if err != nil {
		t.Fatalf("begin heartbeat: %v", err)
	}
	defer heartbeat.Rollback(f.ctx) //nolint:errcheck // no-op after commit
	tag, err := heartbeat.Exec(f.ctx, `UPDATE runs SET lease_expires_at = clock_timestamp() + interval '5 minutes'
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
		n, err := f.svc.ReapExpired(f.ctx, 10)
		done <- reaped{n, err}
	}()
	// Wait until the reaper waits for the heartbeat's row (or has finished).
	waitFor(t, 30*time.Second, "the reaper to reach the renewed run", func() bool {
		if len(done) > 0 {
			return true
		}
		return f.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
	})
	if err := heartbeat.Commit(f.ctx); err != nil {
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
	if got := f.runRow(run.ID).Status; got != "running" {
		t.Fatalf("renewed run status = %s, want running", got)
	}
	if err := f.beat(claim, leaseLong); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	if err := f.svc.Succeed(f.ctx, worker, claim); err != nil {
		t.Errorf("succeed: %v", err)
	}
}

// TestRecordedTimesAreTheClocks: every decision records the time of the
// application's clock (injected here), so a run's times say when each
// step was decided, to the microsecond, whatever the wall clock did.
func TestRecordedTimesAreTheClocks(t *testing.T) {
	t.Parallel()
	clock := apptest.NewClock(time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC))
	f := newFixtureOn(t, apptest.Start(t, apptest.Roles(app.Roles{}), apptest.With(app.WithClock(clock.Now))))
	conn := f.connection("Graph")
	accepted := clock.Now()
	run := f.accept(connStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	if !run.CreatedAt.Equal(accepted) {
		t.Errorf("accepted at %v, the clock said %v", run.CreatedAt, accepted)
	}
	clock.Advance(90 * time.Second)
	claim, err := f.svc.BeginRun(f.ctx, run.ID, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Minute)
	if err := f.svc.Succeed(f.ctx, worker, claim); err != nil {
		t.Fatal(err)
	}
	var started, finished time.Time
	for _, e := range f.app.RunEvents(run.ID) {
		switch p := f.decode(e).(type) {
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
