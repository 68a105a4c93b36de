package gate_test

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
)

func TestStartAcceptedPinsConnectionAndQueuesRun(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph production")
	scope := domain.ConnectionScope(conn.ID)

	res := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))

	run := res.Run
	if run.Status != domain.StatusQueued || run.Type != domain.OpInventorySync || run.CanonicalType != "inventory.sync" {
		t.Errorf("run = %+v, want a queued inventory.sync", run)
	}
	want := domain.ConnectionRef{ID: conn.ID, DisplayName: "Graph production", Provider: connections.ProviderSimulated}
	if run.ProviderConnection == nil || *run.ProviderConnection != want {
		t.Errorf("pinned connection = %+v, want %+v", run.ProviderConnection, want)
	}
	if run.TenantID != tm.Tenant.ID || run.InitiatorID != tm.Operator.ID || run.Surface != "inventory_sync" || run.Target != nil {
		t.Errorf("run = %+v, want tenant %s, initiator %s, surface inventory_sync, no target", run, tm.Tenant.ID, tm.Operator.ID)
	}
	if run.Links.Self != "/api/v1/operations/"+run.ID || res.Reason != nil || len(res.NextSteps) == 0 {
		t.Errorf("result = %+v, want a self link, no reason and a next step", res)
	}
	if res.Message.Tone != domain.ToneSuccess || res.Message.Title != "Inventory sync accepted" {
		t.Errorf("message = %+v", res.Message)
	}

	row := runRowOf(t, a, run.ID)
	if row.Status != "queued" || row.ScopeID != string(scope) || row.TenantID != tm.Tenant.ID || row.Type != domain.OpInventorySync {
		t.Errorf("runs row = %+v, want queued on %s", row, scope)
	}
	state, version := scopeOf(t, a, scope)
	if version != 1 || state.Active == nil || state.Active.RunID != run.ID || state.Active.Status != domain.StatusQueued {
		t.Fatalf("scope snapshot = v%d %+v, want v1 holding %s", version, state.Active, run.ID)
	}
	if c := state.Active.Start.Connection; c == nil || *c != want {
		t.Errorf("snapshot's pinned connection = %+v, want %+v", c, want)
	}

	events := a.Stream(t, string(scope))
	if len(events) != 1 || events[0].Type != "StartAccepted" || events[0].StreamVersion != 1 {
		t.Fatalf("scope stream = %v, want one StartAccepted", apptest.Types(events))
	}
	accepted := a.Decode(t, events[0]).(domain.StartAccepted)
	if accepted.RunID != run.ID || accepted.Connection == nil || *accepted.Connection != want {
		t.Errorf("StartAccepted = %+v, want run %s pinned to %+v", accepted, run.ID, want)
	}
	if md := events[0].Metadata; md.Actor != tm.Operator.ID || md.TenantID != tm.Tenant.ID || md.CorrelationID != run.ID {
		t.Errorf("metadata = %+v, want actor, tenant and the run as correlation", md)
	}
	if n := queuedWork(t, a); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
}

