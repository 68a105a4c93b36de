package domain_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// Fixtures shared by the domain tests.

const (
	tenantID = "tenant-1"
	connID   = "conn-1"
	actorID  = "user-1"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func connRef(id string) *domain.ConnectionRef {
	return &domain.ConnectionRef{ID: id, DisplayName: "Contoso Graph " + id, Provider: "microsoft"}
}

// info builds the StartInfo a surface records for operation opType on
// connection c (nil: none resolved, recorded on the tenant scope).
func info(opType string, surface domain.Surface, target string, c *domain.ConnectionRef) domain.StartInfo {
	op := domain.MustOperation(opType)
	scope := domain.TenantScope(tenantID)
	if c != nil {
		scope = domain.ConnectionScope(c.ID)
	}
	return domain.StartInfo{
		TenantID: tenantID, ScopeID: scope, Type: op.Type, CanonicalType: op.Canonical, Label: op.Label,
		Surface: surface.Name, InitiatorID: actorID, Target: target, Connection: c,
	}
}

var (
	inventory  = info(domain.OpInventorySync, domain.SurfaceInventorySync, "", connRef(connID))
	compliance = info(domain.OpComplianceSnapshot, domain.SurfaceComplianceSnapshot, "", connRef(connID))
	groups     = info(domain.OpGroupsSync, domain.SurfaceGroupsSync, "", connRef(connID))
	verifyTen  = info(domain.OpConnectionCheck, domain.SurfaceTenantVerification, "", connRef(connID))
	checkConn  = info(domain.OpConnectionCheck, domain.SurfaceConnectionCheck, "", connRef(connID))
	onbVerify  = info(domain.OpConnectionCheck, domain.SurfaceOnboardingVerification, "", connRef(connID))
	restore1   = info(domain.OpRestoreExecute, domain.SurfaceRestoreExecute, "rr-1", connRef(connID))
	restore2   = info(domain.OpRestoreExecute, domain.SurfaceRestoreExecute, "rr-2", connRef(connID))
	noConn     = info(domain.OpGroupsSync, domain.SurfaceGroupsSync, "", nil)
)

// ref is the RunRef of run runID started with s and accepted at at(0), the
// time accepted gives it.
func ref(runID string, s domain.StartInfo) domain.RunRef {
	return domain.RunRef{RunID: runID, ScopeID: s.ScopeID, TenantID: s.TenantID, Start: s, CreatedAt: at(0)}
}

// ptr returns a pointer to a copy of t.
func ptr(t time.Time) *time.Time { return &t }

// Given-events helpers: accepted at at(0), started at at(1), ended at at(2).

func accepted(runID string, s domain.StartInfo) domain.Event {
	return domain.StartAccepted{RunID: runID, StartInfo: s, At: at(0)}
}

func started(runID string, s domain.StartInfo) domain.Event {
	return domain.RunStarted{RunRef: ref(runID, s), Epoch: 1, WorkerID: "worker-1", At: at(1)}
}

func succeeded(runID string, s domain.StartInfo) domain.Event {
	return domain.RunSucceeded{RunRef: ref(runID, s), StartedAt: ptr(at(1)), Epoch: 1, At: at(2)}
}

func failed(runID string, s domain.StartInfo, code domain.ReasonCode) domain.Event {
	return domain.RunFailed{RunRef: ref(runID, s), StartedAt: ptr(at(1)), Epoch: 1, Reason: domain.MustReason(code), At: at(2)}
}

// cancelled cancels a running run (started at at(1)) or a queued one.
func cancelled(runID string, s domain.StartInfo, wasRunning bool) domain.Event {
	var startedAt *time.Time
	if wasRunning {
		startedAt = ptr(at(1))
	}
	return domain.RunCancelled{RunRef: ref(runID, s), StartedAt: startedAt, ActorID: actorID, WasRunning: wasRunning,
		Reason: domain.MustReason(domain.ReasonCancelled), At: at(2)}
}

func blocked(runID string, s domain.StartInfo, code domain.ReasonCode) domain.Event {
	return domain.StartBlocked{RunID: runID, StartInfo: s, Reason: domain.MustReason(code), At: at(0)}
}

func fold(events ...domain.Event) domain.ScopeState {
	s := domain.ScopeState{}
	for _, e := range events {
		s = domain.Evolve(s, e)
	}
	return s
}

func start(runID string, s domain.StartInfo) domain.StartCommand {
	return domain.StartCommand{RunID: runID, Start: s, At: at(10)}
}

// scenario reads: given events, when command (+facts), then event or error.
type scenario struct {
	name  string
	given []domain.Event
	when  domain.Command
	facts domain.Facts
	then  domain.Event
	err   error
}

// decide calls Decide and turns a panic into a test failure.
func decide(t testing.TB, s domain.ScopeState, cmd domain.Command, f domain.Facts) (e domain.Event, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Decide(%+v) panicked: %v", cmd, p)
		}
	}()
	return domain.Decide(s, cmd, f)
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			state := fold(sc.given...)
			before := fmt.Sprintf("%#v", state)
			if state.Active != nil {
				before += fmt.Sprintf("%#v", *state.Active)
			}
			got, err := decide(t, state, sc.when, sc.facts)
			after := fmt.Sprintf("%#v", state)
			if state.Active != nil {
				after += fmt.Sprintf("%#v", *state.Active)
			}
			if before != after {
				t.Errorf("Decide mutated its state:\nbefore %s\nafter  %s", before, after)
			}
			if sc.err != nil {
				if !errors.Is(err, sc.err) {
					t.Fatalf("then error %v, got event %#v, error %v", sc.err, got, err)
				}
				if got != nil {
					t.Errorf("an error came with an event: %#v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("then %#v, got error %v", sc.then, err)
			}
			if !reflect.DeepEqual(got, sc.then) {
				t.Fatalf("then\n  %#v\ngot\n  %#v", sc.then, got)
			}
			// Deciding again gives the same answer: Decide is pure.
			again, err := decide(t, state, sc.when, sc.facts)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("second Decide differs: %#v, %v", again, err)
			}
		})
	}
}

