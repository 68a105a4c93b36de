package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/worker"
)

// The worker claims accepted runs and nothing else, whatever else the
// gate and the tenancy commands record meanwhile: only acceptances queue
// a run.
func TestWorkerClaimsOnlyAcceptedRuns(t *testing.T) {
	f := newFixture(t)
	busy := f.Connection(t, f.owner, f.tenant.ID, "Busy")
	other := f.Connection(t, f.owner, f.tenant.ID, "Other")
	off := f.Connection(t, f.owner, f.tenant.ID, "Disabled", apptest.Disabled)
	unconsented := f.Connection(t, f.owner, f.tenant.ID, "No consent", apptest.Consent(domain.ConsentMissing))
	noDefault := f.Tenant(t, f.workspace.ID, "No default")
	if _, err := f.Tenancy.GrantMembership(f.Ctx, apptest.Admin, f.owner, noDefault.ID, string(domain.RoleOwner)); err != nil {
		t.Fatalf("grant: %v", err)
	}
	f.runWorker(t, config("worker-1"), 5*time.Second)

	var accepted []string
	outcomes := map[domain.Outcome]int{}
	for round := 0; round < 3; round++ {
		release := f.probe.hold(busy.ID)
		run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, busy.ID)).Run
		side := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceComplianceSnapshot, other.ID)).Run
		accepted = append(accepted, run.ID, side.ID)
		outcomes[domain.OutcomeAccepted] += 2
		apptest.WaitFor(t, waitTimeout, "the held run to execute", func() bool { return f.probe.calls(run.ID) == 1 })

		if got := f.Expect(t, domain.OutcomeDeduped, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, busy.ID)).Run; got.ID != run.ID {
			t.Errorf("deduped onto %s, want %s", got.ID, run.ID)
		}
		if got := f.Expect(t, domain.OutcomeScopeBusy, apptest.ConnStart(f.owner, domain.SurfaceComplianceSnapshot, busy.ID)).Run; got.ID != run.ID {
			t.Errorf("scope_busy names %s, want %s", got.ID, run.ID)
		}
		f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(f.owner, domain.SurfaceConnectionCheck, off.ID))
		f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, unconsented.ID))
		res := f.Start(t, gate.StartRequest{Actor: apptest.As(f.owner), Surface: domain.SurfaceTenantVerification, TenantID: noDefault.ID})
		if res.Outcome != domain.OutcomeBlocked || res.Reason == nil || res.Reason.Code != domain.ReasonMissingDefault {
			t.Fatalf("tenant verification without a default = %s %+v, want blocked missing_default", res.Outcome, res.Reason)
		}
		outcomes[domain.OutcomeDeduped]++
		outcomes[domain.OutcomeScopeBusy]++
		outcomes[domain.OutcomeBlocked] += 3

		// Tenancy and connection events between the starts.
		f.Member(t, fmt.Sprintf("operator-%d", round), f.tenant.ID, domain.RoleOperator)
		extra := f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Extra %d", round))
		name := fmt.Sprintf("Renamed %d", round)
		if _, err := f.Connections.Update(f.Ctx, apptest.As(f.owner), extra.ID, connections.Patch{DisplayName: &name}); err != nil {
			t.Fatalf("rename: %v", err)
		}
		if _, err := f.Connections.MakeDefault(f.Ctx, apptest.As(f.owner), extra.ID); err != nil {
			t.Fatalf("make default: %v", err)
		}

		release()
		f.waitStatus(t, run.ID, domain.StatusSucceeded)
		f.waitStatus(t, side.ID, domain.StatusSucceeded)
	}
	claimed := map[string]bool{}
	for _, e := range f.eventsOfType(t, "RunStarted") {
		claimed[f.Decode(t, e).(domain.RunStarted).RunID] = true
	}
	if len(claimed) != len(accepted) {
		t.Errorf("the worker claimed %d runs, want the %d accepted ones", len(claimed), len(accepted))
	}
	for _, id := range accepted {
		if !claimed[id] {
			t.Errorf("accepted run %s was never claimed", id)
		}
	}
	executed := f.probe.executed()
	for _, id := range accepted {
		if !executed[id] {
			t.Errorf("accepted run %s was never executed", id)
		}
	}
	if len(executed) != len(accepted) {
		t.Errorf("the provider executed %d runs, want the %d accepted ones", len(executed), len(accepted))
	}
	// The store did record every other kind of event meanwhile.
	for _, typ := range []string{"StartDeduped", "StartScopeBusy", "StartBlocked", "RunStarted", "RunSucceeded",
		"UserCreated", "MembershipGranted", "ProviderConnectionCreated", "ProviderConnectionRenamed", "ProviderConnectionMadeDefault"} {
		if n := f.Count(t, `SELECT count(*) FROM events WHERE event_type = $1`, typ); n == 0 {
			t.Errorf("the workload recorded no %s event", typ)
		}
	}
	t.Logf("outcomes %v; the worker claimed %d runs", outcomes, len(claimed))
}