func TestStartDedupedAndScopeBusy(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	scope := string(domain.ConnectionScope(conn.ID))
	first := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))

	again := a.Start(t, apptest.ConnStart(tm.Owner.ID, domain.SurfaceInventorySync, conn.ID))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != first.Run.ID {
		t.Fatalf("same surface again = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, first.Run.ID)
	}
	if again.Reason == nil || again.Reason.Code != domain.ReasonDeduped || len(again.NextSteps) == 0 {
		t.Errorf("deduped result = %+v, want reason start.deduped and next steps", again)
	}
	if again.Run.InitiatorID != tm.Operator.ID {
		t.Errorf("deduped run initiator = %s, want the first run's %s", again.Run.InitiatorID, tm.Operator.ID)
	}

	// A different operation on the same connection, from a connection surface
	// and from a tenant surface resolving to it by default.
	for _, req := range []gate.StartRequest{
		apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, conn.ID),
		apptest.ConnStart(tm.Operator.ID, domain.SurfaceConnectionCheck, conn.ID),
		apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""),
	} {
		busy := a.Start(t, req)
		if busy.Outcome != domain.OutcomeScopeBusy || busy.Run.ID != first.Run.ID {
			t.Errorf("%s = %s -> %s, want scope_busy -> %s", req.Surface.Name, busy.Outcome, busy.Run.ID, first.Run.ID)
		}
		if busy.Reason == nil || busy.Reason.Code != domain.ReasonScopeBusy || len(busy.NextSteps) == 0 {
			t.Errorf("%s: result = %+v, want reason start.scope_busy and next steps", req.Surface.Name, busy)
		}
	}

	events := a.Stream(t, scope)
	want := []string{"StartAccepted", "StartDeduped", "StartScopeBusy", "StartScopeBusy", "StartScopeBusy"}
	if got := apptest.Types(events); !slices.Equal(got, want) {
		t.Fatalf("scope stream = %v, want %v", got, want)
	}
	for _, e := range events[1:] {
		var p struct {
			RunID string `json:"run_id"`
		}
		_ = json.Unmarshal(e.Data, &p)
		if p.RunID != first.Run.ID {
			t.Errorf("%s points at %s, want %s", e.Type, p.RunID, first.Run.ID)
		}
	}
	if n := a.Count(t, `SELECT count(*) FROM runs`); n != 1 {
		t.Errorf("runs rows = %d, want 1", n)
	}
	if n := queuedWork(t, a); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
	if _, v := scopeOf(t, a, domain.ScopeID(scope)); v != int64(len(events)) {
		t.Errorf("snapshot version %d, stream version %d", v, len(events))
	}
}

func TestStartBlocked(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	restore := createRestoreRun(t, a, tm.Owner.ID, tm.Tenant.ID, `[{"name":"mailbox"}]`) // never previewed

	type blockedCase struct {
		name   string
		setup  func(t *testing.T) gate.StartRequest
		reason domain.ReasonCode
		class  domain.ReasonClass
		// tenantScope: recorded on the tenant's scope (no connection resolved).
		tenantScope bool
	}
	connFor := func(opts ...apptest.ConnectionOption) func(*testing.T) gate.StartRequest {
		return func(t *testing.T) gate.StartRequest {
			c := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "conn", opts...)
			return apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, c.ID)
		}
	}
	cases := []blockedCase{
		{"no default connection", func(t *testing.T) gate.StartRequest {
			return apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, "")
		}, domain.ReasonMissingDefault, domain.ClassProviderAccess, true},
		{"disabled", connFor(apptest.Disabled), domain.ReasonDisabled, domain.ClassProviderAccess, false},
		{"consent missing", connFor(apptest.Consent(domain.ConsentMissing)), domain.ReasonConsentMissing, domain.ClassProviderConsent, false},
		{"consent revoked", connFor(apptest.Consent(domain.ConsentRevoked)), domain.ReasonConsentMissing, domain.ClassProviderConsent, false},
		{"credentials expired", connFor(apptest.Credentials(domain.CredentialsExpired)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"credentials invalid", connFor(apptest.Credentials(domain.CredentialsInvalid)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"credentials missing", connFor(apptest.Credentials(domain.CredentialsMissing)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"disabled, explicit on a tenant surface", func(t *testing.T) gate.StartRequest {
			c := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "explicit", apptest.Disabled)
			return apptest.TenantStart(tm.Operator.ID, domain.SurfaceTenantVerification, tm.Tenant.ID, c.ID)
		}, domain.ReasonDisabled, domain.ClassProviderAccess, false},
		{"restore never previewed", func(t *testing.T) gate.StartRequest {
			req := restoreStart(tm.Owner.ID, tm.Tenant.ID, restore.ID, true, false)
			req.ConnectionID = a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "restore target").ID
			return req
		}, domain.ReasonPreviewRequired, domain.ClassRestoreReadiness, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.setup(t)
			scope := domain.TenantScope(tm.Tenant.ID)
			if !tc.tenantScope {
				scope = domain.ConnectionScope(req.ConnectionID)
			}
			before := len(a.Stream(t, string(scope)))
			runsBefore := a.Count(t, `SELECT count(*) FROM runs`)

			res := a.Start(t, req)

			if res.Outcome != domain.OutcomeBlocked {
				t.Fatalf("outcome = %s, want blocked", res.Outcome)
			}
			if res.Reason == nil || res.Reason.Code != tc.reason || res.Reason.Class != tc.class || res.Reason.Message == "" {
				t.Errorf("reason = %+v, want %s (%s)", res.Reason, tc.reason, tc.class)
			}
			if res.Run.Status != domain.StatusBlocked || res.Run.Reason == nil || res.Run.Reason.Code != tc.reason || res.Run.FinishedAt == nil {
				t.Errorf("run = %+v, want blocked with reason %s and finished", res.Run, tc.reason)
			}
			if len(res.NextSteps) == 0 || res.Message.Tone != domain.ToneDanger {
				t.Errorf("result = %+v, want next steps and a danger message", res)
			}
			if tc.tenantScope && res.Run.ProviderConnection != nil {
				t.Errorf("run connection = %+v, want none", res.Run.ProviderConnection)
			}
			if !tc.tenantScope && (res.Run.ProviderConnection == nil || res.Run.ProviderConnection.ID != req.ConnectionID) {
				t.Errorf("run connection = %+v, want %s", res.Run.ProviderConnection, req.ConnectionID)
			}

			events := a.Stream(t, string(scope))
			if len(events) != before+1 || events[len(events)-1].Type != "StartBlocked" {
				t.Fatalf("scope %s stream = %v, want one StartBlocked more than %d", scope, apptest.Types(events), before)
			}
			blocked := a.Decode(t, events[len(events)-1]).(domain.StartBlocked)
			if blocked.RunID != res.Run.ID || blocked.Reason.Code != tc.reason {
				t.Errorf("StartBlocked = %+v", blocked)
			}
			row := runRowOf(t, a, res.Run.ID)
			if row.Status != "blocked" || row.ScopeID != string(scope) {
				t.Errorf("runs row = %+v, want blocked on %s", row, scope)
			}
			if n := a.Count(t, `SELECT count(*) FROM runs`); n != runsBefore+1 {
				t.Errorf("runs rows = %d, want %d", n, runsBefore+1)
			}
			if n := a.Count(t, `SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`); n != 0 {
				t.Errorf("active runs = %d, want 0", n)
			}
			if n := queuedWork(t, a); n != 0 {
				t.Errorf("work queued = %d, want 0", n)
			}
			if state, _ := scopeOf(t, a, scope); state.Active != nil {
				t.Errorf("scope %s held by %s after a blocked start", scope, state.Active.RunID)
			}
		})
	}
}

