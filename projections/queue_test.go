package projections_test

import (
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

// TestQueueView: depth and the age of the oldest queued job follow runs
// as they are accepted, started and finished.
func TestQueueView(t *testing.T) {
	t.Parallel()
	// The other tenant's connection has a provider of its own: its run
	// stays queued while runs of this tenant are begun after it, and a
	// claim takes the oldest queued run of a provider.
	f := newFixture(t, apptest.Providers("other"))
	f.startProjectors(t)
	tn, other := f.Tenant(t, f.workspace.ID, "Fabrikam"), f.Tenant(t, f.workspace.ID, "Northwind")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	f.Grant(t, owner, other.ID, domain.RoleOwner)
	c1 := f.Connection(t, owner, tn.ID, "Graph 1")
	c2 := f.Connection(t, owner, tn.ID, "Graph 2")
	c3 := f.Connection(t, owner, tn.ID, "Graph 3")
	cx := f.Connection(t, owner, other.ID, "Graph X", apptest.Provider("other"))
	off := f.Connection(t, owner, tn.ID, "Off", apptest.Disabled)

	// queue reads the queue of tenantIDs after the queue projector caught up.
	queue := func(tenantIDs []string) projections.QueueStats {
		t.Helper()
		if ok, err := f.Reader.CatchUp(f.Ctx, "queue"); err != nil || !ok {
			t.Fatalf("queue projector did not catch up: %v", err)
		}
		q, err := f.Reader.Queue(f.Ctx, tenantIDs)
		if err != nil {
			t.Fatalf("queue: %v", err)
		}
		return q
	}
	// expect checks depth, and that the oldest queued age belongs to
	// oldest (nil: nothing queued): it lies between the run's age just
	// before and just after the read.
	mine := []string{tn.ID}
	expect := func(what string, tenantIDs []string, queued, running int, oldest *domain.Run) {
		t.Helper()
		var before time.Duration
		if oldest != nil {
			before = time.Since(oldest.CreatedAt)
		}
		q := queue(tenantIDs)
		if q.Queued != queued || q.Running != running {
			t.Errorf("%s: %d queued, %d running; want %d and %d", what, q.Queued, q.Running, queued, running)
		}
		if oldest == nil {
			if q.OldestQueuedAgeSec != nil {
				t.Errorf("%s: oldest queued age %v with nothing queued", what, *q.OldestQueuedAgeSec)
			}
			return
		}
		after := time.Since(oldest.CreatedAt)
		if q.OldestQueuedAgeSec == nil {
			t.Errorf("%s: no oldest queued age, want the age of %s", what, oldest.ID)
			return
		}
		age := time.Duration(*q.OldestQueuedAgeSec * float64(time.Second))
		// Timestamps are stored to the microsecond; allow for that rounding.
		if age < before-time.Millisecond || age > after+time.Millisecond {
			t.Errorf("%s: oldest queued age %v, want the age of %s: between %v and %v", what, age, oldest.ID, before, after)
		}
	}

	expect("empty", mine, 0, 0, nil)
	expect("empty, all tenants", nil, 0, 0, nil)

	r1 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, c1.ID)).Run
	expect("r1 queued", mine, 1, 0, &r1)
	// Deduped, busy and blocked starts queue nothing.
	f.Expect(t, domain.OutcomeDeduped, apptest.ConnStart(owner, domain.SurfaceInventorySync, c1.ID))
	f.Expect(t, domain.OutcomeScopeBusy, apptest.ConnStart(owner, domain.SurfaceComplianceSnapshot, c1.ID))
	f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(owner, domain.SurfaceInventorySync, off.ID))
	expect("after deduped, busy and blocked starts", mine, 1, 0, &r1)

	r2 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceComplianceSnapshot, c2.ID)).Run
	r3 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceConnectionCheck, c3.ID)).Run
	expect("r1, r2, r3 queued", mine, 3, 0, &r1)
	rx := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, cx.ID)).Run
	expect("other tenant", []string{other.ID}, 1, 0, &rx)
	expect("all tenants", nil, 4, 0, &r1)
	expect("both tenants", []string{tn.ID, other.ID}, 4, 0, &r1)
	expect("unknown tenant", []string{"nope"}, 0, 0, nil)

	claim1, err := f.BeginRun(t, r1.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", r1.ID, err)
	}
	expect("r1 running", mine, 2, 1, &r2)
	claim2, err := f.BeginRun(t, r2.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", r2.ID, err)
	}
	expect("r2 running", mine, 1, 2, &r3)
	if err := f.Succeed(apptest.Worker, claim1); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	expect("r1 succeeded", mine, 1, 1, &r3)
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), r3.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	expect("r3 cancelled while queued", mine, 0, 1, nil)
	if err := f.Fail(apptest.Worker, claim2, domain.ReasonUnavailable); err != nil {
		t.Fatalf("fail: %v", err)
	}
	expect("r2 failed", mine, 0, 0, nil)
	expect("other tenant untouched", []string{other.ID}, 1, 0, &rx)

	// A new run on the freed scope is the oldest queued one again.
	r4 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, c1.ID)).Run
	expect("r4 queued", mine, 1, 0, &r4)
	// A running run whose worker disappears leaves the queue when reaped.
	if _, err := f.BeginRun(t, r4.ID, "worker-lost", time.Microsecond); err != nil {
		t.Fatalf("begin: %v", err)
	}
	expect("r4 running", mine, 0, 1, nil)
	apptest.WaitFor(t, 10*time.Second, "the reaper", func() bool {
		n, err := f.Gate.ReapExpired(f.Ctx, 10)
		if err != nil {
			t.Fatalf("reap: %v", err)
		}
		return n == 1
	})
	expect("r4 reaped", mine, 0, 0, nil)

	// The rows themselves.
	var status string
	var queuedAt time.Time
	var startedAt *time.Time
	if err := f.Pool.QueryRow(f.Ctx, `SELECT status, queued_at, started_at FROM projections.ops_queue WHERE run_id = $1`, rx.ID).
		Scan(&status, &queuedAt, &startedAt); err != nil {
		t.Fatalf("queue row: %v", err)
	}
	if status != "queued" || !queuedAt.Equal(rx.CreatedAt.Truncate(time.Microsecond)) || startedAt != nil {
		t.Errorf("queue row of %s: %s queued %v started %v; want queued at %v", rx.ID, status, queuedAt, startedAt, rx.CreatedAt)
	}
	f.verifyClean(t, "queue")
}
