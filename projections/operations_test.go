package projections_test

import (
	"errors"
	"testing"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

func strp(s string) *string { return &s }

// checkReason compares a view's reason with the catalog entry of code
// (nil code: no reason).
func checkReason(t *testing.T, what string, got *domain.Reason, code domain.ReasonCode) {
	t.Helper()
	if code == "" {
		if got != nil {
			t.Errorf("%s: reason = %+v, want none", what, *got)
		}
		return
	}
	want := domain.MustReason(code)
	if got == nil || *got != want {
		t.Errorf("%s: reason = %+v, want %+v", what, got, want)
	}
}

func checkConn(t *testing.T, what string, got *domain.ConnectionRef, want *domain.ConnectionRef) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s: connection = %+v, want none", what, *got)
	case want != nil && (got == nil || *got != *want):
		t.Errorf("%s: connection = %+v, want %+v", what, got, *want)
	}
}

func TestOperationsViewContent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)

	t1, t2 := f.Tenant(t, f.workspace.ID, "Fabrikam"), f.Tenant(t, f.workspace.ID, "Northwind")
	owner := f.Member(t, "owner", t1.ID, domain.RoleOwner).ID
	f.Grant(t, owner, t2.ID, domain.RoleOwner)
	op1 := f.Member(t, "operator", t1.ID, domain.RoleOperator).ID
	connA := f.Connection(t, owner, t1.ID, "Graph A", apptest.AsDefault)
	connB := f.Connection(t, owner, t1.ID, "Graph B")
	refA := &domain.ConnectionRef{ID: connA.ID, DisplayName: "Graph A", Provider: connections.ProviderSimulated}
	refB := &domain.ConnectionRef{ID: connB.ID, DisplayName: "Graph B", Provider: connections.ProviderSimulated}

	// r1: groups sync on the default connection, deduped twice and met
	// busy once, then started and succeeded. The connection is renamed
	// while r1 is queued: the view keeps the name pinned at click time.
	r1 := f.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(op1, domain.SurfaceGroupsSync, t1.ID, "")).Run
	f.Expect(t, domain.OutcomeDeduped, apptest.TenantStart(op1, domain.SurfaceGroupsSync, t1.ID, ""))
	f.Expect(t, domain.OutcomeDeduped, apptest.TenantStart(owner, domain.SurfaceGroupsSync, t1.ID, connA.ID))
	f.Expect(t, domain.OutcomeScopeBusy, apptest.ConnStart(op1, domain.SurfaceInventorySync, connA.ID))
	if _, err := f.Connections.Update(f.Ctx, apptest.As(owner), connA.ID, connections.Patch{DisplayName: strp("Graph A (renamed)")}); err != nil {
		t.Fatalf("rename: %v", err)
	}
	v := f.getRun(t, r1.ID)
	if v.Status != domain.StatusQueued || v.StartedAt != nil || v.FinishedAt != nil {
		t.Errorf("r1 queued: status %s started %v finished %v", v.Status, v.StartedAt, v.FinishedAt)
	}
	claim, err := f.BeginRun(t, r1.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", r1.ID, err)
	}
	v = f.getRun(t, r1.ID)
	if v.Status != domain.StatusRunning || v.StartedAt == nil || v.FinishedAt != nil {
		t.Errorf("r1 running: status %s started %v finished %v", v.Status, v.StartedAt, v.FinishedAt)
	}
	if err := f.Succeed(apptest.Worker, claim); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	v = f.getRun(t, r1.ID)
	if v.Status != domain.StatusSucceeded || v.StartedAt == nil || v.FinishedAt == nil || v.FinishedAt.Before(*v.StartedAt) ||
		v.StartedAt.Before(v.CreatedAt) {
		t.Errorf("r1 succeeded: status %s created %v started %v finished %v", v.Status, v.CreatedAt, v.StartedAt, v.FinishedAt)
	}
	if v.DedupedCount != 2 || v.ScopeBusyCount != 1 {
		t.Errorf("r1 counts: deduped %d scope_busy %d, want 2 and 1", v.DedupedCount, v.ScopeBusyCount)
	}
	if v.Type != domain.OpGroupsSync || v.CanonicalType != "directory.groups.sync" || v.Label != "Directory groups sync" ||
		v.Surface != domain.SurfaceGroupsSync.Name || v.InitiatorID != op1 || v.TenantID != t1.ID ||
		v.ScopeID != string(domain.ConnectionScope(connA.ID)) || v.Target != nil {
		t.Errorf("r1 identity: %+v", v)
	}
	// The view stores timestamps at PostgreSQL's microsecond precision;
	// the StartResult carries the gate's clock reading unrounded.
	if !v.CreatedAt.Equal(r1.CreatedAt.Truncate(time.Microsecond)) {
		t.Errorf("r1 created_at %v, want %v", v.CreatedAt, r1.CreatedAt)
	}
	if v.Links.Self != "/api/v1/operations/"+r1.ID {
		t.Errorf("r1 link %q", v.Links.Self)
	}
	checkConn(t, "r1", v.ProviderConnection, refA)
	checkReason(t, "r1", v.Reason, "")

	// r2: connection check on B, failed with throttling.
	r2 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(op1, domain.SurfaceConnectionCheck, connB.ID)).Run
	c2, err := f.BeginRun(t, r2.ID, "worker-test", leaseLong)
	if err != nil {
		t.Fatalf("begin %s: %v", r2.ID, err)
	}
	if err := f.Fail(apptest.Worker, c2, domain.ReasonThrottled); err != nil {
		t.Fatalf("fail: %v", err)
	}
	v = f.getRun(t, r2.ID)
	if v.Status != domain.StatusFailed || v.StartedAt == nil || v.FinishedAt == nil {
		t.Errorf("r2: status %s started %v finished %v", v.Status, v.StartedAt, v.FinishedAt)
	}
	checkReason(t, "r2", v.Reason, domain.ReasonThrottled)
	checkConn(t, "r2", v.ProviderConnection, refB)

	// r3: compliance snapshot on B, cancelled while queued.
	r3 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(op1, domain.SurfaceComplianceSnapshot, connB.ID)).Run
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), r3.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	v = f.getRun(t, r3.ID)
	if v.Status != domain.StatusCancelled || v.StartedAt != nil || v.FinishedAt == nil {
		t.Errorf("r3: status %s started %v finished %v", v.Status, v.StartedAt, v.FinishedAt)
	}
	checkReason(t, "r3", v.Reason, domain.ReasonCancelled)
	if v.InitiatorID != op1 {
		t.Errorf("r3 initiator %s, want %s (the canceller is not the initiator)", v.InitiatorID, op1)
	}

	// r4: B apptest.Disabled: the start is blocked, pinned to B, finished at once.
	if _, err := f.Connections.Update(f.Ctx, apptest.As(owner), connB.ID, connections.Patch{Enabled: new(bool)}); err != nil {
		t.Fatalf("disable: %v", err)
	}
	r4 := f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(op1, domain.SurfaceInventorySync, connB.ID)).Run
	v = f.getRun(t, r4.ID)
	if v.Status != domain.StatusBlocked || v.StartedAt != nil || v.FinishedAt == nil || !v.FinishedAt.Equal(v.CreatedAt) {
		t.Errorf("r4: status %s created %v started %v finished %v", v.Status, v.CreatedAt, v.StartedAt, v.FinishedAt)
	}
	checkReason(t, "r4", v.Reason, domain.ReasonDisabled)
	checkConn(t, "r4", v.ProviderConnection, refB)
	if v.ScopeID != string(domain.ConnectionScope(connB.ID)) {
		t.Errorf("r4 scope %s", v.ScopeID)
	}

	// r5, r6: consent and credentials problems.
	connC := f.Connection(t, owner, t1.ID, "Graph C", apptest.Consent(domain.ConsentRevoked))
	r5 := f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(owner, domain.SurfaceConnectionCheck, connC.ID)).Run
	checkReason(t, "r5", f.getRun(t, r5.ID).Reason, domain.ReasonConsentMissing)
	connD := f.Connection(t, owner, t1.ID, "Graph D", apptest.Credentials(domain.CredentialsExpired))
	r6 := f.Expect(t, domain.OutcomeBlocked, apptest.TenantStart(owner, domain.SurfaceRoleDefinitionsSync, t1.ID, connD.ID)).Run
	checkReason(t, "r6", f.getRun(t, r6.ID).Reason, domain.ReasonCredentialsInvalid)

	// r7: a tenant without a default connection: blocked on the tenant scope.
	r7 := f.Expect(t, domain.OutcomeBlocked, apptest.TenantStart(owner, domain.SurfaceGroupsSync, t2.ID, "")).Run
	v = f.getRun(t, r7.ID)
	checkReason(t, "r7", v.Reason, domain.ReasonMissingDefault)
	checkConn(t, "r7", v.ProviderConnection, nil)
	if v.ScopeID != string(domain.TenantScope(t2.ID)) || v.TenantID != t2.ID {
		t.Errorf("r7 scope %s tenant %s", v.ScopeID, v.TenantID)
	}

	// r8: a lost worker.
	connE := f.Connection(t, owner, t1.ID, "Graph E")
	r8 := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(op1, domain.SurfaceInventorySync, connE.ID)).Run
	if _, err := f.BeginRun(t, r8.ID, "worker-lost", time.Microsecond); err != nil {
		t.Fatalf("begin r8: %v", err)
	}
	apptest.WaitFor(t, 10*time.Second, "reaper to end r8", func() bool {
		if _, err := f.Gate.ReapExpired(f.Ctx, 10); err != nil {
			t.Fatalf("reap: %v", err)
		}
		return f.getRun(t, r8.ID).Status == domain.StatusFailed
	})
	checkReason(t, "r8", f.getRun(t, r8.ID).Reason, domain.ReasonExecutionLost)

	if _, err := f.Reader.GetRun(f.Ctx, "01HZZZZZZZZZZZZZZZZZZZZZZZ"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("unknown run: err = %v, want ErrNotFound", err)
	}

	// Filters.
	ids := func(list []projections.RunView) []string {
		out := make([]string, len(list))
		for i, v := range list {
			out[i] = v.ID
		}
		return out
	}
	list := func(filter projections.RunFilter) []string {
		t.Helper()
		got, next, err := f.Reader.ListRuns(f.Ctx, filter)
		if err != nil {
			t.Fatalf("list %+v: %v", filter, err)
		}
		if next != "" {
			t.Fatalf("list %+v: unexpected next page", filter)
		}
		return ids(got)
	}
	same := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: got %v, want %v", what, got, want)
			return
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: got %v, want %v", what, got, want)
				return
			}
		}
	}
	both := []string{t1.ID, t2.ID}
	same("all of t1 newest first", list(projections.RunFilter{TenantIDs: []string{t1.ID}}), r8.ID, r6.ID, r5.ID, r4.ID, r3.ID, r2.ID, r1.ID)
	same("t2 only", list(projections.RunFilter{TenantIDs: []string{t2.ID}}), r7.ID)
	same("both tenants", list(projections.RunFilter{TenantIDs: both}), r8.ID, r7.ID, r6.ID, r5.ID, r4.ID, r3.ID, r2.ID, r1.ID)
	same("no tenants", list(projections.RunFilter{}))
	same("unknown tenant", list(projections.RunFilter{TenantIDs: []string{"nope"}}))
	same("blocked", list(projections.RunFilter{TenantIDs: both, Status: "blocked"}), r7.ID, r6.ID, r5.ID, r4.ID)
	same("failed", list(projections.RunFilter{TenantIDs: both, Status: "failed"}), r8.ID, r2.ID)
	same("succeeded", list(projections.RunFilter{TenantIDs: both, Status: "succeeded"}), r1.ID)
	same("cancelled", list(projections.RunFilter{TenantIDs: both, Status: "cancelled"}), r3.ID)
	same("queued", list(projections.RunFilter{TenantIDs: both, Status: "queued"}))
	same("groups sync (canonical)", list(projections.RunFilter{TenantIDs: both, CanonicalType: "directory.groups.sync"}), r7.ID, r1.ID)
	same("groups sync in t1", list(projections.RunFilter{TenantIDs: []string{t1.ID}, CanonicalType: "directory.groups.sync"}), r1.ID)
	same("connection check", list(projections.RunFilter{TenantIDs: both, CanonicalType: "provider.connection.check"}), r5.ID, r2.ID)
	same("connection B", list(projections.RunFilter{TenantIDs: both, ConnectionID: connB.ID}), r4.ID, r3.ID, r2.ID)
	same("connection B failed", list(projections.RunFilter{TenantIDs: both, ConnectionID: connB.ID, Status: "failed"}), r2.ID)
	same("connection A", list(projections.RunFilter{TenantIDs: both, ConnectionID: connA.ID}), r1.ID)
	same("connection B of t2 only", list(projections.RunFilter{TenantIDs: []string{t2.ID}, ConnectionID: connB.ID}))
}

func TestOperationsViewPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)
	tn, other := f.Tenant(t, f.workspace.ID, "Paging"), f.Tenant(t, f.workspace.ID, "Other")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	f.Grant(t, owner, other.ID, domain.RoleOwner)
	conn := f.Connection(t, owner, tn.ID, "Graph", apptest.AsDefault)

	// 25 runs: accepted ones (each cancelled to free the scope) and blocked
	// ones (no default on the other tenant would be another tenant, so use
	// a apptest.Disabled connection here), interleaved, plus noise in another tenant.
	off := f.Connection(t, owner, tn.ID, "Off", apptest.Disabled)
	var want []string // oldest first
	for i := 0; i < 25; i++ {
		var run domain.Run
		if i%3 == 0 {
			run = f.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(owner, domain.SurfaceInventorySync, off.ID)).Run
		} else {
			run = f.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(owner, domain.SurfaceTenantVerification, tn.ID, "")).Run
			if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), run.ID); err != nil {
				t.Fatalf("cancel: %v", err)
			}
		}
		want = append(want, run.ID)
		if i%5 == 0 {
			f.Expect(t, domain.OutcomeBlocked, apptest.TenantStart(owner, domain.SurfaceGroupsSync, other.ID, ""))
		}
	}

	var got []string
	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		page, next, err := f.Reader.ListRuns(f.Ctx, projections.RunFilter{TenantIDs: []string{tn.ID}, Limit: 10, Cursor: cursor})
		if err != nil {
			t.Fatalf("list page %d: %v", pages, err)
		}
		pages++
		for i, v := range page {
			if v.TenantID != tn.ID {
				t.Errorf("page %d: run %s of tenant %s", pages, v.ID, v.TenantID)
			}
			if seen[v.ID] {
				t.Errorf("page %d: run %s seen before", pages, v.ID)
			}
			seen[v.ID] = true
			if i > 0 && (page[i-1].ID <= v.ID || page[i-1].CreatedAt.Before(v.CreatedAt)) {
				t.Errorf("page %d: %s before %s is not newest first", pages, page[i-1].ID, v.ID)
			}
			got = append(got, v.ID)
		}
		if next == "" {
			break
		}
		if len(page) != 10 {
			t.Errorf("page %d has %d runs and a next cursor", pages, len(page))
		}
		if next != page[len(page)-1].ID {
			t.Errorf("page %d: next cursor %s is not its last run %s", pages, next, page[len(page)-1].ID)
		}
		cursor = next
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3", pages)
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d runs, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[len(want)-1-i] {
			t.Fatalf("paged runs %v, want the reverse of %v", got, want)
		}
	}

	// Paging within a filter: the cancelled runs only, 4 per page.
	var cancelled []string
	cursor = ""
	for {
		page, next, err := f.Reader.ListRuns(f.Ctx, projections.RunFilter{TenantIDs: []string{tn.ID}, Status: "cancelled", Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatalf("list cancelled: %v", err)
		}
		for _, v := range page {
			if v.Status != domain.StatusCancelled {
				t.Errorf("cancelled page holds %s (%s)", v.ID, v.Status)
			}
			cancelled = append(cancelled, v.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if n := 25 - 9; len(cancelled) != n {
		t.Errorf("%d cancelled runs paged, want %d", len(cancelled), n)
	}
	_ = conn
}