// A blocked start wins over deduped and scope_busy (contract precedence),
// and does not disturb the run holding the scope.
func TestStartBlockedTakesPrecedenceOverActiveRun(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph")
	first := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))

	if _, err := a.Connections.Update(a.Ctx, apptest.As(tm.Owner.ID), conn.ID, connections.Patch{Consent: ptr(domain.ConsentRevoked)}); err != nil {
		t.Fatalf("revoke consent: %v", err)
	}
	res := a.Start(t, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))
	if res.Outcome != domain.OutcomeBlocked || res.Reason.Code != domain.ReasonConsentMissing {
		t.Fatalf("outcome = %s %+v, want blocked consent_missing", res.Outcome, res.Reason)
	}
	if got := activeRunID(t, a, domain.ConnectionScope(conn.ID)); got != first.Run.ID {
		t.Errorf("scope held by %q, want %s", got, first.Run.ID)
	}
	if got := runRowOf(t, a, first.Run.ID).Status; got != "queued" {
		t.Errorf("first run status = %s, want queued", got)
	}
}

func TestStartAuthorization(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	other := a.Tenant(t, tm.Workspace.ID, "Other")
	a.Grant(t, tm.Owner.ID, other.ID, domain.RoleOwner)
	otherConn := a.Connection(t, tm.Owner.ID, other.ID, "Other graph", apptest.AsDefault)

	restoreOther := createRestoreRun(t, a, tm.Owner.ID, other.ID, `[]`)

	notFound := map[string]gate.StartRequest{
		"non-member, connection surface":        apptest.ConnStart(tm.Outsider.ID, domain.SurfaceInventorySync, conn.ID),
		"non-member, tenant surface":            apptest.TenantStart(tm.Outsider.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""),
		"non-member, explicit connection":       apptest.TenantStart(tm.Outsider.ID, domain.SurfaceTenantVerification, tm.Tenant.ID, conn.ID),
		"member of another tenant only":         apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, otherConn.ID),
		"nonexistent connection":                apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
		"nonexistent tenant":                    apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, "01HZZZZZZZZZZZZZZZZZZZZZZZ", ""),
		"nonexistent explicit connection":       apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
		"explicit connection of another tenant": apptest.TenantStart(tm.Owner.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, otherConn.ID),
		"nonexistent restore run":               restoreStart(tm.Owner.ID, tm.Tenant.ID, "01HZZZZZZZZZZZZZZZZZZZZZZZ", true, false),
		"restore run of another tenant":         restoreStart(tm.Owner.ID, tm.Tenant.ID, restoreOther.ID, true, false),
	}
	forbidden := map[string]struct {
		req gate.StartRequest
		cap domain.Capability
	}{
		"readonly inventory sync":               {apptest.ConnStart(tm.Readonly.ID, domain.SurfaceInventorySync, conn.ID), domain.CapInventorySync},
		"auditor inventory sync":                {apptest.ConnStart(tm.Auditor.ID, domain.SurfaceInventorySync, conn.ID), domain.CapInventorySync},
		"readonly connection check":             {apptest.ConnStart(tm.Readonly.ID, domain.SurfaceConnectionCheck, conn.ID), domain.CapProviderConnectionCheck},
		"readonly groups sync (tenant)":         {apptest.TenantStart(tm.Readonly.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""), domain.CapDirectoryGroupsSync},
		"readonly tenant verification":          {apptest.TenantStart(tm.Readonly.ID, domain.SurfaceTenantVerification, tm.Tenant.ID, conn.ID), domain.CapTenantVerify},
		"operator restore execute (owner only)": {restoreStart(tm.Operator.ID, tm.Tenant.ID, "01HZZZZZZZZZZZZZZZZZZZZZZZ", true, false), domain.CapRestoreExecute},
	}

	before := a.Count(t, `SELECT count(*) FROM events`)
	for name, req := range notFound {
		_, err := a.Gate.Start(a.Ctx, req)
		if !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", name, err)
		}
	}
	for name, tc := range forbidden {
		_, err := a.Gate.Start(a.Ctx, tc.req)
		var fe *domain.ForbiddenError
		if !errors.As(err, &fe) || fe.Capability != tc.cap {
			t.Errorf("%s: err = %v, want ForbiddenError naming %s", name, err, tc.cap)
		}
	}
	if after := a.Count(t, `SELECT count(*) FROM events`); after != before {
		t.Errorf("events: %d before, %d after refused starts", before, after)
	}
	if n := a.Count(t, `SELECT count(*) FROM runs`) + a.Count(t, `SELECT count(*) FROM scopes`) + queuedWork(t, a); n != 0 {
		t.Errorf("refused starts left %d rows in runs/scopes/queue", n)
	}

	// The same members can start what their role allows.
	a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID))
	a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(tm.Owner.ID, domain.SurfaceInventorySync, otherConn.ID))
}