// accepted -> running -> succeeded frees the scope for the next start.
func TestAcceptedRunSucceedsAndFreesScope(t *testing.T) {
	f := newFixture(t)
	conn := f.Connection(t, f.owner, f.tenant.ID, "Graph")
	scope := domain.ConnectionScope(conn.ID)
	f.runWorker(t, config("worker-1"), 5*time.Second)

	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	f.waitStatus(t, run.ID, domain.StatusSucceeded)

	var epoch int64
	var workerID string
	var leaseCleared bool
	err := f.Pool.QueryRow(f.Ctx, `SELECT epoch, worker_id, lease_expires_at IS NULL FROM runs WHERE id = $1`, run.ID).
		Scan(&epoch, &workerID, &leaseCleared)
	if err != nil {
		t.Fatalf("runs row: %v", err)
	}
	if epoch != 1 || workerID != "worker-1" || !leaseCleared {
		t.Errorf("runs row: epoch %d, worker %q, lease cleared %v; want 1, worker-1, true", epoch, workerID, leaseCleared)
	}
	want := []string{"StartAccepted", "RunStarted", "RunSucceeded"}
	if got := apptest.Types(f.Stream(t, string(scope))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("scope stream = %v, want %v", got, want)
	}
	if n := f.Count(t, `SELECT count(*) FROM scopes WHERE scope_id = $1 AND state->'active' IS NOT NULL`, string(scope)); n != 0 {
		t.Errorf("the scope is still held after the run succeeded")
	}

	next := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceComplianceSnapshot, conn.ID)).Run
	f.waitStatus(t, next.ID, domain.StatusSucceeded)
	if f.probe.calls(run.ID) != 1 || f.probe.calls(next.ID) != 1 {
		t.Errorf("provider calls: %d and %d, want 1 each", f.probe.calls(run.ID), f.probe.calls(next.ID))
	}
}

// The worker executes against the connection pinned at acceptance, never
// against the tenant's default as it is at execution time.
func TestRunExecutesAgainstPinnedConnection(t *testing.T) {
	f := newFixture(t)
	pinned := f.Connection(t, f.owner, f.tenant.ID, "Pinned", apptest.Provider(providerRecording), apptest.AsDefault)
	later := f.Connection(t, f.owner, f.tenant.ID, "Later default", apptest.Provider(providerRecording))
	groupsSync := gate.StartRequest{Actor: apptest.As(f.owner), Surface: domain.SurfaceGroupsSync, TenantID: f.tenant.ID}

	// Accepted while no worker runs: pinned to the default of that moment.
	first := f.Start(t, groupsSync)
	if first.Outcome != domain.OutcomeAccepted || first.Run.ProviderConnection == nil || first.Run.ProviderConnection.ID != pinned.ID {
		t.Fatalf("first start = %s pinned to %+v, want accepted on %s", first.Outcome, first.Run.ProviderConnection, pinned.ID)
	}
	if _, err := f.Connections.MakeDefault(f.Ctx, apptest.As(f.owner), later.ID); err != nil {
		t.Fatalf("make default: %v", err)
	}
	second := f.Start(t, groupsSync)
	if second.Outcome != domain.OutcomeAccepted || second.Run.ProviderConnection.ID != later.ID {
		t.Fatalf("second start = %s pinned to %+v, want accepted on %s", second.Outcome, second.Run.ProviderConnection, later.ID)
	}

	w := f.runWorker(t, config("worker-1"), 5*time.Second)
	f.waitStatus(t, first.Run.ID, domain.StatusSucceeded)
	f.waitStatus(t, second.Run.ID, domain.StatusSucceeded)
	if got := f.probe.connectionOf(first.Run.ID); got != pinned.ID {
		t.Errorf("first run executed against %q, want the pinned %s (the default is now %s)", got, pinned.ID, later.ID)
	}
	if got := f.probe.connectionOf(second.Run.ID); got != later.ID {
		t.Errorf("second run executed against %q, want %s", got, later.ID)
	}

	// A pinned connection that became unusable fails the run; the worker
	// never switches to the (usable) default instead.
	w.stop(t)
	third := f.Start(t, groupsSync) // pinned to "later"
	if third.Outcome != domain.OutcomeAccepted || third.Run.ProviderConnection.ID != later.ID {
		t.Fatalf("third start = %s pinned to %+v, want accepted on %s", third.Outcome, third.Run.ProviderConnection, later.ID)
	}
	off := false
	if _, err := f.Connections.Update(f.Ctx, apptest.As(f.owner), later.ID, connections.Patch{Enabled: &off}); err != nil {
		t.Fatalf("disable: %v", err)
	}
	// The first connection, usable, is the default again; the run must
	// still not switch to it.
	if _, err := f.Connections.MakeDefault(f.Ctx, apptest.As(f.owner), pinned.ID); err != nil {
		t.Fatalf("make default: %v", err)
	}
	f.runWorker(t, config("worker-2"), 5*time.Second)
	f.waitStatus(t, third.Run.ID, domain.StatusFailed)
	if r := f.lastReason(t, third.Run.ID); r == nil || r.Code != domain.ReasonDisabled {
		t.Errorf("third run failed with %+v, want provider_connection.disabled", r)
	}
	if got := f.probe.calls(third.Run.ID); got != 0 {
		t.Errorf("the provider was called %d times for a run whose pinned connection is apptest.Disabled (last against %q)", got, f.probe.connectionOf(third.Run.ID))
	}
}