func TestStartAccepted(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "fresh scope",
			when: start("run-2", inventory),
			then: domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
		{name: "restore with a target",
			when: start("run-2", restore1),
			then: domain.StartAccepted{RunID: "run-2", StartInfo: restore1, At: at(10)}},
		{name: "after the holder succeeded",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory), succeeded("run-1", inventory)},
			when:  start("run-2", inventory),
			then:  domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
		{name: "after the holder failed",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory), failed("run-1", inventory, domain.ReasonThrottled)},
			when:  start("run-2", compliance),
			then:  domain.StartAccepted{RunID: "run-2", StartInfo: compliance, At: at(10)}},
		{name: "after the holder was lost",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory), failed("run-1", inventory, domain.ReasonExecutionLost)},
			when:  start("run-2", inventory),
			then:  domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
		{name: "after the queued holder was cancelled",
			given: []domain.Event{accepted("run-1", inventory), cancelled("run-1", inventory, false)},
			when:  start("run-2", inventory),
			then:  domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
		{name: "a blocked start does not hold the scope",
			given: []domain.Event{blocked("run-1", inventory, domain.ReasonConsentMissing)},
			when:  start("run-2", inventory),
			then:  domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
		{name: "deduped and busy answers do not hold the scope",
			given: []domain.Event{
				domain.StartDeduped{RunID: "run-0", StartInfo: inventory, At: at(0)},
				domain.StartScopeBusy{RunID: "run-0", ActiveType: domain.OpInventorySync, StartInfo: compliance, At: at(0)},
			},
			when: start("run-2", inventory),
			then: domain.StartAccepted{RunID: "run-2", StartInfo: inventory, At: at(10)}},
	})
}

func TestStartAcceptedPinsTheConnection(t *testing.T) {
	pinned := connRef("conn-pinned")
	s := info(domain.OpInventorySync, domain.SurfaceInventorySync, "", pinned)
	e, err := decide(t, domain.ScopeState{}, start("run-1", s), domain.Facts{})
	if err != nil {
		t.Fatal(err)
	}
	acc, ok := e.(domain.StartAccepted)
	if !ok {
		t.Fatalf("got %#v, want StartAccepted", e)
	}
	if acc.Connection == nil || *acc.Connection != *pinned {
		t.Fatalf("accepted start pinned %+v, want %+v", acc.Connection, pinned)
	}
	state := domain.Evolve(domain.ScopeState{}, e)
	if state.Active == nil || state.Active.RunID != "run-1" || state.Active.Status != domain.StatusQueued {
		t.Fatalf("after accept the scope is held by %+v, want run-1 queued", state.Active)
	}
	if got := state.Active.Start.Connection; got == nil || *got != *pinned {
		t.Fatalf("the active run pinned %+v, want %+v", got, pinned)
	}
	run, ok := domain.RunOf(e)
	if !ok || run.Status != domain.StatusQueued || run.ProviderConnection == nil || *run.ProviderConnection != *pinned {
		t.Fatalf("RunOf(accepted) = %+v, want queued run pinned to %+v", run, pinned)
	}
	if got := state.Active.Run(); !reflect.DeepEqual(got, run) {
		t.Fatalf("ActiveRun.Run() = %+v, want %+v", got, run)
	}
	if run.Links.Self != "/api/v1/operations/run-1" {
		t.Fatalf("self link %q", run.Links.Self)
	}
}

func TestStartDeduped(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "same type, queued",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", inventory),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: inventory, At: at(10)}},
		{name: "same type, running",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory)},
			when:  start("run-2", inventory),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: inventory, At: at(10)}},
		{name: "same canonical type from another surface (tenant verification, then connection check)",
			given: []domain.Event{accepted("run-1", verifyTen)},
			when:  start("run-2", checkConn),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: checkConn, At: at(10)}},
		{name: "same canonical type from onboarding verification",
			given: []domain.Event{accepted("run-1", checkConn), started("run-1", checkConn)},
			when:  start("run-2", onbVerify),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: onbVerify, At: at(10)}},
		{name: "legacy write-time type",
			given: []domain.Event{accepted("run-1", groups)},
			when:  start("run-2", groups),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: groups, At: at(10)}},
		{name: "restore of the same restore run",
			given: []domain.Event{accepted("run-1", restore1)},
			when:  start("run-2", restore1),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: restore1, At: at(10)}},
	})
}