func TestStartUnknownOperationIsInvalid(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	_, err := a.Gate.Start(a.Ctx, gate.StartRequest{Actor: apptest.As(tm.Owner.ID), Surface: domain.SurfaceOnboardingBootstrap,
		TenantID: tm.Tenant.ID, Operation: "no.such.operation"})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a ValidationError", err)
	}
}

func TestPinning(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	connA := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Connection A", apptest.AsDefault)
	connB := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Connection B")

	// An explicit connection on a tenant surface overrides the default.
	explicit := a.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, connB.ID))
	if c := explicit.Run.ProviderConnection; c == nil || c.ID != connB.ID || c.DisplayName != "Connection B" {
		t.Fatalf("explicit start pinned %+v, want B", c)
	}
	if got := runRowOf(t, a, explicit.Run.ID).ScopeID; got != string(domain.ConnectionScope(connB.ID)) {
		t.Errorf("explicit run on scope %s, want B's", got)
	}
	if got := activeRunID(t, a, domain.ConnectionScope(connA.ID)); got != "" {
		t.Errorf("A's scope held by %s, want free", got)
	}

	// Without a choice the default (A) is pinned.
	byDefault := a.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""))
	if c := byDefault.Run.ProviderConnection; c == nil || c.ID != connA.ID {
		t.Fatalf("default start pinned %+v, want A", c)
	}

	// Making B the default and renaming A afterwards changes nothing about the run.
	if _, err := a.Connections.MakeDefault(a.Ctx, apptest.As(tm.Owner.ID), connB.ID); err != nil {
		t.Fatalf("make B default: %v", err)
	}
	if _, err := a.Connections.Update(a.Ctx, apptest.As(tm.Owner.ID), connA.ID, connections.Patch{DisplayName: ptr("Connection A (renamed)")}); err != nil {
		t.Fatalf("rename A: %v", err)
	}
	state, _ := scopeOf(t, a, domain.ConnectionScope(connA.ID))
	if state.Active == nil || state.Active.RunID != byDefault.Run.ID {
		t.Fatalf("A's scope = %+v, want held by %s", state.Active, byDefault.Run.ID)
	}
	if c := state.Active.Start.Connection; c == nil || c.ID != connA.ID || c.DisplayName != "Connection A" {
		t.Errorf("A's run is pinned to %+v, want A as it was at click time", c)
	}
	if got := runRowOf(t, a, byDefault.Run.ID).ScopeID; got != string(domain.ConnectionScope(connA.ID)) {
		t.Errorf("runs row scope = %s, want A's", got)
	}
	// Starting it again on A answers the pinned run as it was pinned.
	again := a.Start(t, apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, connA.ID))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != byDefault.Run.ID {
		t.Fatalf("again on A = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, byDefault.Run.ID)
	}
	if c := again.Run.ProviderConnection; c == nil || c.ID != connA.ID || c.DisplayName != "Connection A" {
		t.Errorf("deduped answer shows %+v, want A as pinned", c)
	}
	// And the new default now resolves to B, which already runs the explicit sync.
	now := a.Start(t, apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""))
	if now.Outcome != domain.OutcomeDeduped || now.Run.ID != explicit.Run.ID {
		t.Errorf("default start after the switch = %s -> %s, want deduped -> %s", now.Outcome, now.Run.ID, explicit.Run.ID)
	}
}

