// Package onboarding runs onboarding sessions: a verification step and a
// bootstrap step that admits the selected operations one at a time. Every
// start goes through the gate; a process manager reacting to run events
// starts the next pending operation when one succeeds, recording its
// progress as events in the same transaction as the next decision.
package onboarding

import (
	"time"

	"github.com/opsgate/opsgate/domain"
)

// Session is an onboarding session as the API shows it.
type Session struct {
	ID                   string    `json:"id"`
	TenantID             string    `json:"tenant_id"`
	ProviderConnectionID *string   `json:"provider_connection_id"`
	CreatedBy            string    `json:"created_by"`
	CreatedAt            time.Time `json:"created_at"`
	Status               string    `json:"status"`
	Steps                Steps     `json:"steps"`
}

// Session statuses.
const (
	StatusOpen           = "open"
	StatusBootstrapping  = "bootstrapping"
	StatusAttention      = "attention_needed"
	StatusCompleted      = "completed"
	BootstrapNotStarted  = "not_started"
	BootstrapRunning     = "running"
	BootstrapWaiting     = "waiting"
	BootstrapCompleted   = "completed"
	ItemPending          = "pending"
	ItemAdmitted         = "admitted"
	VerificationNotRun   = "not_run"
	VerificationAccepted = "accepted"
)

// Steps are the two steps of a session.
type Steps struct {
	Verification VerificationStep `json:"verification"`
	Bootstrap    BootstrapStep    `json:"bootstrap"`
}

// Attempt is one start that went through the gate.
type Attempt struct {
	RunID   string          `json:"run_id"`
	Outcome domain.Outcome  `json:"outcome"`
	Reason  *domain.Reason  `json:"reason"`
	At      time.Time       `json:"at"`
	Links   domain.RunLinks `json:"links"`
}

// VerificationStep is the provider access check of the session.
type VerificationStep struct {
	// Status is not_run or the outcome of the latest attempt.
	Status   string    `json:"status"`
	Attempts []Attempt `json:"attempts"`
}

// BootstrapStep is the sequential admission of the selected operations.
type BootstrapStep struct {
	Status      string   `json:"status"`
	InitiatorID *string  `json:"initiator_id"`
	Items       []Item   `json:"items"`
	Pending     []string `json:"pending"`
}

// Item is one selected operation of the bootstrap.
type Item struct {
	Index         int    `json:"index"`
	Type          string `json:"type"`
	CanonicalType string `json:"canonical_type"`
	Label         string `json:"label"`
	// Status is pending, admitted (its run is queued or running) or
	// succeeded. An item whose run failed or was cancelled is pending
	// again, with that run's status and reason shown, until continue
	// retries it.
	Status        string            `json:"status"`
	RunID         *string           `json:"run_id"`
	LastOutcome   *domain.Outcome   `json:"last_outcome"`
	LastRunStatus *domain.RunStatus `json:"last_run_status"`
	LastReason    *domain.Reason    `json:"last_reason"`
	Attempts      []Attempt         `json:"attempts"`
}

// active returns the index of the admitted item, or -1.
func (b *BootstrapStep) active() int {
	for i, it := range b.Items {
		if it.Status == ItemAdmitted {
			return i
		}
	}
	return -1
}

// nextPending returns the index of the first pending item, or -1.
func (b *BootstrapStep) nextPending() int {
	for i, it := range b.Items {
		if it.Status == ItemPending {
			return i
		}
	}
	return -1
}

// attempted records a start of item i through the gate.
func (s *Session) attempted(i int, res domain.StartResult, at time.Time) {
	it := &s.Steps.Bootstrap.Items[i]
	a := Attempt{RunID: res.Run.ID, Outcome: res.Outcome, Reason: res.Reason, At: at, Links: res.Run.Links}
	it.Attempts = append(it.Attempts, a)
	outcome := res.Outcome
	it.LastOutcome, it.LastReason = &outcome, res.Reason
	if res.Outcome == domain.OutcomeAccepted {
		it.Status = ItemAdmitted
		id := res.Run.ID
		it.RunID = &id
		it.LastRunStatus = nil
	}
	s.refresh()
}

// finished records the end of item i's admitted run.
func (s *Session) finished(i int, status domain.RunStatus, reason *domain.Reason) {
	it := &s.Steps.Bootstrap.Items[i]
	it.LastRunStatus, it.LastReason = &status, reason
	it.Status = ItemPending
	if status == domain.StatusSucceeded {
		it.Status = string(domain.StatusSucceeded)
	}
	s.refresh()
}

// refresh derives the statuses and the pending list from the items.
func (s *Session) refresh() {
	b := &s.Steps.Bootstrap
	b.Pending = []string{}
	for _, it := range b.Items {
		if it.Status == ItemPending {
			b.Pending = append(b.Pending, it.Type)
		}
	}
	switch {
	case len(b.Items) == 0:
		b.Status = BootstrapNotStarted
	case b.active() >= 0:
		b.Status = BootstrapRunning
	case len(b.Pending) == 0:
		b.Status = BootstrapCompleted
	default:
		b.Status = BootstrapWaiting
	}
	switch b.Status {
	case BootstrapNotStarted:
		s.Status = StatusOpen
	case BootstrapRunning:
		s.Status = StatusBootstrapping
	case BootstrapWaiting:
		s.Status = StatusAttention
	case BootstrapCompleted:
		s.Status = StatusCompleted
	}
}
