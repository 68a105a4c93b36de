package domain_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/domain"
)

// vocabulary is the word of each outcome an operator reads in the title.
var vocabulary = map[domain.Outcome]string{
	domain.OutcomeAccepted:  "accepted",
	domain.OutcomeDeduped:   "deduped",
	domain.OutcomeScopeBusy: "scope busy",
	domain.OutcomeBlocked:   "blocked",
}

var tones = map[domain.Outcome]domain.Tone{
	domain.OutcomeAccepted:  domain.ToneSuccess,
	domain.OutcomeDeduped:   domain.ToneInfo,
	domain.OutcomeScopeBusy: domain.ToneWarning,
	domain.OutcomeBlocked:   domain.ToneDanger,
}

// presented decides cmd on state the way a surface does and presents the
// answer: the run is the new, the equivalent, the holding or the blocked run.
func presented(t *testing.T, state domain.ScopeState, cmd domain.StartCommand, f domain.Facts) (domain.StartResult, domain.Event) {
	t.Helper()
	e, err := decide(t, state, cmd, f)
	if err != nil {
		t.Fatal(err)
	}
	run, ok := domain.RunOf(e)
	if !ok {
		run = state.Active.Run()
	}
	return domain.PresentStart(cmd.Start.Label, domain.OutcomeOf(e), run), e
}

func href(s domain.NextStep) string {
	if s.Href == nil {
		return "<nil>"
	}
	return *s.Href
}

func checkStartResult(t *testing.T, res domain.StartResult, label string, outcome domain.Outcome, runID string) {
	t.Helper()
	if res.Outcome != outcome {
		t.Errorf("outcome %q, want %q", res.Outcome, outcome)
	}
	if res.Run.ID != runID {
		t.Errorf("run %q, want %q", res.Run.ID, runID)
	}
	title := res.Message.Title
	if !strings.Contains(title, label) {
		t.Errorf("title %q does not name the operation %q", title, label)
	}
	for o, word := range vocabulary {
		if got := strings.Contains(strings.ToLower(title), word); got != (o == outcome) {
			t.Errorf("title %q: contains %q = %v for outcome %s", title, word, got, outcome)
		}
	}
	if res.Message.Tone != tones[outcome] {
		t.Errorf("tone %q, want %q", res.Message.Tone, tones[outcome])
	}
	if res.Message.Body == "" {
		t.Error("empty body")
	}
	if (res.Reason == nil) != (outcome == domain.OutcomeAccepted) {
		t.Errorf("reason %+v for outcome %s", res.Reason, outcome)
	}
	if len(res.NextSteps) == 0 {
		t.Error("no next step")
	}
	for _, s := range res.NextSteps {
		if s.Label == "" || s.Action == "" || (s.Href != nil && strings.Contains(*s.Href, "{")) {
			t.Errorf("bad next step %+v", s)
		}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(raw, &shape); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"outcome", "run", "reason", "next_steps", "message"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("StartResult JSON lacks %q: %s", k, raw)
		}
	}
	if outcome == domain.OutcomeAccepted && string(shape["reason"]) != "null" {
		t.Errorf("accepted reason %s, want null", shape["reason"])
	}
}

func TestPresentAccepted(t *testing.T) {
	res, _ := presented(t, domain.ScopeState{}, start("run-2", inventory), domain.Facts{})
	checkStartResult(t, res, "Inventory sync", domain.OutcomeAccepted, "run-2")
	if res.Run.Status != domain.StatusQueued || res.Run.ProviderConnection == nil || res.Run.ProviderConnection.ID != connID {
		t.Errorf("accepted run %+v", res.Run)
	}
	if !strings.Contains(res.Message.Body, inventory.Connection.DisplayName) {
		t.Errorf("body %q does not name the pinned connection", res.Message.Body)
	}
	if href(res.NextSteps[0]) != "/api/v1/operations/run-2" {
		t.Errorf("next step %+v, want the new run", res.NextSteps[0])
	}
}

