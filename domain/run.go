package domain

import (
	"errors"
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
	// Deadlines are an accepted run's (nil for a blocked run).
	Deadlines *Deadlines `json:"deadlines"`
	// RerunOf is the run this one runs again (nil for a first start).
	RerunOf *string  `json:"rerun_of"`
	Links   RunLinks `json:"links"`
}

// Deadlines bound an accepted run: it ends failed with
// execution.not_picked_up if no executor claimed it by ClaimBy, and with
// execution.timed_out if it has not finished by FinishBy (set when it is
// claimed: the claim's time plus the run's maximum duration).
type Deadlines struct {
	ClaimBy  time.Time  `json:"claim_by"`
	FinishBy *time.Time `json:"finish_by"`
}

// Limits bound how long a run may wait to be claimed (QueueTTL) and run
// once claimed (MaxDuration); a start's limits leave a zero one to the
// deployment's default.
type Limits struct {
	QueueTTL    time.Duration
	MaxDuration time.Duration
}

// Or returns l with its zero limits taken from defaults.
func (l Limits) Or(defaults Limits) Limits {
	if l.QueueTTL == 0 {
		l.QueueTTL = defaults.QueueTTL
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = defaults.MaxDuration
	}
	return l
}

// MaxLimit is the longest QueueTTL or MaxDuration a start may ask for.
const MaxLimit = 24 * time.Hour

// ErrInvalidLimits means a start asked for limits out of range.
var ErrInvalidLimits = errors.New("invalid limits")

// Check refuses limits that are set but not whole seconds from 1 s to
// MaxLimit.
func (l Limits) Check() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"queue_ttl_s", l.QueueTTL}, {"max_duration_s", l.MaxDuration}} {
		if d.v != 0 && (d.v < time.Second || d.v > MaxLimit || d.v%time.Second != 0) {
			return fmt.Errorf("%s %v must be a whole number of seconds from 1 to %d: %w", d.name, d.v, int(MaxLimit/time.Second), ErrInvalidLimits)
		}
	}
	return nil
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
		r := e.StartInfo.run(e.RunID, StatusQueued, e.At)
		if e.ClaimBy != nil {
			r.Deadlines = &Deadlines{ClaimBy: *e.ClaimBy}
		}
		return r, true
	case StartBlocked:
		r := e.StartInfo.run(e.RunID, StatusBlocked, e.At)
		reason := e.Reason
		r.Reason = &reason
		r.FinishedAt = &r.CreatedAt
		return r, true
	}
	return Run{}, false
}

// StartOf returns what the start that created a run asked for, if e is
// such a decision (accepted or blocked).
func StartOf(e Event) (StartInfo, bool) {
	switch e := e.(type) {
	case StartAccepted:
		return e.StartInfo, true
	case StartBlocked:
		return e.StartInfo, true
	}
	return StartInfo{}, false
}

// Apply returns run after its lifecycle event e.
func (r Run) Apply(e RunEvent) Run {
	switch e := e.(type) {
	case RunStarted:
		at := e.At
		r.Status, r.StartedAt = StatusRunning, &at
		if r.Deadlines != nil && e.FinishBy != nil {
			d := *r.Deadlines
			d.FinishBy = e.FinishBy
			r.Deadlines = &d
		}
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
