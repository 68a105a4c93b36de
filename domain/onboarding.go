package domain

import "time"

// Onboarding events: a session verifies a new tenant's provider access,
// then bootstraps it with selected operations, admitted one at a time.

// OnboardingSessionCreated records that an onboarding session began for a tenant.
type OnboardingSessionCreated struct {
	SessionID    string    `json:"session_id"`
	TenantID     string    `json:"tenant_id"`
	ConnectionID string    `json:"provider_connection_id,omitempty"`
	CreatedBy    string    `json:"created_by"`
	At           time.Time `json:"at"`
}

// OnboardingVerificationAttempted records that the verification step went
// through the gate. Reason is the answer's reason (none when accepted);
// events recorded before it was added have none.
type OnboardingVerificationAttempted struct {
	SessionID string    `json:"session_id"`
	TenantID  string    `json:"tenant_id"`
	RunID     string    `json:"run_id"`
	Outcome   Outcome   `json:"outcome"`
	Reason    *Reason   `json:"reason,omitempty"`
	At        time.Time `json:"at"`
}

// BootstrapRequested records that an operator selected the operations to bootstrap.
type BootstrapRequested struct {
	SessionID   string   `json:"session_id"`
	TenantID    string   `json:"tenant_id"`
	Operations  []string `json:"operations"`
	InitiatorID string   `json:"initiator_id"`
	// QueueTTLS and MaxDurationS are the limits every admitted item's run
	// gets (0: the deployment's default).
	QueueTTLS    int64     `json:"queue_ttl_s,omitempty"`
	MaxDurationS int64     `json:"max_duration_s,omitempty"`
	At           time.Time `json:"at"`
}

// BootstrapItemAttempted records that one selected operation went through the gate.
type BootstrapItemAttempted struct {
	SessionID string    `json:"session_id"`
	TenantID  string    `json:"tenant_id"`
	Index     int       `json:"index"`
	Type      string    `json:"type"`
	RunID     string    `json:"run_id"`
	Outcome   Outcome   `json:"outcome"`
	Reason    *Reason   `json:"reason,omitempty"`
	At        time.Time `json:"at"`
}

// BootstrapItemFinished records that an admitted bootstrap run ended.
type BootstrapItemFinished struct {
	SessionID string    `json:"session_id"`
	TenantID  string    `json:"tenant_id"`
	Index     int       `json:"index"`
	RunID     string    `json:"run_id"`
	Status    RunStatus `json:"status"`
	Reason    *Reason   `json:"reason,omitempty"`
	At        time.Time `json:"at"`
}

func (OnboardingSessionCreated) EventType() string        { return "OnboardingSessionCreated" }
func (OnboardingVerificationAttempted) EventType() string { return "OnboardingVerificationAttempted" }
func (BootstrapRequested) EventType() string              { return "BootstrapRequested" }
func (BootstrapItemAttempted) EventType() string          { return "BootstrapItemAttempted" }
func (BootstrapItemFinished) EventType() string           { return "BootstrapItemFinished" }

// OnboardingEvents lists a sample of every onboarding event.
func OnboardingEvents() []Event {
	return []Event{OnboardingSessionCreated{}, OnboardingVerificationAttempted{}, BootstrapRequested{},
		BootstrapItemAttempted{}, BootstrapItemFinished{}}
}