// Failures found during execution carry the same reason class as the
// blocked start for the same problem.
func TestExecutionFailuresShareReasonClassWithBlockedStarts(t *testing.T) {
	f := newFixture(t)
	blockedClass := func(change func(*connections.NewConnection)) domain.ReasonClass {
		t.Helper()
		c := f.Connection(t, f.owner, f.tenant.ID, "Blocked", change)
		res := f.Start(t, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, c.ID))
		if res.Outcome != domain.OutcomeBlocked || res.Reason == nil {
			t.Fatalf("start on a connection that is not ready = %s, want blocked", res.Outcome)
		}
		return res.Reason.Class
	}
	credentialsClass := blockedClass(apptest.Credentials(domain.CredentialsInvalid))
	consentClass := blockedClass(apptest.Consent(domain.ConsentMissing))
	accessClass := blockedClass(apptest.Disabled)

	type tc struct {
		name      string
		change    []apptest.ConnectionOption
		after     *connections.Patch // applied after acceptance, before execution
		status    domain.RunStatus
		code      domain.ReasonCode
		class     domain.ReasonClass
		calls     int
		runID     string
		connID    string
		blockedAs domain.ReasonClass // the class of the matching blocked start
	}
	off, revoked, expired := false, domain.ConsentRevoked, domain.CredentialsExpired
	cases := []*tc{
		{name: "credentials rejected", change: []apptest.ConnectionOption{apptest.FailWith(domain.ReasonCredentialsRejected)},
			status: domain.StatusFailed, code: domain.ReasonCredentialsRejected, class: domain.ClassProviderCredentials, calls: 1, blockedAs: credentialsClass},
		{name: "consent revoked", change: []apptest.ConnectionOption{apptest.FailWith(domain.ReasonConsentRevoked)},
			status: domain.StatusFailed, code: domain.ReasonConsentRevoked, class: domain.ClassProviderConsent, calls: 1, blockedAs: consentClass},
		{name: "unavailable", change: []apptest.ConnectionOption{apptest.FailWith(domain.ReasonUnavailable)},
			status: domain.StatusFailed, code: domain.ReasonUnavailable, class: domain.ClassProviderUnavailable, calls: 1},
		{name: "throttled past retries", change: []apptest.ConnectionOption{apptest.Throttle(10)},
			status: domain.StatusFailed, code: domain.ReasonThrottled, class: domain.ClassProviderThrottled, calls: 3},
		{name: "throttled once", change: []apptest.ConnectionOption{apptest.Throttle(1)},
			status: domain.StatusSucceeded, calls: 2},
		{name: "disabled after acceptance", after: &connections.Patch{Enabled: &off},
			status: domain.StatusFailed, code: domain.ReasonDisabled, class: domain.ClassProviderAccess, calls: 0, blockedAs: accessClass},
		{name: "consent revoked after acceptance", after: &connections.Patch{Consent: &revoked},
			status: domain.StatusFailed, code: domain.ReasonConsentMissing, class: domain.ClassProviderConsent, calls: 0, blockedAs: consentClass},
		{name: "credentials expired after acceptance", after: &connections.Patch{Credentials: &expired},
			status: domain.StatusFailed, code: domain.ReasonCredentialsInvalid, class: domain.ClassProviderCredentials, calls: 0, blockedAs: credentialsClass},
	}
	// Accept everything first, change connections, then let the worker run.
	for _, c := range cases {
		conn := f.Connection(t, f.owner, f.tenant.ID, c.name, c.change...)
		c.connID = conn.ID
		c.runID = f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run.ID
		if c.after != nil {
			if _, err := f.Connections.Update(f.Ctx, apptest.As(f.owner), conn.ID, *c.after); err != nil {
				t.Fatalf("%s: update connection: %v", c.name, err)
			}
		}
	}
	f.runWorker(t, config("worker-1"), 5*time.Second) // ThrottleRetries 2
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.waitStatus(t, c.runID, c.status)
			reason := f.lastReason(t, c.runID)
			switch {
			case c.status == domain.StatusSucceeded:
				if reason != nil {
					t.Errorf("succeeded run carries reason %+v", reason)
				}
			case reason == nil:
				t.Fatalf("failed run has no reason")
			default:
				if reason.Code != c.code || reason.Class != c.class {
					t.Errorf("reason = %s/%s, want %s/%s", reason.Code, reason.Class, c.code, c.class)
				}
				if c.blockedAs != "" && reason.Class != c.blockedAs {
					t.Errorf("class %s differs from the matching blocked start's %s", reason.Class, c.blockedAs)
				}
			}
			if got := f.probe.calls(c.runID); got != c.calls {
				t.Errorf("provider called %d times, want %d", got, c.calls)
			}
			// Whatever the result, the scope is free again.
			if n := f.Count(t, `SELECT count(*) FROM runs WHERE scope_id = $1 AND status IN ('queued','running')`,
				string(domain.ConnectionScope(c.connID))); n != 0 {
				t.Errorf("%d runs still hold the scope", n)
			}
		})
	}
}

