package gate_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
)

func TestStartAcceptedPinsConnectionAndQueuesRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph production")
	scope := domain.ConnectionScope(conn.ID)

	res := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))

	run := res.Run
	if run.Status != domain.StatusQueued || run.Type != domain.OpInventorySync || run.CanonicalType != "inventory.sync" {
		t.Errorf("run = %+v, want a queued inventory.sync", run)
	}
	want := domain.ConnectionRef{ID: conn.ID, DisplayName: "Graph production", Provider: connections.ProviderSimulated}
	if run.ProviderConnection == nil || *run.ProviderConnection != want {
		t.Errorf("pinned connection = %+v, want %+v", run.ProviderConnection, want)
	}
	if run.TenantID != f.tenant.ID || run.InitiatorID != f.operator || run.Surface != "inventory_sync" || run.Target != nil {
		t.Errorf("run = %+v, want tenant %s, initiator %s, surface inventory_sync, no target", run, f.tenant.ID, f.operator)
	}
	if run.Links.Self != "/api/v1/operations/"+run.ID || res.Reason != nil || len(res.NextSteps) == 0 {
		t.Errorf("result = %+v, want a self link, no reason and a next step", res)
	}
	if res.Message.Tone != domain.ToneSuccess || res.Message.Title != "Inventory sync accepted" {
		t.Errorf("message = %+v", res.Message)
	}

	row := f.runRow(run.ID)
	if row.Status != "queued" || row.ScopeID != string(scope) || row.TenantID != f.tenant.ID || row.Type != domain.OpInventorySync {
		t.Errorf("runs row = %+v, want queued on %s", row, scope)
	}
	state, version := f.scope(scope)
	if version != 1 || state.Active == nil || state.Active.RunID != run.ID || state.Active.Status != domain.StatusQueued {
		t.Fatalf("scope snapshot = v%d %+v, want v1 holding %s", version, state.Active, run.ID)
	}
	if c := state.Active.Start.Connection; c == nil || *c != want {
		t.Errorf("snapshot's pinned connection = %+v, want %+v", c, want)
	}

	events := f.stream(string(scope))
	if len(events) != 1 || events[0].Type != "StartAccepted" || events[0].StreamVersion != 1 {
		t.Fatalf("scope stream = %v, want one StartAccepted", types(events))
	}
	accepted := f.decode(events[0]).(domain.StartAccepted)
	if accepted.RunID != run.ID || accepted.Connection == nil || *accepted.Connection != want {
		t.Errorf("StartAccepted = %+v, want run %s pinned to %+v", accepted, run.ID, want)
	}
	if md := events[0].Metadata; md.Actor != f.operator || md.TenantID != f.tenant.ID || md.CorrelationID != run.ID {
		t.Errorf("metadata = %+v, want actor, tenant and the run as correlation", md)
	}
	if n := f.queuedWork(); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
}

func TestStartDedupedAndScopeBusy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	scope := string(domain.ConnectionScope(conn.ID))
	first := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))

	again := f.start(connStart(f.owner, domain.SurfaceInventorySync, conn.ID))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != first.Run.ID {
		t.Fatalf("same surface again = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, first.Run.ID)
	}
	if again.Reason == nil || again.Reason.Code != domain.ReasonDeduped || len(again.NextSteps) == 0 {
		t.Errorf("deduped result = %+v, want reason start.deduped and next steps", again)
	}
	if again.Run.InitiatorID != f.operator {
		t.Errorf("deduped run initiator = %s, want the first run's %s", again.Run.InitiatorID, f.operator)
	}

	// A different operation on the same connection, from a connection surface
	// and from a tenant surface resolving to it by default.
	for _, req := range []gate.StartRequest{
		connStart(f.operator, domain.SurfaceComplianceSnapshot, conn.ID),
		connStart(f.operator, domain.SurfaceConnectionCheck, conn.ID),
		tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, ""),
	} {
		busy := f.start(req)
		if busy.Outcome != domain.OutcomeScopeBusy || busy.Run.ID != first.Run.ID {
			t.Errorf("%s = %s -> %s, want scope_busy -> %s", req.Surface.Name, busy.Outcome, busy.Run.ID, first.Run.ID)
		}
		if busy.Reason == nil || busy.Reason.Code != domain.ReasonScopeBusy || len(busy.NextSteps) == 0 {
			t.Errorf("%s: result = %+v, want reason start.scope_busy and next steps", req.Surface.Name, busy)
		}
	}

	events := f.stream(scope)
	want := []string{"StartAccepted", "StartDeduped", "StartScopeBusy", "StartScopeBusy", "StartScopeBusy"}
	if got := types(events); !slices.Equal(got, want) {
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
	if n := f.count(`SELECT count(*) FROM runs`); n != 1 {
		t.Errorf("runs rows = %d, want 1", n)
	}
	if n := f.queuedWork(); n != 1 {
		t.Errorf("work queued = %d, want 1", n)
	}
	if _, v := f.scope(domain.ScopeID(scope)); v != int64(len(events)) {
		t.Errorf("snapshot version %d, stream version %d", v, len(events))
	}
}

