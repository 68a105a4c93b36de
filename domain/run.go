package domain

import (
	"fmt"
	"time"
)

// RunStatus is the status of a run.
type RunStatus string

// Run statuses of contract section 2. Only queued and running hold a scope.
const (
	StatusBlocked   RunStatus = "blocked"
	StatusQueued    RunStatus = "queued"
	StatusRunning   RunStatus = "running"
	StatusSucceeded RunStatus = "succeeded"
	StatusFailed    RunStatus = "failed"
	StatusCancelled RunStatus = "cancelled"
)

// Active reports whether a run in status s holds its scope.
func (s RunStatus) Active() bool { return s == StatusQueued || s == StatusRunning }

// Terminal reports whether s is final.
func (s RunStatus) Terminal() bool { return !s.Active() }

// ParseRunStatus returns the status named s.
func ParseRunStatus(s string) (RunStatus, bool) {
	switch st := RunStatus(s); st {
	case StatusBlocked, StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCancelled:
		return st, true
	}
	return "", false
}

// Outcome is the answer to a start.
type Outcome string

// The four outcomes of contract section 2.
const (
	OutcomeAccepted  Outcome = "accepted"
	OutcomeDeduped   Outcome = "deduped"
	OutcomeScopeBusy Outcome = "scope_busy"
	OutcomeBlocked   Outcome = "blocked"
)

// ConnectionRef is a provider connection as pinned into a run.
type ConnectionRef struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	Provider    string `json:"provider"`
}

// Run is a run as every surface shows it.
type Run struct {
	ID                 string         `json:"id"`
	TenantID           string         `json:"tenant_id"`
	Type               string         `json:"type"`
	CanonicalType      string         `json:"canonical_type"`
	Label              string         `json:"label"`
	Status             RunStatus      `json:"status"`
	Target             *string        `json:"target"`
	ProviderConnection *ConnectionRef `json:"provider_connection"`
	InitiatorID        string         `json:"initiator_id"`
	Surface            string         `json:"surface"`
	CreatedAt          time.Time      `json:"created_at"`
	StartedAt          *time.Time     `json:"started_at"`
	FinishedAt         *time.Time     `json:"finished_at"`
	Reason             *Reason        `json:"reason"`
	Links              RunLinks       `json:"links"`
}

// RunLinks are the links of a run.
type RunLinks struct {
	Self string `json:"self"`
}

// RunHref is the monitoring address of run id.
func RunHref(id string) string { return "/api/v1/operations/" + id }

// Message is the presenter's wording of an outcome or a run.
type Message struct {
	Title string `json:"title"`
	Body  string `json:"body"`
	Tone  Tone   `json:"tone"`
}

// Tone tells a surface how to colour a message.
type Tone string

// Tones of contract section 5.
const (
	ToneSuccess Tone = "success"
	ToneInfo    Tone = "info"
	ToneWarning Tone = "warning"
	ToneDanger  Tone = "danger"
)

// StartResult is the answer to every start.
type StartResult struct {
	Outcome   Outcome    `json:"outcome"`
	Run       Run        `json:"run"`
	Reason    *Reason    `json:"reason"`
	NextSteps []NextStep `json:"next_steps"`
	Message   Message    `json:"message"`
}

// RunOf returns the run an accepted or blocked start created, and ok=false
// for events that create no run.
func RunOf(e Event) (Run, bool) {
	switch e := e.(type) {
	case StartAccepted:
		return e.StartInfo.run(e.RunID, StatusQueued, e.At), true
	case StartBlocked:
		r := e.StartInfo.run(e.RunID, StatusBlocked, e.At)
		reason := e.Reason
		r.Reason = &reason
		r.FinishedAt = &r.CreatedAt
		return r, true
	}
	return Run{}, false
}

// Apply returns run after its lifecycle event e.
func (r Run) Apply(e RunEvent) Run {
	switch e := e.(type) {
	case RunStarted:
		at := e.At
		r.Status, r.StartedAt = StatusRunning, &at
	case RunSucceeded:
		at := e.At
		r.Status, r.FinishedAt = StatusSucceeded, &at
	case RunFailed:
		at, reason := e.At, e.Reason
		r.Status, r.FinishedAt, r.Reason = StatusFailed, &at, &reason
	case RunCancelled:
		at, reason := e.At, e.Reason
		r.Status, r.FinishedAt, r.Reason = StatusCancelled, &at, &reason
	}
	return r
}

// CheckLease refuses a lease that does not outlast a heartbeat interval
// plus a margin of one more interval: with less, one slow heartbeat would
// let the reaper end a healthy run.
func CheckLease(lease, heartbeat time.Duration) error {
	if heartbeat <= 0 {
		return fmt.Errorf("heartbeat interval %s must be positive", heartbeat)
	}
	if lease < 2*heartbeat {
		return fmt.Errorf("lease %s is shorter than the heartbeat interval %s plus a margin of one more interval (%s at least)", lease, heartbeat, 2*heartbeat)
	}
	return nil
}