// A worker that disappears mid-run leaves it to the reaper, which fails it
// with execution.lost and frees the scope.
func TestKilledWorkerRunIsReaped(t *testing.T) {
	f := newFixture(t)
	conn := f.Connection(t, f.owner, f.tenant.ID, "Slow", apptest.Latency(5000))
	a := f.runWorker(t, config("worker-a"), 0)
	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	f.waitStatus(t, run.ID, domain.StatusRunning)
	apptest.WaitFor(t, waitTimeout, "the provider to be called", func() bool { return f.probe.calls(run.ID) == 1 })

	a.stop(t) // grace 0: the running operation is abandoned to its lease
	if err, returned := f.probe.ctxErr(run.ID); !returned || !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned execution: returned %v, ctx err %v; want it cancelled", returned, err)
	}
	if got := f.RunStatus(t, run.ID); got != "running" {
		t.Fatalf("abandoned run is %s, want still running (nothing recorded)", got)
	}
	if got := apptest.Types(f.RunEvents(t, run.ID)); fmt.Sprint(got) != "[StartAccepted RunStarted]" {
		t.Fatalf("abandoned run's events = %v", got)
	}
	// Until it is reaped the run holds its scope.
	if got := f.Expect(t, domain.OutcomeDeduped, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run; got.ID != run.ID {
		t.Errorf("deduped onto %s, want %s", got.ID, run.ID)
	}

	f.runWorker(t, config("worker-b"), 5*time.Second) // its reaper ends the run
	f.waitStatus(t, run.ID, domain.StatusFailed)
	if r := f.lastReason(t, run.ID); r == nil || r.Code != domain.ReasonExecutionLost || r.Class != domain.ClassExecutionInterrupted {
		t.Errorf("reaped run's reason = %+v, want execution.lost/execution_interrupted", r)
	}
	events := f.RunEvents(t, run.ID)
	if last := events[len(events)-1]; last.Metadata.Actor != "system:reaper" {
		t.Errorf("reaped by %q, want system:reaper", last.Metadata.Actor)
	}
	if got := f.probe.calls(run.ID); got != 1 {
		t.Errorf("the run was executed %d times, want once (worker-b must not pick it up)", got)
	}

	// The scope is free: the next start is accepted and runs.
	if _, err := f.Connections.Update(f.Ctx, apptest.As(f.owner), conn.ID, connections.Patch{SetSimulation: true}); err != nil {
		t.Fatalf("clear simulation: %v", err)
	}
	next := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	f.waitStatus(t, next.ID, domain.StatusSucceeded)
}

