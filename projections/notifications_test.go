package projections_test

import (
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

// TestNotificationsGoToTheInitiatorOnly: a terminal outcome of an
// accepted run notifies its initiator, once; other members of the tenant,
// the canceller, deduped starters and blocked starts get nothing.
func TestNotificationsGoToTheInitiatorOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)
	tn, other := f.Tenant(t, f.workspace.ID, "Fabrikam"), f.Tenant(t, f.workspace.ID, "Northwind")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	alice := f.Member(t, "alice", tn.ID, domain.RoleOperator).ID
	bob := f.Member(t, "bob", tn.ID, domain.RoleOperator).ID
	auditor := f.Member(t, "auditor", tn.ID, domain.RoleAuditor).ID
	outsider := f.Member(t, "outsider", other.ID, domain.RoleOwner).ID
	connA := f.Connection(t, owner, tn.ID, "Graph A", apptest.AsDefault)
	connB := f.Connection(t, owner, tn.ID, "Graph B")
	connC := f.Connection(t, owner, tn.ID, "Graph C")
	off := f.Connection(t, owner, tn.ID, "Off", apptest.Disabled)

	// Alice's groups sync succeeds; Bob's start of the same is deduped on it.
	okRun := f.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(alice, domain.SurfaceGroupsSync, tn.ID, "")).Run
	f.Expect(t, domain.OutcomeDeduped, apptest.TenantStart(bob, domain.SurfaceGroupsSync, tn.ID, ""))
	f.Expect(t, domain.OutcomeScopeBusy, apptest.ConnStart(bob, domain.SurfaceInventorySync, connA.ID))
	c, err := f.BeginRun(t, okRun.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", okRun.ID, err)
	}
	if err := f.Succeed(apptest.Worker, c); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	// Bob's inventory sync fails.
	failRun := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(bob, domain.SurfaceInventorySync, connB.ID)).Run
	c, err = f.BeginRun(t, failRun.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", failRun.ID, err)
	}
	if err := f.Fail(apptest.Worker, c, domain.ReasonCredentialsRejected); err != nil {
		t.Fatalf("fail: %v", err)
	}
	// Alice's compliance snapshot is cancelled by the owner while running.
	cancelRun := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(alice, domain.SurfaceComplianceSnapshot, connC.ID)).Run
	if _, err := f.BeginRun(t, cancelRun.ID, "worker-test", leaseLong); err != nil {
		t.Fatalf("begin %s: %v", cancelRun.ID, err)
	}
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), cancelRun.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	// Bob's start on a apptest.Disabled connection is blocked: no notification.
	f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(bob, domain.SurfaceConnectionCheck, off.ID))
	// Alice's run still queued: no notification yet. (Not on Graph B: the
	// rejected credentials made it unready, and its starts are blocked.)
	pending := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(alice, domain.SurfaceConnectionCheck, connA.ID)).Run
	// A lost worker of Bob's: one failure notification.
	lost := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(bob, domain.SurfaceComplianceSnapshot, connC.ID)).Run
	if _, err := f.BeginRun(t, lost.ID, "worker-lost", time.Microsecond); err != nil {
		t.Fatalf("begin: %v", err)
	}
	apptest.WaitFor(t, 10*time.Second, "the reaper to end the lost run", func() bool {
		n, err := f.Gate.ReapExpired(f.Ctx, 10)
		if err != nil {
			t.Fatalf("reap: %v", err)
		}
		return n == 1
	})

	notes := func(user string) []projections.Notification {
		t.Helper()
		list, next, err := f.Reader.Notifications(f.Ctx, user, nil, "", 100)
		if err != nil {
			t.Fatalf("notifications of %s: %v", user, err)
		}
		if next != "" {
			t.Fatalf("notifications of %s: unexpected next page", user)
		}
		return list
	}
	type want struct {
		run    domain.Run
		status domain.RunStatus
		tone   domain.Tone
		reason domain.ReasonCode
	}
	check := func(user string, wants ...want) {
		t.Helper()
		got := notes(user)
		if len(got) != len(wants) {
			t.Errorf("user %s has %d notifications, want %d: %+v", user, len(got), len(wants), got)
			return
		}
		for i, w := range wants { // newest first
			n := got[i]
			if n.RunID != w.run.ID || n.Status != w.status || n.TenantID != tn.ID || n.Message.Tone != w.tone {
				t.Errorf("user %s notification %d: run %s status %s tone %s tenant %s, want run %s status %s tone %s",
					user, i, n.RunID, n.Status, n.Message.Tone, n.TenantID, w.run.ID, w.status, w.tone)
			}
			if n.Message.Title == "" || n.Message.Body == "" {
				t.Errorf("user %s notification %d: empty message %+v", user, i, n.Message)
			}
			if n.Links.Self != domain.RunHref(w.run.ID) {
				t.Errorf("user %s notification %d: link %s", user, i, n.Links.Self)
			}
			checkReason(t, "notification of "+w.run.ID, n.Reason, w.reason)
			if w.reason != "" && len(n.NextSteps) == 0 {
				t.Errorf("user %s notification %d: no next steps for %s", user, i, w.reason)
			}
			// The notification says what the run detail says.
			v := f.getRun(t, w.run.ID)
			msg, steps := domain.PresentRun(v.Run)
			if msg != n.Message || len(steps) != len(n.NextSteps) {
				t.Errorf("user %s notification %d: message %+v / %d steps, the run's presenter says %+v / %d steps",
					user, i, n.Message, len(n.NextSteps), msg, len(steps))
			}
			if v.FinishedAt == nil || !n.CreatedAt.Equal(*v.FinishedAt) {
				t.Errorf("user %s notification %d: created %v, run finished %v", user, i, n.CreatedAt, v.FinishedAt)
			}
		}
	}
	check(alice,
		want{cancelRun, domain.StatusCancelled, domain.ToneWarning, domain.ReasonCancelled},
		want{okRun, domain.StatusSucceeded, domain.ToneSuccess, ""})
	check(bob,
		want{lost, domain.StatusFailed, domain.ToneDanger, domain.ReasonExecutionLost},
		want{failRun, domain.StatusFailed, domain.ToneDanger, domain.ReasonCredentialsRejected})
	check(owner)
	check(auditor)
	check(outsider)

	// Paging: one per page.
	first, next, err := f.Reader.Notifications(f.Ctx, alice, nil, "", 1)
	if err != nil || len(first) != 1 || next != first[0].ID {
		t.Fatalf("first page: %+v next %q err %v", first, next, err)
	}
	second, next, err := f.Reader.Notifications(f.Ctx, alice, nil, next, 1)
	if err != nil || len(second) != 1 || second[0].RunID != okRun.ID || next != "" {
		t.Fatalf("second page: %+v next %q err %v", second, next, err)
	}

	// Exactly one per ended run; none for the blocked and the queued run.
	if n := f.Count(t, `SELECT count(*) FROM projections.ops_notifications`); n != 4 {
		t.Errorf("%d notifications in all, want 4", n)
	}
	if n := f.Count(t, `SELECT count(*) FROM projections.ops_notifications WHERE run_id = $1`, pending.ID); n != 0 {
		t.Errorf("queued run has %d notifications", n)
	}
	if n := f.Count(t, `SELECT count(*) FROM projections.ops_notifications n JOIN projections.ops_runs r ON r.id = n.run_id
		WHERE r.status = 'blocked'`); n != 0 {
		t.Errorf("blocked runs have %d notifications", n)
	}

	// Ending the pending run notifies Alice once more; re-cancelling it is refused.
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(bob), pending.ID); err != nil {
		t.Fatalf("cancel pending: %v", err)
	}
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), pending.ID); err == nil {
		t.Fatal("second cancel accepted")
	}
	if got := notes(alice); len(got) != 3 || got[0].RunID != pending.ID {
		t.Errorf("alice after the cancel: %+v", got)
	}
	check(bob,
		want{lost, domain.StatusFailed, domain.ToneDanger, domain.ReasonExecutionLost},
		want{failRun, domain.StatusFailed, domain.ToneDanger, domain.ReasonCredentialsRejected})
	f.verifyClean(t, "notifications")
}
