package domain

import (
	"encoding/json"
	"time"
)

// Event is a fact recorded in the event store. EventType is its stored
// name: a constant, never derived from the Go type's name.
type Event interface {
	EventType() string
}

// StartInfo is what a start asked for, carried by every start event so
// that readers never look anything up "as of then".
type StartInfo struct {
	TenantID      string         `json:"tenant_id"`
	ScopeID       ScopeID        `json:"scope_id"`
	Type          string         `json:"type"`
	CanonicalType string         `json:"canonical_type"`
	Label         string         `json:"label"`
	Surface       string         `json:"surface"`
	InitiatorID   string         `json:"initiator_id"`
	Target        string         `json:"target,omitempty"`
	Connection    *ConnectionRef `json:"provider_connection,omitempty"`
	// RerunOf is the run a rerun starts again.
	RerunOf string `json:"rerun_of,omitempty"`
	// InitiatedVia is the integration the start came through, on its
	// initiator's behalf ("integration:<id>"; the event's metadata says
	// so too, as via).
	InitiatedVia string `json:"initiated_via,omitempty"`
	// TraceContext is the W3C trace context the start came with, kept with
	// the run and handed to its executor (contract section 16).
	TraceContext *TraceContext `json:"trace_context,omitempty"`
}

// TraceContext is a W3C trace context: traceparent and tracestate.
type TraceContext struct {
	Traceparent string `json:"traceparent"`
	Tracestate  string `json:"tracestate,omitempty"`
}

// run returns the run a start creates.
func (s StartInfo) run(id string, status RunStatus, at time.Time) Run {
	r := Run{
		ID: id, TenantID: s.TenantID, Type: s.Type, CanonicalType: s.CanonicalType, Label: s.Label,
		Status: status, ProviderConnection: s.Connection, InitiatorID: s.InitiatorID,
		Surface: s.Surface, CreatedAt: at, Links: RunLinks{Self: RunHref(id)},
	}
	if s.Target != "" {
		t := s.Target
		r.Target = &t
	}
	if s.RerunOf != "" {
		o := s.RerunOf
		r.RerunOf = &o
	}
	return r
}

// StartAccepted records that a new run was queued with its connection pinned.
type StartAccepted struct {
	RunID string `json:"run_id"`
	StartInfo
	// ClaimBy is when the run ends not picked up unless claimed;
	// MaxDurationS how long it may run once claimed (zero for runs
	// accepted before deadlines existed: none).
	ClaimBy      *time.Time `json:"claim_by,omitempty"`
	MaxDurationS int64      `json:"max_duration_s,omitempty"`
	At           time.Time  `json:"at"`
}

// StartDeduped records that an equivalent run (RunID) was already active.
type StartDeduped struct {
	RunID string `json:"run_id"`
	StartInfo
	At time.Time `json:"at"`
}

// StartScopeBusy records that a different operation (RunID) held the scope.
type StartScopeBusy struct {
	RunID      string `json:"run_id"`
	ActiveType string `json:"active_type"`
	StartInfo
	At time.Time `json:"at"`
}

// StartBlocked records that a prerequisite was missing; RunID is the blocked run.
type StartBlocked struct {
	RunID string `json:"run_id"`
	StartInfo
	Reason Reason    `json:"reason"`
	At     time.Time `json:"at"`
}

// RunRef names a run and where it lives, and carries what its start asked
// for and when it was accepted, so that readers of a lifecycle event (a
// notification of the outcome, say) need nothing from earlier events.
type RunRef struct {
	RunID     string    `json:"run_id"`
	ScopeID   ScopeID   `json:"scope_id"`
	TenantID  string    `json:"tenant_id"`
	Start     StartInfo `json:"start"`
	CreatedAt time.Time `json:"created_at"`
}

// Ref returns r itself; it makes every lifecycle event a RunEvent.
func (r RunRef) Ref() RunRef { return r }

// RunEvent is a lifecycle event of one run.
type RunEvent interface {
	Event
	Ref() RunRef
}

// RunStarted records that a worker began the run; Epoch is its fencing token.
type RunStarted struct {
	RunRef
	Epoch    int64  `json:"epoch"`
	WorkerID string `json:"worker_id"`
	// FinishBy is when the run ends timed out unless it finished.
	FinishBy *time.Time `json:"finish_by,omitempty"`
	At       time.Time  `json:"at"`
}

// RunSucceeded records that the run finished well; the scope is free. Summary is what
// its executor reported (a JSON object), Changes what the run changed on
// its connection's readiness.
type RunSucceeded struct {
	RunRef
	StartedAt *time.Time       `json:"started_at"`
	Epoch     int64            `json:"epoch"`
	Summary   json.RawMessage  `json:"summary,omitempty"`
	Changes   *ReadinessChange `json:"connection_changes,omitempty"`
	At        time.Time        `json:"at"`
}

// RunFailed records that the run failed (or its worker was lost); the scope is free.
type RunFailed struct {
	RunRef
	StartedAt *time.Time       `json:"started_at"`
	Epoch     int64            `json:"epoch"`
	Reason    Reason           `json:"reason"`
	Summary   json.RawMessage  `json:"summary,omitempty"`
	Changes   *ReadinessChange `json:"connection_changes,omitempty"`
	// WorkerID, on a run ended execution.lost, is the executor or built-in
	// worker whose lease ran out (or was revoked).
	WorkerID string    `json:"worker_id,omitempty"`
	At       time.Time `json:"at"`
}

// RunCancelled records that an operator cancelled the run; the scope is free.
type RunCancelled struct {
	RunRef
	StartedAt  *time.Time `json:"started_at"`
	ActorID    string     `json:"actor_id"`
	WasRunning bool       `json:"was_running"`
	Reason     Reason     `json:"reason"`
	At         time.Time  `json:"at"`
}

// Ended returns the run as a terminal lifecycle event leaves it, built
// from the event alone.
func Ended(e RunEvent) (Run, bool) {
	var r Run
	var started *time.Time
	switch e := e.(type) {
	case RunSucceeded:
		started = e.StartedAt
	case RunFailed:
		started = e.StartedAt
	case RunCancelled:
		started = e.StartedAt
	default:
		return Run{}, false
	}
	ref := e.Ref()
	r = ref.Start.run(ref.RunID, StatusQueued, ref.CreatedAt)
	r.StartedAt = started
	return r.Apply(e), true
}

func (StartAccepted) EventType() string  { return "StartAccepted" }
func (StartDeduped) EventType() string   { return "StartDeduped" }
func (StartScopeBusy) EventType() string { return "StartScopeBusy" }
func (StartBlocked) EventType() string   { return "StartBlocked" }
func (RunStarted) EventType() string     { return "RunStarted" }
func (RunSucceeded) EventType() string   { return "RunSucceeded" }
func (RunFailed) EventType() string      { return "RunFailed" }
func (RunCancelled) EventType() string   { return "RunCancelled" }

// OutcomeOf returns the outcome a start event records, "" for other events.
func OutcomeOf(e Event) Outcome {
	switch e.(type) {
	case StartAccepted:
		return OutcomeAccepted
	case StartDeduped:
		return OutcomeDeduped
	case StartScopeBusy:
		return OutcomeScopeBusy
	case StartBlocked:
		return OutcomeBlocked
	}
	return ""
}

// ScopeEvents lists a sample of every event of the ProtectedScope stream.
func ScopeEvents() []Event {
	return []Event{StartAccepted{}, StartDeduped{}, StartScopeBusy{}, StartBlocked{},
		RunStarted{}, RunSucceeded{}, RunFailed{}, RunCancelled{}}
}