// Two workers on one database never both start a run.
func TestTwoWorkersNeverStartTheSameRun(t *testing.T) {
	f := newFixture(t)
	const n = 50
	conns := make([]connections.Connection, n)
	for i := range conns {
		conns[i] = f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Connection %d", i), apptest.Latency(10))
	}
	f.runWorker(t, config("worker-1"), 5*time.Second)
	f.runWorker(t, config("worker-2"), 5*time.Second)

	runs := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 10 {
				resp, err := f.Gate.Start(f.Ctx, gate.StartRequest{Actor: apptest.As(f.owner), Surface: domain.SurfaceInventorySync, ConnectionID: conns[i].ID})
				if err != nil {
					errs <- err
					return
				}
				if resp.Result.Outcome != domain.OutcomeAccepted {
					errs <- fmt.Errorf("start %d: %s", i, resp.Result.Outcome)
					return
				}
				runs[i] = resp.Result.Run.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	apptest.WaitFor(t, waitTimeout, "every run to succeed", func() bool {
		if n := f.Count(t, `SELECT count(*) FROM runs WHERE status NOT IN ('queued','running','succeeded')`); n > 0 {
			t.Fatalf("%d runs ended other than succeeded", n)
		}
		return f.Count(t, `SELECT count(*) FROM runs WHERE status = 'succeeded'`) == n
	})
	for _, id := range runs {
		if got := countType(f.RunEvents(t, id), "RunStarted"); got != 1 {
			t.Errorf("run %s has %d RunStarted events, want 1", id, got)
		}
		if got := f.probe.calls(id); got != 1 {
			t.Errorf("run %s was executed %d times, want 1", id, got)
		}
	}
	rows, err := f.Pool.Query(f.Ctx, `SELECT worker_id, count(*) FROM runs GROUP BY worker_id ORDER BY worker_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var w string
		var c int
		if err := rows.Scan(&w, &c); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s started %d runs", w, c)
	}
}

// Runs that ended are never claimed again: a worker that starts after
// every run succeeded executes nothing and records nothing.
func TestEndedRunsAreNotClaimedAgain(t *testing.T) {
	f := newFixture(t)
	var runs []string
	for i := 0; i < 5; i++ {
		conn := f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Connection %d", i))
		runs = append(runs, f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run.ID)
	}
	w := f.runWorker(t, config("worker-1"), 5*time.Second)
	for _, id := range runs {
		f.waitStatus(t, id, domain.StatusSucceeded)
	}
	w.stop(t)

	lateConn := f.Connection(t, f.owner, f.tenant.ID, "Late")
	calls := f.probe.totalCalls()
	events := f.Count(t, `SELECT count(*) FROM events`)
	again := f.runWorker(t, config("worker-2"), 5*time.Second)
	// A run accepted now is claimed by the new worker: it is looking.
	late := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, lateConn.ID)).Run
	f.waitStatus(t, late.ID, domain.StatusSucceeded)
	again.stop(t)

	if got := f.probe.totalCalls(); got != calls+1 {
		t.Errorf("provider calls went from %d to %d; want only the late run's", calls, got)
	}
	if got := f.Count(t, `SELECT count(*) FROM events`); got != events+3 {
		t.Errorf("%d events recorded, want the late run's 3", got-events)
	}
	for _, id := range runs {
		if got := countType(f.RunEvents(t, id), "RunStarted"); got != 1 {
			t.Errorf("run %s started %d times", id, got)
		}
	}
}

// A worker whose run was reaped cannot report a result afterwards.
func TestStaleResultAfterReapIsRejected(t *testing.T) {
	f := newFixture(t)
	conn := f.Connection(t, f.owner, f.tenant.ID, "Graph")
	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	claim, err := f.BeginRun(t, run.ID, "stale-worker", 100*time.Millisecond)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	f.runWorker(t, config("worker-1"), 5*time.Second) // its reaper ends the run; it must not execute it
	f.waitStatus(t, run.ID, domain.StatusFailed)
	if r := f.lastReason(t, run.ID); r == nil || r.Code != domain.ReasonExecutionLost {
		t.Fatalf("reaped run's reason = %+v, want execution.lost", r)
	}
	before := len(f.RunEvents(t, run.ID))

	stale := func(err error) bool {
		return errors.Is(err, domain.ErrRunNotActive) || errors.Is(err, domain.ErrStaleEpoch)
	}
	if err := f.Succeed(apptest.Worker, claim); !stale(err) {
		t.Errorf("late succeed: err = %v, want ErrRunNotActive or ErrStaleEpoch", err)
	}
	if err := f.Fail(apptest.Worker, claim, domain.ReasonUnavailable); !stale(err) {
		t.Errorf("late fail: err = %v, want ErrRunNotActive or ErrStaleEpoch", err)
	}
	if err := f.Heartbeat(claim, lease); !errors.Is(err, gate.ErrLeaseLost) {
		t.Errorf("late heartbeat: err = %v, want ErrLeaseLost", err)
	}
	if got := len(f.RunEvents(t, run.ID)); got != before {
		t.Errorf("late reports recorded %d events", got-before)
	}
	if got := f.RunStatus(t, run.ID); got != "failed" {
		t.Errorf("run is %s after late reports, want failed", got)
	}
	if r := f.lastReason(t, run.ID); r == nil || r.Code != domain.ReasonExecutionLost {
		t.Errorf("reason after late reports = %+v, want execution.lost", r)
	}
	if got := f.probe.calls(run.ID); got != 0 {
		t.Errorf("the worker executed a run another worker had begun (%d calls)", got)
	}

	// The next run on the scope is unaffected by the stale claim.
	next := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	f.waitStatus(t, next.ID, domain.StatusSucceeded)
	if err := f.Succeed(apptest.Worker, claim); !stale(err) {
		t.Errorf("late succeed after the next run: err = %v", err)
	}
}

// A cancelled queued run never executes; a cancelled running run has its
// provider call cancelled and never records a result.
func TestCancellation(t *testing.T) {
	f := newFixture(t)
	queuedConn := f.Connection(t, f.owner, f.tenant.ID, "Queued")
	marker := f.Connection(t, f.owner, f.tenant.ID, "Marker")
	slow := f.Connection(t, f.owner, f.tenant.ID, "Slow", apptest.Latency(5000))

	queued := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, queuedConn.ID)).Run
	if c, err := f.Gate.CancelRun(f.Ctx, apptest.As(f.owner), queued.ID); err != nil || c.WasRunning {
		t.Fatalf("cancel queued = %+v, %v", c, err)
	}
	after := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, marker.ID)).Run // delivered after the cancelled one
	w := f.runWorker(t, config("worker-1"), 5*time.Second)
	f.waitStatus(t, after.ID, domain.StatusSucceeded)
	if got := f.probe.calls(queued.ID); got != 0 {
		t.Errorf("a run cancelled while queued was executed %d times", got)
	}
	if got := apptest.Types(f.RunEvents(t, queued.ID)); fmt.Sprint(got) != "[StartAccepted RunCancelled]" {
		t.Errorf("cancelled queued run's events = %v", got)
	}

	running := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, slow.ID)).Run
	apptest.WaitFor(t, waitTimeout, "the slow run to execute", func() bool { return f.probe.calls(running.ID) == 1 })
	began := time.Now()
	if c, err := f.Gate.CancelRun(f.Ctx, apptest.As(f.owner), running.ID); err != nil || !c.WasRunning {
		t.Fatalf("cancel running = %+v, %v", c, err)
	}
	var ctxErr error
	apptest.WaitFor(t, 5*time.Second, "the provider call to be cancelled", func() bool {
		var returned bool
		ctxErr, returned = f.probe.ctxErr(running.ID)
		return returned
	})
	took := time.Since(began)
	if !errors.Is(ctxErr, context.Canceled) {
		t.Errorf("provider's ctx err = %v, want context.Canceled", ctxErr)
	}
	if took > 2*time.Second {
		t.Errorf("the provider call was cancelled %v after the run, want within a few heartbeats", took)
	}
	t.Logf("provider call cancelled %v after the run was", took)
	if got := f.RunStatus(t, running.ID); got != "cancelled" {
		t.Errorf("run is %s, want cancelled", got)
	}
	// Once the worker has stopped (and so finished with the run), nothing
	// was recorded after the cancellation.
	if d := w.stop(t); d > 4*time.Second {
		t.Errorf("stopping the worker took %v: the cancelled run kept executing", d)
	}
	events := apptest.Types(f.RunEvents(t, running.ID))
	if fmt.Sprint(events) != "[StartAccepted RunStarted RunCancelled]" {
		t.Errorf("cancelled running run's events = %v, want StartAccepted, RunStarted, RunCancelled", events)
	}
}

// A worker never executes more than Concurrency runs at once.
func TestBoundedConcurrency(t *testing.T) {
	f := newFixture(t)
	var runs []string
	var releases []func()
	for i := 0; i < 6; i++ {
		c := f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Connection %d", i), apptest.Latency(50))
		releases = append(releases, f.probe.hold(c.ID))
		runs = append(runs, f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, c.ID)).Run.ID)
	}
	cfg := config("worker-1")
	cfg.Concurrency = 2
	f.runWorker(t, cfg, 5*time.Second)

	// Two runs execute (held); the worker waits for a slot instead of
	// claiming a third.
	apptest.WaitFor(t, waitTimeout, "two held executions", func() bool { return f.probe.executions() == 2 })
	if n := f.Count(t, `SELECT count(*) FROM runs WHERE status = 'running'`); n != 2 {
		t.Errorf("%d runs running with both slots taken, want 2", n)
	}
	for _, release := range releases {
		release()
	}
	for _, id := range runs {
		f.waitStatus(t, id, domain.StatusSucceeded)
	}
	// A slot is freed once its operation has run (its result is recorded
	// beside the next one): what is bounded is the operations executing.
	if p := f.probe.peak(); p != 2 {
		t.Errorf("the provider saw at most %d concurrent executions, want 2 (Concurrency 2, 6 runs waiting)", p)
	}
}

// Runs accepted while no worker runs (every worker down, or busy) wait
// queued, and the first worker that looks claims them, each exactly once,
// without any wake-up.
func TestRunsQueuedBeforeAWorkerStartsAreClaimed(t *testing.T) {
	f := newFixture(t)
	var runs []string
	for i := 0; i < 3; i++ {
		conn := f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Connection %d", i))
		runs = append(runs, f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run.ID)
	}
	cfg := config("worker-1")
	cfg.Wake = make(chan struct{}) // never woken: it must look on its own
	f.runWorker(t, cfg, 5*time.Second)
	for _, id := range runs {
		f.waitStatus(t, id, domain.StatusSucceeded)
		if got := countType(f.RunEvents(t, id), "RunStarted"); got != 1 {
			t.Errorf("run %s has %d RunStarted events, want 1", id, got)
		}
		if got := f.probe.calls(id); got != 1 {
			t.Errorf("run %s executed %d times, want 1", id, got)
		}
	}
}

// A worker whose every slot is busy claims nothing more; once a slot
// frees it claims the next run, and each still executes exactly once.
func TestBusyWorkerClaimsWhenASlotFrees(t *testing.T) {
	f := newFixture(t)
	first := f.Connection(t, f.owner, f.tenant.ID, "First")
	release := f.probe.hold(first.ID)
	runs := []string{f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, first.ID)).Run.ID}
	cfg := config("worker-1")
	cfg.Concurrency = 1
	f.runWorker(t, cfg, 5*time.Second)
	apptest.WaitFor(t, waitTimeout, "the first run to execute", func() bool { return f.probe.calls(runs[0]) == 1 })
	for i := 0; i < 9; i++ {
		conn := f.Connection(t, f.owner, f.tenant.ID, fmt.Sprintf("Connection %d", i))
		runs = append(runs, f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run.ID)
	}
	if n := f.Count(t, `SELECT count(*) FROM runs WHERE status = 'running'`); n != 1 {
		t.Errorf("%d runs running while the only slot is busy, want 1", n)
	}
	release()
	for _, id := range runs {
		f.waitStatus(t, id, domain.StatusSucceeded)
		if got := countType(f.RunEvents(t, id), "RunStarted"); got != 1 {
			t.Errorf("run %s has %d RunStarted events, want 1", id, got)
		}
		if got := f.probe.calls(id); got != 1 {
			t.Errorf("run %s executed %d times, want 1", id, got)
		}
	}
	if p := f.probe.peak(); p != 1 {
		t.Errorf("%d concurrent executions with Concurrency 1", p)
	}
}

// On shutdown with a grace period, Run returns only after the running
// operation finished and its result was recorded.
func TestGracefulShutdownFinishesRunningOperation(t *testing.T) {
	f := newFixture(t)
	conn := f.Connection(t, f.owner, f.tenant.ID, "Graph", apptest.Latency(300))
	w := f.runWorker(t, config("worker-1"), 5*time.Second)
	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	apptest.WaitFor(t, waitTimeout, "the run to execute", func() bool { return f.probe.calls(run.ID) == 1 })
	took := w.stop(t)
	if got := f.RunStatus(t, run.ID); got != "succeeded" {
		t.Errorf("run is %s when Run returned, want succeeded", got)
	}
	if err, _ := f.probe.ctxErr(run.ID); err != nil {
		t.Errorf("the running operation's context was cancelled during the grace period: %v", err)
	}
	if took >= 5*time.Second {
		t.Errorf("Run took %v to return, the whole grace period", took)
	}
	t.Logf("Run returned %v after cancellation", took)
}

// worker.New refuses a lease that does not outlast a heartbeat plus a margin.
func TestNewRefusesShortLease(t *testing.T) {
	for _, c := range []struct {
		lease, heartbeat time.Duration
		concurrency      int
		ok               bool
	}{
		{lease: 199 * time.Millisecond, heartbeat: 100 * time.Millisecond, concurrency: 1},
		{lease: 100 * time.Millisecond, heartbeat: 100 * time.Millisecond, concurrency: 1},
		{lease: 200 * time.Millisecond, heartbeat: 100 * time.Millisecond, concurrency: 1, ok: true},
		{lease: time.Second, heartbeat: 0, concurrency: 1},
		{lease: time.Second, heartbeat: -time.Second, concurrency: 1},
		{lease: time.Second, heartbeat: 100 * time.Millisecond, concurrency: 0},
	} {
		_, err := worker.New(worker.Config{Concurrency: c.concurrency, Lease: c.lease, Heartbeat: c.heartbeat}, nil, nil, nil, nil)
		if (err == nil) != c.ok {
			t.Errorf("New(lease %v, heartbeat %v, concurrency %d): err = %v, want ok=%v", c.lease, c.heartbeat, c.concurrency, err, c.ok)
		}
		if c.concurrency > 0 {
			if err := domain.CheckLease(c.lease, c.heartbeat); (err == nil) != c.ok {
				t.Errorf("CheckLease(%v, %v) = %v, want ok=%v", c.lease, c.heartbeat, err, c.ok)
			}
		}
	}
}

// A worker that finished a run while the database was away records the
// result once the database is back: it keeps its lease and retries,
// instead of trying once and leaving the run to be reaped as lost.
func TestResultRecordedAfterTheDatabaseReturns(t *testing.T) {
	f := newFixture(t)
	proxy, proxied := apptest.Proxy(t, f.Pool.Config().ConnString())
	// The worker under test, its gate and its reaper reach the database
	// only through the proxy (an application of its own on it); the test
	// reads it directly.
	cut := apptest.Start(t, apptest.OnDatabase(proxied), apptest.Roles(app.Roles{}), apptest.With(app.WithProviders(f.providers())))
	logs := &apptest.Logs{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config("cut-off")
	cfg.Heartbeat, cfg.Lease = 100*time.Millisecond, 3*time.Second
	cfg.Wake = cut.Notifier.SubscribeTopic(gate.TopicStartsAccepted)
	w, err := worker.New(cfg, cut.Gate, cut.Connections, f.providers(), logger)
	if err != nil {
		t.Fatal(err)
	}
	r := &runningWorker{w: w, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go cut.Gate.RunReaper(ctx, 100*time.Millisecond, logger)
	go func() { r.done <- w.Run(ctx, time.Second) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})

	conn := f.Connection(t, f.owner, f.tenant.ID, "Graph")
	release := f.probe.hold(conn.ID)
	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
	apptest.WaitFor(t, waitTimeout, "the provider to be called", func() bool { return f.probe.calls(run.ID) > 0 })

	proxy.Cut()
	release() // the provider finishes while the database is unreachable
	apptest.WaitFor(t, waitTimeout, "the worker to fail to record the result", func() bool {
		return logs.With("recording the result failed") != ""
	})
	if got := f.RunStatus(t, run.ID); got != domain.StatusRunning {
		t.Fatalf("run is %s while its result could not be recorded, want running", got)
	}
	proxy.Restore()

	f.waitStatus(t, run.ID, domain.StatusSucceeded)
	events := f.RunEvents(t, run.ID)
	if n := countType(events, "RunSucceeded"); n != 1 {
		t.Fatalf("RunSucceeded recorded %d times, want once: %v", n, apptest.Types(events))
	}
	if n := countType(events, "RunFailed"); n != 0 {
		t.Fatalf("the finished run was also recorded failed: %v", apptest.Types(events))
	}
}