func TestStartBlocked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	restore := f.createRestoreRun(`[{"name":"mailbox"}]`) // never previewed

	type blockedCase struct {
		name   string
		setup  func(f *fixture) gate.StartRequest
		reason domain.ReasonCode
		class  domain.ReasonClass
		// tenantScope: recorded on the tenant's scope (no connection resolved).
		tenantScope bool
	}
	connFor := func(change ...func(*connections.NewConnection)) func(*fixture) gate.StartRequest {
		return func(f *fixture) gate.StartRequest {
			c := f.connection("conn", change...)
			return connStart(f.operator, domain.SurfaceInventorySync, c.ID)
		}
	}
	cases := []blockedCase{
		{"no default connection", func(f *fixture) gate.StartRequest {
			return tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, "")
		}, domain.ReasonMissingDefault, domain.ClassProviderAccess, true},
		{"disabled", connFor(disabled), domain.ReasonDisabled, domain.ClassProviderAccess, false},
		{"consent missing", connFor(consent(domain.ConsentMissing)), domain.ReasonConsentMissing, domain.ClassProviderConsent, false},
		{"consent revoked", connFor(consent(domain.ConsentRevoked)), domain.ReasonConsentMissing, domain.ClassProviderConsent, false},
		{"credentials expired", connFor(credentials(domain.CredentialsExpired)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"credentials invalid", connFor(credentials(domain.CredentialsInvalid)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"credentials missing", connFor(credentials(domain.CredentialsMissing)), domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials, false},
		{"disabled, explicit on a tenant surface", func(f *fixture) gate.StartRequest {
			c := f.connection("explicit", disabled)
			return tenantStart(f.operator, domain.SurfaceTenantVerification, f.tenant.ID, c.ID)
		}, domain.ReasonDisabled, domain.ClassProviderAccess, false},
		{"restore never previewed", func(f *fixture) gate.StartRequest {
			c := f.connection("restore target")
			req := tenantStart(f.owner, domain.SurfaceRestoreExecute, f.tenant.ID, c.ID)
			req.RestoreRunID, req.Confirm = restore.ID, true
			return req
		}, domain.ReasonPreviewRequired, domain.ClassRestoreReadiness, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := f.on(t)
			req := tc.setup(f)
			scope := domain.TenantScope(f.tenant.ID)
			if !tc.tenantScope {
				scope = domain.ConnectionScope(req.ConnectionID)
			}
			before := len(f.stream(string(scope)))
			runsBefore := f.count(`SELECT count(*) FROM runs`)

			res := f.start(req)

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

			events := f.stream(string(scope))
			if len(events) != before+1 || events[len(events)-1].Type != "StartBlocked" {
				t.Fatalf("scope %s stream = %v, want one StartBlocked more than %d", scope, types(events), before)
			}
			blocked := f.decode(events[len(events)-1]).(domain.StartBlocked)
			if blocked.RunID != res.Run.ID || blocked.Reason.Code != tc.reason {
				t.Errorf("StartBlocked = %+v", blocked)
			}
			row := f.runRow(res.Run.ID)
			if row.Status != "blocked" || row.ScopeID != string(scope) {
				t.Errorf("runs row = %+v, want blocked on %s", row, scope)
			}
			if n := f.count(`SELECT count(*) FROM runs`); n != runsBefore+1 {
				t.Errorf("runs rows = %d, want %d", n, runsBefore+1)
			}
			if n := f.count(`SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`); n != 0 {
				t.Errorf("active runs = %d, want 0", n)
			}
			if n := f.queuedWork(); n != 0 {
				t.Errorf("work queued = %d, want 0", n)
			}
			if state, _ := f.scope(scope); state.Active != nil {
				t.Errorf("scope %s held by %s after a blocked start", scope, state.Active.RunID)
			}
		})
	}
}