func TestStartScopeBusy(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "different type, queued",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", compliance),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpInventorySync, StartInfo: compliance, At: at(10)}},
		{name: "different type, running",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory)},
			when:  start("run-2", groups),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpInventorySync, StartInfo: groups, At: at(10)}},
		{name: "active type is reported as written (legacy)",
			given: []domain.Event{accepted("run-1", groups)},
			when:  start("run-2", inventory),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpGroupsSync, StartInfo: inventory, At: at(10)}},
		{name: "same type, different target",
			given: []domain.Event{accepted("run-1", restore1)},
			when:  start("run-2", restore2),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpRestoreExecute, StartInfo: restore2, At: at(10)}},
		{name: "same type, different target, running",
			given: []domain.Event{accepted("run-1", restore1), started("run-1", restore1)},
			when:  start("run-2", restore2),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpRestoreExecute, StartInfo: restore2, At: at(10)}},
	})
}

// blockingReasons are the reasons a preflight blocks a start with, with
// the class contract section 6 gives them.
var blockingReasons = []struct {
	code  domain.ReasonCode
	class domain.ReasonClass
}{
	{domain.ReasonMissingDefault, domain.ClassProviderAccess},
	{domain.ReasonDisabled, domain.ClassProviderAccess},
	{domain.ReasonConsentMissing, domain.ClassProviderConsent},
	{domain.ReasonCredentialsInvalid, domain.ClassProviderCredentials},
	{domain.ReasonPreviewRequired, domain.ClassRestoreReadiness},
}

// blockedStart is the start a surface makes when code blocks it.
func blockedStart(code domain.ReasonCode) domain.StartInfo {
	switch code {
	case domain.ReasonMissingDefault:
		return noConn
	case domain.ReasonPreviewRequired:
		return restore1
	}
	return inventory
}

func TestStartBlocked(t *testing.T) {
	var scenarios []scenario
	for _, b := range blockingReasons {
		s := blockedStart(b.code)
		reason := domain.Reason{Code: b.code, Class: b.class, Message: domain.MustReason(b.code).Message}
		scenarios = append(scenarios,
			scenario{name: string(b.code) + " on a free scope",
				when: start("run-2", s), facts: domain.Facts{Blocked: b.code},
				then: domain.StartBlocked{RunID: "run-2", StartInfo: s, Reason: reason, At: at(10)}},
			scenario{name: string(b.code) + " after an earlier blocked start",
				given: []domain.Event{blocked("run-1", s, b.code)},
				when:  start("run-2", s), facts: domain.Facts{Blocked: b.code},
				then: domain.StartBlocked{RunID: "run-2", StartInfo: s, Reason: reason, At: at(10)}},
		)
	}
	runScenarios(t, scenarios)

	for _, b := range blockingReasons {
		e, err := decide(t, domain.ScopeState{}, start("run-9", blockedStart(b.code)), domain.Facts{Blocked: b.code})
		if err != nil {
			t.Fatal(err)
		}
		sb := e.(domain.StartBlocked)
		if sb.Reason.Code != b.code || sb.Reason.Class != b.class || sb.Reason.Message == "" {
			t.Errorf("%s: reason %+v, want class %s and a message", b.code, sb.Reason, b.class)
		}
		if sb.RunID != "run-9" {
			t.Errorf("%s: blocked run id %q, want the new run id", b.code, sb.RunID)
		}
		if got := domain.Evolve(domain.ScopeState{}, e); got.Active != nil {
			t.Errorf("%s: a blocked start holds the scope: %+v", b.code, got.Active)
		}
		run, ok := domain.RunOf(e)
		if !ok || run.Status != domain.StatusBlocked || run.Reason == nil || run.Reason.Code != b.code ||
			run.FinishedAt == nil || run.StartedAt != nil {
			t.Errorf("%s: blocked run %+v", b.code, run)
		}
	}
}

func TestStartPrecedence(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "blocked beats deduped (active run of the same type)",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", inventory), facts: domain.Facts{Blocked: domain.ReasonConsentMissing},
			then: domain.StartBlocked{RunID: "run-2", StartInfo: inventory,
				Reason: domain.MustReason(domain.ReasonConsentMissing), At: at(10)}},
		{name: "blocked beats deduped (running)",
			given: []domain.Event{accepted("run-1", inventory), started("run-1", inventory)},
			when:  start("run-2", inventory), facts: domain.Facts{Blocked: domain.ReasonDisabled},
			then: domain.StartBlocked{RunID: "run-2", StartInfo: inventory,
				Reason: domain.MustReason(domain.ReasonDisabled), At: at(10)}},
		{name: "blocked beats scope_busy",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", compliance), facts: domain.Facts{Blocked: domain.ReasonCredentialsInvalid},
			then: domain.StartBlocked{RunID: "run-2", StartInfo: compliance,
				Reason: domain.MustReason(domain.ReasonCredentialsInvalid), At: at(10)}},
		{name: "blocked beats scope_busy for a restore of another target",
			given: []domain.Event{accepted("run-1", restore1)},
			when:  start("run-2", restore2), facts: domain.Facts{Blocked: domain.ReasonPreviewRequired},
			then: domain.StartBlocked{RunID: "run-2", StartInfo: restore2,
				Reason: domain.MustReason(domain.ReasonPreviewRequired), At: at(10)}},
		{name: "deduped beats scope_busy",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", inventory),
			then:  domain.StartDeduped{RunID: "run-1", StartInfo: inventory, At: at(10)}},
		{name: "scope_busy beats accepted",
			given: []domain.Event{accepted("run-1", inventory)},
			when:  start("run-2", compliance),
			then:  domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpInventorySync, StartInfo: compliance, At: at(10)}},
	})
}

