// Package onboarding runs onboarding sessions: a verification step and a
// bootstrap step that admits the selected operations one at a time. Every
// start goes through the gate; a process manager reacting to run events
// starts the next pending operation when one succeeds, recording its
// progress as events in the same transaction as the next decision.
package onboarding

import (
	"slices"
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
	Status      string  `json:"status"`
	InitiatorID *string `json:"initiator_id"`
	// Limits are the deadlines' limits every admitted item's run gets (nil:
	// the deployment's defaults).
	Limits  *Limits  `json:"limits"`
	Items   []Item   `json:"items"`
	Pending []string `json:"pending"`
}

// Limits are a bootstrap's limits, in seconds (0: the default).
type Limits struct {
	QueueTTLS    int64 `json:"queue_ttl_s,omitempty"`
	MaxDurationS int64 `json:"max_duration_s,omitempty"`
}

// limits returns l as the gate takes them (nil for none).
func (l *Limits) limits() *domain.Limits {
	if l == nil {
		return nil
	}
	return &domain.Limits{QueueTTL: time.Duration(l.QueueTTLS) * time.Second, MaxDuration: time.Duration(l.MaxDurationS) * time.Second}
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

// Apply returns s after e, an event of its stream. It is the one place an
// onboarding event's effect is written: every change folds the events it
// records into the session as of its lock and saves the result. What the
// events do not carry is derived: an attempt's links from its run, an
// item's canonical type and label from the operations registry. s itself
// is left as it was.
func (s Session) Apply(e domain.Event) Session {
	switch e := e.(type) {
	case domain.OnboardingSessionCreated:
		s = Session{ID: e.SessionID, TenantID: e.TenantID, CreatedBy: e.CreatedBy, CreatedAt: e.At,
			Steps: Steps{Verification: VerificationStep{Status: VerificationNotRun, Attempts: []Attempt{}},
				Bootstrap: BootstrapStep{Items: []Item{}}}}
		if e.ConnectionID != "" {
			id := e.ConnectionID
			s.ProviderConnectionID = &id
		}
	case domain.OnboardingVerificationAttempted:
		v := &s.Steps.Verification
		v.Attempts = withAttempt(v.Attempts, e.RunID, e.Outcome, e.Reason, e.At)
		v.Status = string(e.Outcome)
	case domain.BootstrapRequested:
		items := make([]Item, len(e.Operations))
		for i, typ := range e.Operations {
			op, _ := domain.LookupOperation(typ)
			items[i] = Item{Index: i, Type: typ, CanonicalType: op.Canonical, Label: op.Label, Status: ItemPending, Attempts: []Attempt{}}
		}
		initiator := e.InitiatorID
		s.Steps.Bootstrap.InitiatorID, s.Steps.Bootstrap.Items = &initiator, items
		if e.QueueTTLS != 0 || e.MaxDurationS != 0 {
			s.Steps.Bootstrap.Limits = &Limits{QueueTTLS: e.QueueTTLS, MaxDurationS: e.MaxDurationS}
		}
	case domain.BootstrapItemAttempted:
		it := s.item(e.Index)
		if it == nil {
			return s
		}
		it.Attempts = withAttempt(it.Attempts, e.RunID, e.Outcome, e.Reason, e.At)
		outcome := e.Outcome
		it.LastOutcome, it.LastReason = &outcome, e.Reason
		if e.Outcome == domain.OutcomeAccepted {
			id := e.RunID
			it.Status, it.RunID, it.LastRunStatus = ItemAdmitted, &id, nil
		}
	case domain.BootstrapItemFinished:
		it := s.item(e.Index)
		if it == nil {
			return s
		}
		status := e.Status
		it.LastRunStatus, it.LastReason = &status, e.Reason
		it.Status = ItemPending
		if e.Status == domain.StatusSucceeded {
			it.Status = string(domain.StatusSucceeded)
		}
	default:
		return s
	}
	s.refresh()
	return s
}

// item returns item i of a copy of s's items that s now holds (nil if
// there is no item i), so that changing it leaves the session s was
// copied from as it was.
func (s *Session) item(i int) *Item {
	b := &s.Steps.Bootstrap
	if i < 0 || i >= len(b.Items) {
		return nil
	}
	b.Items = slices.Clone(b.Items)
	return &b.Items[i]
}

// withAttempt returns a copy of attempts with the start of run id added.
func withAttempt(attempts []Attempt, runID string, outcome domain.Outcome, reason *domain.Reason, at time.Time) []Attempt {
	a := Attempt{RunID: runID, Outcome: outcome, Reason: reason, At: at, Links: domain.RunLinks{Self: domain.RunHref(runID)}}
	return append(slices.Clip(attempts), a)
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