// A blocked start wins over deduped and scope_busy (contract precedence),
// and does not disturb the run holding the scope.
func TestStartBlockedTakesPrecedenceOverActiveRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	first := f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))

	if _, err := f.app.Connections.Update(f.ctx, apptest.As(f.owner), conn.ID, connections.Patch{Consent: ptr(domain.ConsentRevoked)}); err != nil {
		t.Fatalf("revoke consent: %v", err)
	}
	res := f.start(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))
	if res.Outcome != domain.OutcomeBlocked || res.Reason.Code != domain.ReasonConsentMissing {
		t.Fatalf("outcome = %s %+v, want blocked consent_missing", res.Outcome, res.Reason)
	}
	if got := f.activeRunID(domain.ConnectionScope(conn.ID)); got != first.Run.ID {
		t.Errorf("scope held by %q, want %s", got, first.Run.ID)
	}
	if got := f.runRow(first.Run.ID).Status; got != "queued" {
		t.Errorf("first run status = %s, want queued", got)
	}
}

func TestStartAuthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	other := f.newTenant("Other")
	f.grant(f.owner, other.ID, domain.RoleOwner)
	otherConn := f.connectionOn(other.ID, "Other graph", asDefault)

	restoreOther := f.createRestoreRunOn(other.ID, `[]`)

	notFound := map[string]gate.StartRequest{
		"non-member, connection surface":        connStart(f.outsider, domain.SurfaceInventorySync, conn.ID),
		"non-member, tenant surface":            tenantStart(f.outsider, domain.SurfaceGroupsSync, f.tenant.ID, ""),
		"non-member, explicit connection":       tenantStart(f.outsider, domain.SurfaceTenantVerification, f.tenant.ID, conn.ID),
		"member of another tenant only":         connStart(f.operator, domain.SurfaceInventorySync, otherConn.ID),
		"nonexistent connection":                connStart(f.operator, domain.SurfaceInventorySync, "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
		"nonexistent tenant":                    tenantStart(f.operator, domain.SurfaceGroupsSync, "01HZZZZZZZZZZZZZZZZZZZZZZZ", ""),
		"nonexistent explicit connection":       tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
		"explicit connection of another tenant": tenantStart(f.owner, domain.SurfaceGroupsSync, f.tenant.ID, otherConn.ID),
		"nonexistent restore run": func() gate.StartRequest {
			r := tenantStart(f.owner, domain.SurfaceRestoreExecute, f.tenant.ID, "")
			r.RestoreRunID, r.Confirm = "01HZZZZZZZZZZZZZZZZZZZZZZZ", true
			return r
		}(),
		"restore run of another tenant": func() gate.StartRequest {
			r := tenantStart(f.owner, domain.SurfaceRestoreExecute, f.tenant.ID, "")
			r.RestoreRunID, r.Confirm = restoreOther.ID, true
			return r
		}(),
	}
	forbidden := map[string]struct {
		req gate.StartRequest
		cap domain.Capability
	}{
		"readonly inventory sync":       {connStart(f.readonly, domain.SurfaceInventorySync, conn.ID), domain.CapInventorySync},
		"auditor inventory sync":        {connStart(f.auditor, domain.SurfaceInventorySync, conn.ID), domain.CapInventorySync},
		"readonly connection check":     {connStart(f.readonly, domain.SurfaceConnectionCheck, conn.ID), domain.CapProviderConnectionCheck},
		"readonly groups sync (tenant)": {tenantStart(f.readonly, domain.SurfaceGroupsSync, f.tenant.ID, ""), domain.CapDirectoryGroupsSync},
		"readonly tenant verification":  {tenantStart(f.readonly, domain.SurfaceTenantVerification, f.tenant.ID, conn.ID), domain.CapTenantVerify},
		"operator restore execute (owner only)": {func() gate.StartRequest {
			r := tenantStart(f.operator, domain.SurfaceRestoreExecute, f.tenant.ID, "")
			r.RestoreRunID, r.Confirm = "01HZZZZZZZZZZZZZZZZZZZZZZZ", true
			return r
		}(), domain.CapRestoreExecute},
	}

	before := f.eventCount()
	for name, req := range notFound {
		_, err := f.svc.Start(f.ctx, req)
		if !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", name, err)
		}
	}
	for name, tc := range forbidden {
		_, err := f.svc.Start(f.ctx, tc.req)
		var fe *domain.ForbiddenError
		if !errors.As(err, &fe) || fe.Capability != tc.cap {
			t.Errorf("%s: err = %v, want ForbiddenError naming %s", name, err, tc.cap)
		}
	}
	if after := f.eventCount(); after != before {
		t.Errorf("events: %d before, %d after refused starts", before, after)
	}
	if n := f.count(`SELECT count(*) FROM runs`) + f.count(`SELECT count(*) FROM scopes`) + f.queuedWork(); n != 0 {
		t.Errorf("refused starts left %d rows in runs/scopes/queue", n)
	}

	// The same members can start what their role allows.
	f.accept(connStart(f.operator, domain.SurfaceInventorySync, conn.ID))
	f.accept(connStart(f.owner, domain.SurfaceInventorySync, otherConn.ID))
}