func restoreStart(actor, tenantID, restoreRunID string, confirm, acknowledge bool) gate.StartRequest {
	req := apptest.TenantStart(actor, domain.SurfaceRestoreExecute, tenantID, "")
	req.RestoreRunID, req.Confirm, req.AcknowledgeWarnings = restoreRunID, confirm, acknowledge
	return req
}

func TestRestoreSafeguards(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	scope := domain.ConnectionScope(conn.ID)

	risky := createRestoreRun(t, a, tm.Owner.ID, tm.Tenant.ID, `[{"name":"mailbox","overwrite":true},{"name":"sharepoint"}]`)
	never := createRestoreRun(t, a, tm.Owner.ID, tm.Tenant.ID, `[{"name":"mailbox"}]`)

	// Without confirm: refused, nothing recorded, whether previewed or not.
	before := a.Count(t, `SELECT count(*) FROM events`)
	for _, id := range []string{never.ID, risky.ID} {
		if _, err := a.Gate.Start(a.Ctx, restoreStart(tm.Owner.ID, tm.Tenant.ID, id, false, true)); !errors.Is(err, gate.ErrConfirmationRequired) {
			t.Errorf("restore %s without confirm: err = %v, want ErrConfirmationRequired", id, err)
		}
	}
	if after := a.Count(t, `SELECT count(*) FROM events`); after != before {
		t.Errorf("refused restore recorded %d events", after-before)
	}

	previewed := previewRestoreRun(t, a, tm.Owner.ID, risky.ID)
	if len(previewed.Warnings) != 1 {
		t.Fatalf("preview warnings = %q, want one overwrite warning", previewed.Warnings)
	}

	// Previewed with warnings, confirmed but not acknowledged: refused, nothing recorded.
	before = a.Count(t, `SELECT count(*) FROM events`)
	if _, err := a.Gate.Start(a.Ctx, restoreStart(tm.Owner.ID, tm.Tenant.ID, risky.ID, true, false)); !errors.Is(err, gate.ErrWarningsNotAcknowledged) {
		t.Fatalf("unacknowledged warnings: err = %v, want ErrWarningsNotAcknowledged", err)
	}
	if after := a.Count(t, `SELECT count(*) FROM events`); after != before {
		t.Errorf("refused restore recorded %d events", after-before)
	}
	if n := a.Count(t, `SELECT count(*) FROM runs`) + queuedWork(t, a); n != 0 {
		t.Errorf("refused restores left %d runs or queued work", n)
	}

	// Confirmed and acknowledged: accepted, targeted at the restore run, pinned.
	res := a.Expect(t, domain.OutcomeAccepted, restoreStart(tm.Owner.ID, tm.Tenant.ID, risky.ID, true, true))
	if res.Run.Target == nil || *res.Run.Target != risky.ID || res.Run.Type != domain.OpRestoreExecute {
		t.Errorf("run = %+v, want restore.execute targeted at %s", res.Run, risky.ID)
	}
	if c := res.Run.ProviderConnection; c == nil || c.ID != conn.ID {
		t.Errorf("pinned %+v, want the default connection", c)
	}

	// The same restore again while it is active: deduped.
	again := a.Start(t, restoreStart(tm.Owner.ID, tm.Tenant.ID, risky.ID, true, true))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != res.Run.ID {
		t.Errorf("restore again = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, res.Run.ID)
	}

	// Another restore run (previewed without warnings, so no acknowledgement
	// needed) and another operation on the connection: scope_busy.
	quiet := createRestoreRun(t, a, tm.Owner.ID, tm.Tenant.ID, `[{"name":"onedrive"}]`)
	if p := previewRestoreRun(t, a, tm.Owner.ID, quiet.ID); len(p.Warnings) != 0 {
		t.Fatalf("quiet preview warned %q", p.Warnings)
	}
	for name, req := range map[string]gate.StartRequest{
		"other restore run": restoreStart(tm.Owner.ID, tm.Tenant.ID, quiet.ID, true, false),
		"inventory sync":    apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID),
		"groups sync":       apptest.TenantStart(tm.Operator.ID, domain.SurfaceGroupsSync, tm.Tenant.ID, ""),
	} {
		busy := a.Start(t, req)
		if busy.Outcome != domain.OutcomeScopeBusy || busy.Run.ID != res.Run.ID {
			t.Errorf("%s during the restore = %s -> %s, want scope_busy -> %s", name, busy.Outcome, busy.Run.ID, res.Run.ID)
		}
	}
	want := []string{"StartAccepted", "StartDeduped", "StartScopeBusy", "StartScopeBusy", "StartScopeBusy"}
	if got := apptest.Types(a.Stream(t, string(scope))); !slices.Equal(got, want) {
		t.Errorf("scope stream = %v, want %v", got, want)
	}
}