func TestPresentDeduped(t *testing.T) {
	for name, given := range map[string][]domain.Event{
		"queued":  {accepted("run-1", verifyTen)},
		"running": {accepted("run-1", verifyTen), started("run-1", verifyTen)},
	} {
		t.Run(name, func(t *testing.T) {
			res, _ := presented(t, fold(given...), start("run-2", checkConn), domain.Facts{})
			checkStartResult(t, res, "Provider connection check", domain.OutcomeDeduped, "run-1")
			if res.Reason.Code != domain.ReasonDeduped || res.Reason.Class != "deduped" {
				t.Errorf("reason %+v", res.Reason)
			}
			if !strings.Contains(res.Message.Title, name) && !strings.Contains(res.Message.Body, name) {
				t.Errorf("message %+v does not say the run is %s", res.Message, name)
			}
			if !strings.Contains(res.Message.Body, "run-1") {
				t.Errorf("body %q does not name the active run", res.Message.Body)
			}
			if href(res.NextSteps[0]) != "/api/v1/operations/run-1" {
				t.Errorf("next step %+v, want the active run", res.NextSteps[0])
			}
		})
	}
}

func TestPresentScopeBusy(t *testing.T) {
	for name, c := range map[string]struct {
		given []domain.Event
		when  domain.StartInfo
	}{
		"other type":   {[]domain.Event{accepted("run-1", inventory)}, compliance},
		"other target": {[]domain.Event{accepted("run-1", restore1), started("run-1", restore1)}, restore2},
	} {
		t.Run(name, func(t *testing.T) {
			res, _ := presented(t, fold(c.given...), start("run-2", c.when), domain.Facts{})
			// The title names what was asked for; the body names what holds the scope.
			checkStartResult(t, res, c.when.Label, domain.OutcomeScopeBusy, "run-1")
			if res.Reason.Code != domain.ReasonScopeBusy || res.Reason.Class != "scope_busy" {
				t.Errorf("reason %+v", res.Reason)
			}
			if !strings.Contains(res.Message.Body, c.given[0].(domain.StartAccepted).Label) || !strings.Contains(res.Message.Body, "run-1") {
				t.Errorf("body %q does not name the holding run", res.Message.Body)
			}
			if href(res.NextSteps[0]) != "/api/v1/operations/run-1" {
				t.Errorf("next step %+v, want the holding run", res.NextSteps[0])
			}
		})
	}
}

func TestPresentBlocked(t *testing.T) {
	wantHref := map[domain.ReasonCode]string{
		domain.ReasonMissingDefault:     "/api/v1/tenants/" + tenantID + "/provider-connections",
		domain.ReasonDisabled:           "/api/v1/provider-connections/" + connID,
		domain.ReasonConsentMissing:     "/api/v1/provider-connections/" + connID,
		domain.ReasonCredentialsInvalid: "/api/v1/provider-connections/" + connID,
		domain.ReasonPreviewRequired:    "/api/v1/restore-runs/rr-1/preview",
	}
	for _, b := range blockingReasons {
		t.Run(string(b.code), func(t *testing.T) {
			s := blockedStart(b.code)
			// An active run of the same type does not change a blocked answer.
			for _, given := range [][]domain.Event{nil, {accepted("run-1", s)}} {
				res, _ := presented(t, fold(given...), start("run-2", s), domain.Facts{Blocked: b.code})
				checkStartResult(t, res, s.Label, domain.OutcomeBlocked, "run-2")
				if res.Reason.Code != b.code || res.Reason.Class != b.class {
					t.Errorf("reason %+v, want %s/%s", res.Reason, b.code, b.class)
				}
				if res.Run.Status != domain.StatusBlocked || res.Run.Reason == nil || *res.Run.Reason != *res.Reason {
					t.Errorf("blocked run %+v", res.Run)
				}
				if !strings.Contains(res.Message.Body, res.Reason.Message) {
					t.Errorf("body %q does not say why", res.Message.Body)
				}
				if got := href(res.NextSteps[0]); got != wantHref[b.code] {
					t.Errorf("next step href %s, want %s", got, wantHref[b.code])
				}
			}
		})
	}
}