func TestStartInvalid(t *testing.T) {
	without := func(mod func(*domain.StartInfo)) domain.StartInfo {
		s := inventory
		mod(&s)
		return s
	}
	runScenarios(t, []scenario{
		{name: "missing run id", when: start("", inventory), err: domain.ErrInvalidCommand},
		{name: "missing run id even when blocked", when: start("", inventory),
			facts: domain.Facts{Blocked: domain.ReasonDisabled}, err: domain.ErrInvalidCommand},
		{name: "missing run id even when it would dedupe", given: []domain.Event{accepted("run-1", inventory)},
			when: start("", inventory), err: domain.ErrInvalidCommand},
		{name: "missing tenant", when: start("run-2", without(func(s *domain.StartInfo) { s.TenantID = "" })),
			err: domain.ErrInvalidCommand},
		{name: "missing scope", when: start("run-2", without(func(s *domain.StartInfo) { s.ScopeID = "" })),
			err: domain.ErrInvalidCommand},
		{name: "missing type", when: start("run-2", without(func(s *domain.StartInfo) { s.Type = "" })),
			err: domain.ErrInvalidCommand},
		{name: "accepting without a pinned connection", when: start("run-2", noConn), err: domain.ErrInvalidCommand},
		{name: "blocked by a code outside the catalog", when: start("run-2", inventory),
			facts: domain.Facts{Blocked: "provider_connection.bogus"}, err: domain.ErrInvalidCommand},
		{name: "no command", when: nil, err: domain.ErrInvalidCommand},
	})
}

