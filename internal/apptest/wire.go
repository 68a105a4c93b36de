package apptest

import (
	"encoding/json"
	"mime"
	"testing"
	"time"

	"github.com/opsgate/opsgate/clients/go/opsgate"
)

// The wire shapes of the API (contract section 5 and the executor and
// onboarding endpoints) as a client decodes them: the black-box HTTP tests
// of every package decode answers into these, never into the server's own
// types, so that a renamed or dropped field fails a test. Most are the
// generated client's (clients/go/opsgate); every answer is also checked
// against the strict document.
type (
	Reason        = opsgate.Reason
	ConnectionRef = opsgate.ConnectionRef
	Run           = opsgate.Run
	Deadlines     = opsgate.Deadlines
	Links         = opsgate.Links
	NextStep      = opsgate.NextStep
	Message       = opsgate.Message
	StartResult   = opsgate.StartResult
	Attempt       = opsgate.Attempt
	BootstrapItem = opsgate.BootstrapItem
	ExecutorClaim = opsgate.Claim
)

// RunKeys are the keys of every run object.
var RunKeys = []string{"id", "tenant_id", "type", "canonical_type", "label", "status", "target", "provider_connection",
	"initiator_id", "surface", "created_at", "started_at", "finished_at", "reason", "deadlines", "rerun_of", "links"}

// OutcomeStatus is the HTTP status of each outcome of a start.
var OutcomeStatus = map[string]int{"accepted": 202, "deduped": 200, "scope_busy": 409, "blocked": 422}

// ExpectStart checks r is a StartResult with outcome, in the contract's
// shape (its status, every key, a reason exactly when not accepted, next
// steps when not accepted, a message, a complete run in the status the
// outcome implies), and returns it.
func (r Reply) ExpectStart(t testing.TB, outcome string) StartResult {
	t.Helper()
	if r.Status != OutcomeStatus[outcome] {
		t.Fatalf("%s: want %s (%d)", r, outcome, OutcomeStatus[outcome])
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		t.Errorf("%s: content type %q", r, r.Header.Get("Content-Type"))
	}
	raw := r.Object(t)
	for _, k := range []string{"outcome", "run", "reason", "next_steps", "message"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("%s: StartResult lacks %q", r, k)
		}
	}
	rawRun, _ := raw["run"].(map[string]any)
	for _, k := range RunKeys {
		if _, ok := rawRun[k]; !ok {
			t.Errorf("%s: run lacks %q", r, k)
		}
	}
	var res StartResult
	r.Decode(t, &res)
	if string(res.Outcome) != outcome {
		t.Fatalf("%s: outcome %q, want %q", r, res.Outcome, outcome)
	}
	if (res.Reason == nil) != (outcome == "accepted") {
		t.Errorf("%s: reason must be null exactly for accepted", r)
	}
	if res.Reason != nil && (res.Reason.Code == "" || res.Reason.Class == "" || res.Reason.Message == "") {
		t.Errorf("%s: reason lacks code, class or message", r)
	}
	if outcome != "accepted" && len(res.NextSteps) == 0 {
		t.Errorf("%s: %s needs at least one next step", r, outcome)
	}
	for _, s := range res.NextSteps {
		if s.Label == "" || s.Action == "" {
			t.Errorf("%s: next step without label or action: %+v", r, s)
		}
	}
	m := res.Message
	if m.Title == "" || m.Body == "" {
		t.Errorf("%s: message lacks title or body", r)
	}
	switch m.Tone {
	case "success", "info", "warning", "danger":
	default:
		t.Errorf("%s: tone %q", r, m.Tone)
	}
	run := res.Run
	if run.ID == "" || run.TenantID == "" || run.Type == "" || run.CanonicalType == "" || run.Label == "" ||
		run.InitiatorID == "" || run.Surface == "" || run.CreatedAt.IsZero() {
		t.Errorf("%s: run lacks a field", r)
	}
	if run.Links.Self != "/api/v1/operations/"+run.ID {
		t.Errorf("%s: links.self %q", r, run.Links.Self)
	}
	switch outcome {
	case "blocked":
		if run.Status != "blocked" || run.Reason == nil || res.Reason == nil || *run.Reason != *res.Reason {
			t.Errorf("%s: a blocked start answers its blocked run with the same reason", r)
		}
		if run.FinishedAt == nil && run.StartedAt != nil {
			t.Errorf("%s: blocked run was started", r)
		}
	case "accepted":
		if run.Status != "queued" || run.StartedAt != nil || run.FinishedAt != nil || run.Reason != nil {
			t.Errorf("%s: an accepted run is queued, unstarted, with no reason", r)
		}
	default:
		if run.Status != "queued" && run.Status != "running" {
			t.Errorf("%s: %s must point at an active run", r, outcome)
		}
	}
	return res
}

// Session is an onboarding session.
type Session struct {
	ID                   string  `json:"id"`
	TenantID             string  `json:"tenant_id"`
	ProviderConnectionID *string `json:"provider_connection_id"`
	Status               string  `json:"status"`
	Steps                struct {
		Verification struct {
			Status   string    `json:"status"`
			Attempts []Attempt `json:"attempts"`
		} `json:"verification"`
		Bootstrap struct {
			Status      string          `json:"status"`
			InitiatorID *string         `json:"initiator_id"`
			Items       []BootstrapItem `json:"items"`
			Pending     []string        `json:"pending"`
		} `json:"bootstrap"`
	} `json:"steps"`
}

// String is the session as JSON, for failure messages.
func (s Session) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Admitted counts the session's admitted bootstrap items.
func (s Session) Admitted() int {
	n := 0
	for _, it := range s.Steps.Bootstrap.Items {
		if it.Status == "admitted" {
			n++
		}
	}
	return n
}

// AuditEvent is an event of the audit trail or of a run's history.
type AuditEvent struct {
	Position int64           `json:"position"`
	Stream   string          `json:"stream"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata struct {
		Actor         string `json:"actor"`
		Via           string `json:"via"`
		CorrelationID string `json:"correlation_id"`
		RequestID     string `json:"request_id"`
	} `json:"metadata"`
}

// Executor is an executor as the admin API shows it, with its first token
// when it was just registered.
type Executor struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Providers      []string   `json:"providers"`
	OperationTypes []string   `json:"operation_types"`
	LastSeenAt     *time.Time `json:"last_seen_at"`
	Live           bool       `json:"live"`
	RevokedAt      *time.Time `json:"revoked_at"`
	Token          string     `json:"token"`
}