func TestPresentRunEveryStatus(t *testing.T) {
	base, _ := domain.RunOf(domain.StartAccepted{RunID: "run-1", StartInfo: inventory, At: t0})
	startedRun := base.Apply(domain.RunStarted{RunRef: ref("run-1", inventory), Epoch: 1, At: at(1)})
	blockedRun, _ := domain.RunOf(blocked("run-3", inventory, domain.ReasonConsentMissing))
	cases := []struct {
		run       domain.Run
		status    domain.RunStatus
		tone      domain.Tone
		reason    domain.ReasonCode
		firstHref string
	}{
		{base, domain.StatusQueued, domain.ToneInfo, "", "/api/v1/operations/run-1"},
		{startedRun, domain.StatusRunning, domain.ToneInfo, "", "/api/v1/operations/run-1"},
		{startedRun.Apply(succeeded("run-1", inventory).(domain.RunSucceeded)),
			domain.StatusSucceeded, domain.ToneSuccess, "", "/api/v1/operations/run-1"},
		{startedRun.Apply(failed("run-1", inventory, domain.ReasonCredentialsRejected).(domain.RunFailed)),
			domain.StatusFailed, domain.ToneDanger, domain.ReasonCredentialsRejected, "/api/v1/provider-connections/" + connID},
		{startedRun.Apply(failed("run-1", inventory, domain.ReasonExecutionLost).(domain.RunFailed)),
			domain.StatusFailed, domain.ToneDanger, domain.ReasonExecutionLost, "<nil>"},
		{startedRun.Apply(cancelled("run-1", inventory, true).(domain.RunCancelled)),
			domain.StatusCancelled, domain.ToneWarning, domain.ReasonCancelled, "<nil>"},
		{base.Apply(cancelled("run-1", inventory, false).(domain.RunCancelled)),
			domain.StatusCancelled, domain.ToneWarning, domain.ReasonCancelled, "<nil>"},
		{blockedRun, domain.StatusBlocked, domain.ToneDanger, domain.ReasonConsentMissing, "/api/v1/provider-connections/" + connID},
	}
	seen := map[domain.RunStatus]bool{}
	for _, c := range cases {
		t.Run(string(c.status)+" "+string(c.reason), func(t *testing.T) {
			seen[c.status] = true
			if c.run.Status != c.status {
				t.Fatalf("run status %s, want %s", c.run.Status, c.status)
			}
			msg, steps := domain.PresentRun(c.run)
			if !strings.Contains(msg.Title, "Inventory sync") || !strings.Contains(msg.Title, string(c.status)) {
				t.Errorf("title %q does not say operation and status", msg.Title)
			}
			if msg.Tone != c.tone {
				t.Errorf("tone %s, want %s", msg.Tone, c.tone)
			}
			if msg.Body == "" {
				t.Error("empty body")
			}
			if c.reason != "" {
				if c.run.Reason == nil || c.run.Reason.Code != c.reason {
					t.Fatalf("run reason %+v, want %s", c.run.Reason, c.reason)
				}
				if !strings.Contains(msg.Body, c.run.Reason.Message) {
					t.Errorf("body %q does not say why", msg.Body)
				}
			}
			if c.status.Terminal() && c.status != domain.StatusBlocked && c.run.FinishedAt == nil {
				t.Error("finished run without finished_at")
			}
			if len(steps) == 0 {
				t.Fatal("no next step")
			}
			if got := href(steps[0]); got != c.firstHref {
				t.Errorf("first next step href %s, want %s", got, c.firstHref)
			}
		})
	}
	for _, s := range []domain.RunStatus{domain.StatusBlocked, domain.StatusQueued, domain.StatusRunning,
		domain.StatusSucceeded, domain.StatusFailed, domain.StatusCancelled} {
		if !seen[s] {
			t.Errorf("status %s not presented", s)
		}
	}
	// A status the presenter does not know does not panic.
	unknown := base
	unknown.Status = "paused"
	if msg, _ := domain.PresentRun(unknown); !strings.Contains(msg.Title, "Inventory sync") {
		t.Errorf("unknown status title %q", msg.Title)
	}
	// A run without a connection is worded, not crashed on.
	none, _ := domain.RunOf(blocked("run-4", noConn, domain.ReasonMissingDefault))
	if msg, steps := domain.PresentRun(none); msg.Body == "" || len(steps) == 0 ||
		href(steps[0]) != "/api/v1/tenants/"+tenantID+"/provider-connections" {
		t.Errorf("missing default run: %+v %+v", msg, steps)
	}
}