func TestPreflightOrder(t *testing.T) {
	ready := domain.ConnectionReadiness{Enabled: true, Consent: domain.ConsentGranted, Credentials: domain.CredentialsValid, Executable: true}
	with := func(mod func(*domain.ConnectionReadiness)) *domain.ConnectionReadiness {
		c := ready
		mod(&c)
		return &c
	}
	allBad := with(func(c *domain.ConnectionReadiness) {
		c.Enabled, c.Consent, c.Credentials = false, domain.ConsentRevoked, domain.CredentialsExpired
	})
	notPreviewed := &domain.RestoreReadiness{Previewed: false}
	previewed := &domain.RestoreReadiness{Previewed: true}
	restoreOp := domain.MustOperation(domain.OpRestoreExecute)

	type tc struct {
		name    string
		op      string
		conn    *domain.ConnectionReadiness
		restore *domain.RestoreReadiness
		want    domain.ReasonCode
	}
	cases := []tc{
		{"no connection beats everything", domain.OpRestoreExecute, nil, notPreviewed, domain.ReasonMissingDefault},
		{"no connection, plain operation", domain.OpInventorySync, nil, nil, domain.ReasonMissingDefault},
		{"disabled beats consent, credentials and preview", domain.OpRestoreExecute, allBad, notPreviewed, domain.ReasonDisabled},
		{"consent missing beats credentials and preview", domain.OpRestoreExecute,
			with(func(c *domain.ConnectionReadiness) {
				c.Consent, c.Credentials = domain.ConsentMissing, domain.CredentialsMissing
			}),
			notPreviewed, domain.ReasonConsentMissing},
		{"consent revoked", domain.OpInventorySync,
			with(func(c *domain.ConnectionReadiness) { c.Consent = domain.ConsentRevoked }), nil, domain.ReasonConsentMissing},
		{"consent unknown", domain.OpInventorySync,
			with(func(c *domain.ConnectionReadiness) { c.Consent = "" }), nil, domain.ReasonConsentMissing},
		{"credentials beat preview", domain.OpRestoreExecute,
			with(func(c *domain.ConnectionReadiness) { c.Credentials = domain.CredentialsInvalid }), notPreviewed,
			domain.ReasonCredentialsInvalid},
		{"credentials unknown", domain.OpComplianceSnapshot,
			with(func(c *domain.ConnectionReadiness) { c.Credentials = "" }), nil, domain.ReasonCredentialsInvalid},
		{"no executor", domain.OpInventorySync,
			with(func(c *domain.ConnectionReadiness) { c.Executable = false }), nil, domain.ReasonNoExecutor},
		{"credentials beat no executor", domain.OpInventorySync,
			with(func(c *domain.ConnectionReadiness) { c.Credentials, c.Executable = domain.CredentialsExpired, false }), nil,
			domain.ReasonCredentialsInvalid},
		{"no executor beats preview", domain.OpRestoreExecute,
			with(func(c *domain.ConnectionReadiness) { c.Executable = false }), notPreviewed, domain.ReasonNoExecutor},
		{"restore not previewed", domain.OpRestoreExecute, &ready, notPreviewed, domain.ReasonPreviewRequired},
		{"restore readiness unknown", domain.OpRestoreExecute, &ready, nil, domain.ReasonPreviewRequired},
		{"restore previewed", domain.OpRestoreExecute, &ready, previewed, ""},
	}
	for _, cred := range []domain.Credentials{domain.CredentialsExpired, domain.CredentialsInvalid, domain.CredentialsMissing} {
		cases = append(cases, tc{"credentials " + string(cred), domain.OpGroupsSync,
			with(func(c *domain.ConnectionReadiness) { c.Credentials = cred }), nil, domain.ReasonCredentialsInvalid})
	}
	for _, op := range domain.Operations() {
		if op.Type == restoreOp.Type {
			continue
		}
		cases = append(cases,
			tc{op.Type + " ready", op.Type, &ready, nil, ""},
			tc{op.Type + " ignores an unpreviewed restore", op.Type, &ready, notPreviewed, ""},
			tc{op.Type + " disabled", op.Type, allBad, notPreviewed, domain.ReasonDisabled},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := domain.Preflight(domain.MustOperation(c.op), c.conn, c.restore); got != c.want {
				t.Fatalf("Preflight(%s) = %q, want %q", c.op, got, c.want)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	queued := []domain.Event{accepted("run-1", inventory)}
	running := []domain.Event{accepted("run-1", inventory), started("run-1", inventory)}
	plus := func(base []domain.Event, more ...domain.Event) []domain.Event {
		return append(append([]domain.Event{}, base...), more...)
	}
	finished := map[string][]domain.Event{
		"succeeded":          plus(running, succeeded("run-1", inventory)),
		"failed":             plus(running, failed("run-1", inventory, domain.ReasonUnavailable)),
		"lost":               plus(running, failed("run-1", inventory, domain.ReasonExecutionLost)),
		"cancelled queued":   plus(queued, cancelled("run-1", inventory, false)),
		"cancelled running":  plus(running, cancelled("run-1", inventory, true)),
		"blocked (no scope)": {blocked("run-1", inventory, domain.ReasonDisabled)},
	}
	r1 := ref("run-1", inventory)

	scenarios := []scenario{
		{name: "MarkStarted on a queued run starts epoch 1", given: queued,
			when: domain.MarkStarted{RunID: "run-1", WorkerID: "worker-7", At: at(5)},
			then: domain.RunStarted{RunRef: r1, Epoch: 1, WorkerID: "worker-7", At: at(5)}},
		{name: "MarkStarted twice", given: running,
			when: domain.MarkStarted{RunID: "run-1", WorkerID: "worker-7", At: at(5)}, err: domain.ErrRunAlreadyStarted},
		{name: "MarkStarted on an unknown run", given: queued,
			when: domain.MarkStarted{RunID: "run-x", At: at(5)}, err: domain.ErrRunNotActive},
		{name: "MarkStarted on an empty scope",
			when: domain.MarkStarted{RunID: "run-1", At: at(5)}, err: domain.ErrRunNotActive},

		{name: "MarkSucceeded with the right epoch", given: running,
			when: domain.MarkSucceeded{RunID: "run-1", Epoch: 1, At: at(5)},
			then: domain.RunSucceeded{RunRef: r1, StartedAt: ptr(at(1)), Epoch: 1, At: at(5)}},
		{name: "MarkFailed with the right epoch", given: running,
			when: domain.MarkFailed{RunID: "run-1", Epoch: 1, Reason: domain.ReasonThrottled, At: at(5)},
			then: domain.RunFailed{RunRef: r1, StartedAt: ptr(at(1)), Epoch: 1, Reason: domain.MustReason(domain.ReasonThrottled), At: at(5)}},
		{name: "MarkFailed with a readiness reason found at execution", given: running,
			when: domain.MarkFailed{RunID: "run-1", Epoch: 1, Reason: domain.ReasonDisabled, At: at(5)},
			then: domain.RunFailed{RunRef: r1, StartedAt: ptr(at(1)), Epoch: 1, Reason: domain.MustReason(domain.ReasonDisabled), At: at(5)}},
		{name: "MarkLost fails with execution.lost, naming the worker whose lease ran out", given: running,
			when: domain.MarkLost{RunID: "run-1", Epoch: 1, At: at(5)},
			then: domain.RunFailed{RunRef: r1, StartedAt: ptr(at(1)), Epoch: 1, Reason: domain.Reason{Code: domain.ReasonExecutionLost,
				Class: domain.ClassExecutionInterrupted, Message: domain.MustReason(domain.ReasonExecutionLost).Message}, WorkerID: "worker-1", At: at(5)}},
		{name: "Cancel a queued run", given: queued,
			when: domain.Cancel{RunID: "run-1", ActorID: "user-9", At: at(5)},
			then: domain.RunCancelled{RunRef: r1, StartedAt: nil, ActorID: "user-9", WasRunning: false, Reason: domain.Reason{
				Code: domain.ReasonCancelled, Class: domain.ClassCancelled, Message: domain.MustReason(domain.ReasonCancelled).Message}, At: at(5)}},
		{name: "Cancel a running run", given: running,
			when: domain.Cancel{RunID: "run-1", ActorID: "user-9", At: at(5)},
			then: domain.RunCancelled{RunRef: r1, StartedAt: ptr(at(1)), ActorID: "user-9", WasRunning: true,
				Reason: domain.MustReason(domain.ReasonCancelled), At: at(5)}},

		{name: "MarkFailed with a reason outside the catalog", given: running,
			when: domain.MarkFailed{RunID: "run-1", Epoch: 1, Reason: "provider.exploded", At: at(5)}, err: domain.ErrInvalidCommand},
		{name: "MarkFailed without a reason", given: running,
			when: domain.MarkFailed{RunID: "run-1", Epoch: 1, At: at(5)}, err: domain.ErrInvalidCommand},
	}
	for _, epoch := range []int64{0, 2, -1} {
		scenarios = append(scenarios,
			scenario{name: fmt.Sprintf("MarkSucceeded at stale epoch %d", epoch), given: running,
				when: domain.MarkSucceeded{RunID: "run-1", Epoch: epoch}, err: domain.ErrStaleEpoch},
			scenario{name: fmt.Sprintf("MarkFailed at stale epoch %d", epoch), given: running,
				when: domain.MarkFailed{RunID: "run-1", Epoch: epoch, Reason: domain.ReasonThrottled}, err: domain.ErrStaleEpoch},
			scenario{name: fmt.Sprintf("MarkLost at stale epoch %d", epoch), given: running,
				when: domain.MarkLost{RunID: "run-1", Epoch: epoch}, err: domain.ErrStaleEpoch},
		)
	}
	scenarios = append(scenarios,
		scenario{name: "MarkSucceeded on a queued run", given: queued,
			when: domain.MarkSucceeded{RunID: "run-1", Epoch: 0}, err: domain.ErrRunNotStarted},
		scenario{name: "MarkFailed on a queued run", given: queued,
			when: domain.MarkFailed{RunID: "run-1", Epoch: 0, Reason: domain.ReasonThrottled}, err: domain.ErrRunNotStarted},
		scenario{name: "MarkLost on a queued run", given: queued,
			when: domain.MarkLost{RunID: "run-1", Epoch: 0}, err: domain.ErrRunNotStarted},
	)
	unknownOrFinished := map[string][]domain.Event{"unknown (empty scope)": nil, "unknown (other run holds the scope)": running}
	for name, given := range finished {
		unknownOrFinished[name] = given
	}
	for name, given := range unknownOrFinished {
		id := "run-1"
		if name == "unknown (other run holds the scope)" {
			id = "run-x"
		}
		scenarios = append(scenarios,
			scenario{name: "MarkStarted " + name, given: given, when: domain.MarkStarted{RunID: id}, err: domain.ErrRunNotActive},
			scenario{name: "MarkSucceeded " + name, given: given, when: domain.MarkSucceeded{RunID: id, Epoch: 1}, err: domain.ErrRunNotActive},
			scenario{name: "MarkFailed " + name, given: given,
				when: domain.MarkFailed{RunID: id, Epoch: 1, Reason: domain.ReasonThrottled}, err: domain.ErrRunNotActive},
			scenario{name: "MarkLost " + name, given: given, when: domain.MarkLost{RunID: id, Epoch: 1}, err: domain.ErrRunNotActive},
			scenario{name: "Cancel " + name, given: given, when: domain.Cancel{RunID: id, ActorID: actorID}, err: domain.ErrRunNotActive},
		)
	}
	runScenarios(t, scenarios)
}

// Finishing a run frees its scope: Evolve leaves no active run and the
// next start is accepted.
func TestFinishingFreesTheScope(t *testing.T) {
	running := fold(accepted("run-1", inventory), started("run-1", inventory))
	queued := fold(accepted("run-1", inventory))
	cases := []struct {
		name  string
		state domain.ScopeState
		cmd   domain.Command
	}{
		{"succeeded", running, domain.MarkSucceeded{RunID: "run-1", Epoch: 1}},
		{"failed", running, domain.MarkFailed{RunID: "run-1", Epoch: 1, Reason: domain.ReasonCredentialsRejected}},
		{"lost", running, domain.MarkLost{RunID: "run-1", Epoch: 1}},
		{"cancelled running", running, domain.Cancel{RunID: "run-1", ActorID: actorID}},
		{"cancelled queued", queued, domain.Cancel{RunID: "run-1", ActorID: actorID}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := decide(t, c.state, c.cmd, domain.Facts{})
			if err != nil {
				t.Fatal(err)
			}
			after := domain.Evolve(c.state, e)
			if after.Active != nil {
				t.Fatalf("scope still held by %+v", after.Active)
			}
			next, err := decide(t, after, start("run-2", inventory), domain.Facts{})
			if err != nil {
				t.Fatal(err)
			}
			if acc, ok := next.(domain.StartAccepted); !ok || acc.RunID != "run-2" {
				t.Fatalf("next start: %#v, want accepted run-2", next)
			}
		})
	}
}

func TestEvolveIgnoresOtherRuns(t *testing.T) {
	running := fold(accepted("run-1", inventory), started("run-1", inventory))
	other := ref("run-x", inventory)
	for _, e := range []domain.Event{
		domain.RunStarted{RunRef: other, Epoch: 1},
		domain.RunSucceeded{RunRef: other, Epoch: 1},
		domain.RunFailed{RunRef: other, Epoch: 1, Reason: domain.MustReason(domain.ReasonThrottled)},
		domain.RunCancelled{RunRef: other, Reason: domain.MustReason(domain.ReasonCancelled)},
		blocked("run-y", compliance, domain.ReasonDisabled),
		domain.StartDeduped{RunID: "run-1", StartInfo: inventory},
		domain.StartScopeBusy{RunID: "run-1", ActiveType: domain.OpInventorySync, StartInfo: compliance},
		domain.ProviderConnectionEnabledChanged{ConnectionID: connID, TenantID: tenantID},
	} {
		if got := domain.Evolve(running, e); !reflect.DeepEqual(got, running) {
			t.Errorf("Evolve(%s) changed the holder: %+v", e.EventType(), got.Active)
		}
	}
	// RunStarted for the holder records epoch and start time.
	if a := running.Active; a.Status != domain.StatusRunning || a.Epoch != 1 || a.StartedAt == nil || !a.StartedAt.Equal(at(1)) {
		t.Fatalf("running holder %+v", a)
	}
}

// Ended builds a terminal event's run from the event alone: the same run
// as folding the accepted run through every lifecycle event.
func TestEnded(t *testing.T) {
	cases := []struct {
		name      string
		start     domain.StartInfo
		lifecycle []domain.Event // the last one is the terminal event
		status    domain.RunStatus
		startedAt *time.Time
		reason    domain.ReasonCode
	}{
		{"succeeded", inventory,
			[]domain.Event{started("run-1", inventory), succeeded("run-1", inventory)},
			domain.StatusSucceeded, ptr(at(1)), ""},
		{"failed with a reason", restore1,
			[]domain.Event{started("run-1", restore1), failed("run-1", restore1, domain.ReasonThrottled)},
			domain.StatusFailed, ptr(at(1)), domain.ReasonThrottled},
		{"cancelled while queued", compliance,
			[]domain.Event{cancelled("run-1", compliance, false)},
			domain.StatusCancelled, nil, domain.ReasonCancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, ok := domain.RunOf(accepted("run-1", c.start))
			if !ok {
				t.Fatal("RunOf(accepted) created no run")
			}
			for _, e := range c.lifecycle {
				want = want.Apply(e.(domain.RunEvent))
			}
			last := c.lifecycle[len(c.lifecycle)-1].(domain.RunEvent)
			got, ok := domain.Ended(last)
			if !ok {
				t.Fatalf("Ended(%s) ok=false", last.EventType())
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Ended(%s)\n  %#v\nfolded\n  %#v", last.EventType(), got, want)
			}
			// The folded run is the one expected, so the comparison is not vacuous.
			if want.ID != "run-1" || want.Status != c.status || !want.CreatedAt.Equal(at(0)) ||
				!reflect.DeepEqual(want.StartedAt, c.startedAt) || want.FinishedAt == nil || !want.FinishedAt.Equal(at(2)) {
				t.Fatalf("folded run %+v: want %s, created %v, started %v, finished %v", want, c.status, at(0), c.startedAt, at(2))
			}
			if (c.reason == "") != (want.Reason == nil) || (want.Reason != nil && want.Reason.Code != c.reason) {
				t.Fatalf("folded run reason %+v, want %q", want.Reason, c.reason)
			}
		})
	}
	t.Run("RunStarted is not terminal", func(t *testing.T) {
		got, ok := domain.Ended(started("run-1", inventory).(domain.RunEvent))
		if ok || !reflect.DeepEqual(got, domain.Run{}) {
			t.Fatalf("Ended(RunStarted) = %+v, %v; want zero run, false", got, ok)
		}
	})
}

func TestOutcomeOf(t *testing.T) {
	want := map[string]domain.Outcome{
		"StartAccepted": domain.OutcomeAccepted, "StartDeduped": domain.OutcomeDeduped,
		"StartScopeBusy": domain.OutcomeScopeBusy, "StartBlocked": domain.OutcomeBlocked,
	}
	for _, e := range domain.ScopeEvents() {
		if got := domain.OutcomeOf(e); got != want[e.EventType()] {
			t.Errorf("OutcomeOf(%s) = %q, want %q", e.EventType(), got, want[e.EventType()])
		}
	}
}

// TestDeadlines: an accepted run carries claim_by and its maximum
// duration; a claim sets finish_by from the database's clock; a run past
// claim_by that no executor claimed ends not picked up, one past finish_by
// ends timed out; both free the scope, and neither ends a run early, twice
// or in the wrong state.
func TestDeadlines(t *testing.T) {
	claimBy, finishBy := at(15), at(65)
	deadlined := domain.StartAccepted{RunID: "run-1", StartInfo: inventory, ClaimBy: ptr(claimBy), MaxDurationS: 3600, At: at(0)}
	queued := []domain.Event{deadlined}
	startedAt := domain.RunStarted{RunRef: ref("run-1", inventory), Epoch: 1, WorkerID: "worker-1", FinishBy: ptr(finishBy), At: at(1)}
	running := []domain.Event{deadlined, startedAt}
	r1 := ref("run-1", inventory)
	runScenarios(t, []scenario{
		{name: "an accepted start carries claim_by and the run's maximum duration",
			when: domain.StartCommand{RunID: "run-1", Start: inventory, ClaimBy: claimBy, MaxDuration: time.Hour, At: at(0)},
			then: deadlined},
		{name: "a claim sets finish_by from the database's clock", given: queued,
			when: domain.MarkStarted{RunID: "run-1", WorkerID: "worker-1", Now: at(5), At: at(1)},
			then: domain.RunStarted{RunRef: r1, Epoch: 1, WorkerID: "worker-1", FinishBy: ptr(at(65)), At: at(1)}},
		{name: "a run accepted without deadlines gets no finish_by", given: []domain.Event{accepted("run-1", inventory)},
			when: domain.MarkStarted{RunID: "run-1", WorkerID: "worker-1", Now: at(5), At: at(1)},
			then: domain.RunStarted{RunRef: r1, Epoch: 1, WorkerID: "worker-1", At: at(1)}},
		{name: "not claimed by claim_by: not picked up", given: queued,
			when: domain.ExpireClaim{RunID: "run-1", Now: claimBy, At: at(16)},
			then: domain.RunFailed{RunRef: r1, Reason: domain.MustReason(domain.ReasonNotPickedUp), At: at(16)}},
		{name: "claim_by not reached", given: queued,
			when: domain.ExpireClaim{RunID: "run-1", Now: claimBy.Add(-time.Microsecond), At: at(16)}, err: domain.ErrDeadlineNotReached},
		{name: "claimed just before claim_by: not ended", given: running,
			when: domain.ExpireClaim{RunID: "run-1", Now: at(20), At: at(20)}, err: domain.ErrRunAlreadyStarted},
		{name: "a queued run without deadlines is never expired", given: []domain.Event{accepted("run-1", inventory)},
			when: domain.ExpireClaim{RunID: "run-1", Now: at(1000), At: at(1000)}, err: domain.ErrDeadlineNotReached},
		{name: "running past finish_by: timed out, naming its executor", given: running,
			when: domain.ExpireRun{RunID: "run-1", Now: finishBy, At: at(66)},
			then: domain.RunFailed{RunRef: r1, StartedAt: ptr(at(1)), Epoch: 1, Reason: domain.MustReason(domain.ReasonTimedOut),
				WorkerID: "worker-1", At: at(66)}},
		{name: "finish_by not reached", given: running,
			when: domain.ExpireRun{RunID: "run-1", Now: at(64), At: at(64)}, err: domain.ErrDeadlineNotReached},
		{name: "a queued run does not time out", given: queued,
			when: domain.ExpireRun{RunID: "run-1", Now: at(1000), At: at(1000)}, err: domain.ErrRunNotStarted},
		{name: "a run that ended is not expired again", given: append(running, succeeded("run-1", inventory)),
			when: domain.ExpireRun{RunID: "run-1", Now: at(1000), At: at(1000)}, err: domain.ErrRunNotActive},
		{name: "a claim that expired is not expired again",
			given: []domain.Event{deadlined, domain.RunFailed{RunRef: r1, Reason: domain.MustReason(domain.ReasonNotPickedUp), At: at(16)}},
			when:  domain.ExpireClaim{RunID: "run-1", Now: at(1000), At: at(1000)}, err: domain.ErrRunNotActive},
	})
	// The run shows its deadlines as they are, and an expiry frees the scope.
	if got := fold(running...).Active.Run().Deadlines; got == nil || !got.ClaimBy.Equal(claimBy) || got.FinishBy == nil || !got.FinishBy.Equal(finishBy) {
		t.Errorf("the running run's deadlines: %+v", got)
	}
	expired := domain.RunFailed{RunRef: r1, Reason: domain.MustReason(domain.ReasonNotPickedUp), At: at(16)}
	if s := fold(deadlined, expired); s.Active != nil {
		t.Errorf("a run that was not picked up still holds its scope: %+v", s.Active)
	}
}

// TestNoExecutorSaysWhenOneWasSeen: a start blocked because no executor of
// the provider is live says when one was last seen, or that none ever was.
func TestNoExecutorSaysWhenOneWasSeen(t *testing.T) {
	base := domain.MustReason(domain.ReasonNoExecutor)
	cmd := domain.StartCommand{RunID: "run-1", Start: inventory, At: at(0)}
	for _, c := range []struct {
		name string
		seen *time.Time
		says string
	}{
		{"never seen", nil, `No executor of provider "microsoft" has ever called in.`},
		{"seen before", ptr(at(-90)), `An executor of provider "microsoft" was last seen at 2025-03-01T07:30:00Z.`},
	} {
		e, err := domain.Decide(domain.ScopeState{}, cmd, domain.Facts{Blocked: domain.ReasonNoExecutor, ExecutorSeen: c.seen})
		if err != nil {
			t.Fatal(err)
		}
		b, ok := e.(domain.StartBlocked)
		if !ok || b.Reason.Code != domain.ReasonNoExecutor || b.Reason.Message != base.Message+" "+c.says {
			t.Errorf("%s: %#v", c.name, e)
		}
	}
}