func TestRestoreBlockedWithoutPreviewKeepsConnectionFree(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	never := createRestoreRun(t, a, tm.Owner.ID, tm.Tenant.ID, `[{"name":"mailbox","overwrite":true}]`)

	res := a.Start(t, restoreStart(tm.Owner.ID, tm.Tenant.ID, never.ID, true, false))
	if res.Outcome != domain.OutcomeBlocked || res.Reason == nil || res.Reason.Code != domain.ReasonPreviewRequired {
		t.Fatalf("never previewed = %s %+v, want blocked restore_run.preview_required", res.Outcome, res.Reason)
	}
	if res.Run.Target == nil || *res.Run.Target != never.ID {
		t.Errorf("blocked run target = %v, want %s", res.Run.Target, never.ID)
	}
	var href string
	for _, s := range res.NextSteps {
		if s.Href != nil {
			href = *s.Href
		}
	}
	if href != "/api/v1/restore-runs/"+never.ID+"/preview" {
		t.Errorf("next steps = %+v, want a link to the preview", res.NextSteps)
	}
	// After the preview the same request is accepted.
	previewRestoreRun(t, a, tm.Owner.ID, never.ID)
	a.Expect(t, domain.OutcomeAccepted, restoreStart(tm.Owner.ID, tm.Tenant.ID, never.ID, true, true))
	if got := len(a.Stream(t, string(domain.ConnectionScope(conn.ID)))); got != 2 {
		t.Errorf("scope stream has %d events, want 2", got)
	}
}