func TestStartUnknownOperationIsInvalid(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.connection("Graph", asDefault)
	_, err := f.svc.Start(f.ctx, gate.StartRequest{Actor: apptest.As(f.owner), Surface: domain.SurfaceOnboardingBootstrap,
		TenantID: f.tenant.ID, Operation: "no.such.operation"})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a ValidationError", err)
	}
}

func TestPinning(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.connection("Connection A", asDefault)
	b := f.connection("Connection B")

	// An explicit connection on a tenant surface overrides the default.
	explicit := f.accept(tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, b.ID))
	if c := explicit.Run.ProviderConnection; c == nil || c.ID != b.ID || c.DisplayName != "Connection B" {
		t.Fatalf("explicit start pinned %+v, want B", c)
	}
	if got := f.runRow(explicit.Run.ID).ScopeID; got != string(domain.ConnectionScope(b.ID)) {
		t.Errorf("explicit run on scope %s, want B's", got)
	}
	if got := f.activeRunID(domain.ConnectionScope(a.ID)); got != "" {
		t.Errorf("A's scope held by %s, want free", got)
	}

	// Without a choice the default (A) is pinned.
	byDefault := f.accept(tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, ""))
	if c := byDefault.Run.ProviderConnection; c == nil || c.ID != a.ID {
		t.Fatalf("default start pinned %+v, want A", c)
	}

	// Making B the default and renaming A afterwards changes nothing about the run.
	if _, err := f.app.Connections.MakeDefault(f.ctx, apptest.As(f.owner), b.ID); err != nil {
		t.Fatalf("make B default: %v", err)
	}
	if _, err := f.app.Connections.Update(f.ctx, apptest.As(f.owner), a.ID, connections.Patch{DisplayName: ptr("Connection A (renamed)")}); err != nil {
		t.Fatalf("rename A: %v", err)
	}
	state, _ := f.scope(domain.ConnectionScope(a.ID))
	if state.Active == nil || state.Active.RunID != byDefault.Run.ID {
		t.Fatalf("A's scope = %+v, want held by %s", state.Active, byDefault.Run.ID)
	}
	if c := state.Active.Start.Connection; c == nil || c.ID != a.ID || c.DisplayName != "Connection A" {
		t.Errorf("A's run is pinned to %+v, want A as it was at click time", c)
	}
	if got := f.runRow(byDefault.Run.ID).ScopeID; got != string(domain.ConnectionScope(a.ID)) {
		t.Errorf("runs row scope = %s, want A's", got)
	}
	// Starting it again on A answers the pinned run as it was pinned.
	again := f.start(tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, a.ID))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != byDefault.Run.ID {
		t.Fatalf("again on A = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, byDefault.Run.ID)
	}
	if c := again.Run.ProviderConnection; c == nil || c.ID != a.ID || c.DisplayName != "Connection A" {
		t.Errorf("deduped answer shows %+v, want A as pinned", c)
	}
	// And the new default now resolves to B, which already runs the explicit sync.
	now := f.start(tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, ""))
	if now.Outcome != domain.OutcomeDeduped || now.Run.ID != explicit.Run.ID {
		t.Errorf("default start after the switch = %s -> %s, want deduped -> %s", now.Outcome, now.Run.ID, explicit.Run.ID)
	}
}

func types(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

func ptr[T any](v T) *T { return &v }