func withKey(req gate.StartRequest, key, hash string) gate.StartRequest {
	req.IdempotencyKey, req.RequestHash = key, []byte(hash)
	return req
}

func TestIdempotencyKeyReplaysFirstAnswer(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	req := withKey(apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID), "key-1", "hash-a")

	first, err := a.Gate.Start(a.Ctx, req)
	if err != nil || first.Replayed || first.Result.Outcome != domain.OutcomeAccepted {
		t.Fatalf("first = %+v, %v; want accepted, not replayed", first, err)
	}
	before := a.Count(t, `SELECT count(*) FROM events`)

	again, err := a.Gate.Start(a.Ctx, req)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if !again.Replayed {
		t.Errorf("repeat not marked replayed")
	}
	firstJSON, _ := json.Marshal(first.Result)
	againJSON, _ := json.Marshal(again.Result)
	if string(firstJSON) != string(againJSON) {
		t.Errorf("replayed result differs:\n first %s\n again %s", firstJSON, againJSON)
	}
	if after := a.Count(t, `SELECT count(*) FROM events`); after != before {
		t.Errorf("replay recorded %d events", after-before)
	}

	// Same key, different body.
	other := withKey(apptest.ConnStart(tm.Operator.ID, domain.SurfaceComplianceSnapshot, conn.ID), "key-1", "hash-b")
	if _, err := a.Gate.Start(a.Ctx, other); !errors.Is(err, gate.ErrIdempotencyKeyReused) {
		t.Errorf("reused key: err = %v, want ErrIdempotencyKeyReused", err)
	}
	if after := a.Count(t, `SELECT count(*) FROM events`); after != before {
		t.Errorf("reused key recorded %d events", after-before)
	}

	// Keys belong to their user: another user's same key is a new request.
	mine := withKey(apptest.ConnStart(tm.Owner.ID, domain.SurfaceInventorySync, conn.ID), "key-1", "hash-a")
	resp, err := a.Gate.Start(a.Ctx, mine)
	if err != nil || resp.Replayed || resp.Result.Outcome != domain.OutcomeDeduped {
		t.Errorf("other user's key = %+v, %v; want a fresh deduped answer", resp, err)
	}
	// The answer replayed is the first one even after the state moved on.
	claim, err := a.BeginRun(t, first.Result.Run.ID, "w1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := a.Succeed(apptest.Worker, claim); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	late, err := a.Gate.Start(a.Ctx, req)
	if err != nil || !late.Replayed || late.Result.Outcome != domain.OutcomeAccepted || late.Result.Run.ID != first.Result.Run.ID {
		t.Errorf("replay after success = %+v, %v; want the original accepted answer", late, err)
	}
}

func TestIdempotencyKeyConcurrentRequests(t *testing.T) {
	t.Parallel()
	a, tm := newGate(t)
	conn := a.Connection(t, tm.Owner.ID, tm.Tenant.ID, "Graph", apptest.AsDefault)
	req := withKey(apptest.ConnStart(tm.Operator.ID, domain.SurfaceInventorySync, conn.ID), "same-key", "same-hash")

	const n = 20
	results := make([]gate.StartResponse, n)
	errs := make([]error, n)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			results[i], errs[i] = a.Gate.Start(a.Ctx, req)
		}()
	}
	close(release)
	wg.Wait()

	var runID string
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		r := results[i]
		if r.Result.Outcome != domain.OutcomeAccepted {
			t.Errorf("request %d: outcome %s, want the accepted answer", i, r.Result.Outcome)
		}
		if runID == "" {
			runID = r.Result.Run.ID
		}
		if r.Result.Run.ID != runID {
			t.Errorf("request %d: run %s, want %s", i, r.Result.Run.ID, runID)
		}
		if !r.Replayed {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers were fresh decisions, want 1", fresh)
	}
	events := a.Stream(t, string(domain.ConnectionScope(conn.ID)))
	if len(events) != 1 || events[0].Type != "StartAccepted" {
		t.Errorf("scope stream = %v, want exactly one decision", apptest.Types(events))
	}
	if n := a.Count(t, `SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Errorf("idempotency keys = %d, want 1", n)
	}
}
