package domain

import (
	"encoding/json"
	"time"
)

// Events of the write side that decisions depend on. Each is appended with
// its state row updated in the same transaction, so a decision never reads
// state older than the events committed before it.

// WorkspaceCreated records that an MSP workspace exists.
type WorkspaceCreated struct {
	WorkspaceID string    `json:"workspace_id"`
	Name        string    `json:"name"`
	At          time.Time `json:"at"`
}

// TenantCreated records that a customer tenant exists in a workspace.
type TenantCreated struct {
	TenantID    string    `json:"tenant_id"`
	WorkspaceID string    `json:"workspace_id"`
	Name        string    `json:"name"`
	At          time.Time `json:"at"`
}

// UserCreated records that a user exists. The token is never recorded, not even hashed.
type UserCreated struct {
	UserID string    `json:"user_id"`
	Email  string    `json:"email"`
	Name   string    `json:"name"`
	At     time.Time `json:"at"`
}

// MembershipGranted records that a user holds a role on a tenant (replacing any other).
type MembershipGranted struct {
	UserID   string    `json:"user_id"`
	TenantID string    `json:"tenant_id"`
	Role     Role      `json:"role"`
	At       time.Time `json:"at"`
}

// Simulation is how the simulated provider behaves for a connection.
type Simulation struct {
	LatencyMS int         `json:"latency_ms"`
	FailWith  *ReasonCode `json:"fail_with"`
	// ThrottleTimes makes the provider throttle that many calls before it
	// answers; beyond the worker's retries the run fails provider.throttled.
	ThrottleTimes int `json:"throttle_times,omitempty"`
}

// ProviderConnectionCreated records that a tenant has a new provider connection.
type ProviderConnectionCreated struct {
	ConnectionID string      `json:"connection_id"`
	TenantID     string      `json:"tenant_id"`
	Provider     string      `json:"provider"`
	DisplayName  string      `json:"display_name"`
	Consent      Consent     `json:"consent"`
	Credentials  Credentials `json:"credentials"`
	Enabled      bool        `json:"enabled"`
	Simulation   *Simulation `json:"simulation,omitempty"`
	At           time.Time   `json:"at"`
}

// ProviderConnectionRenamed records that the display name changed.
type ProviderConnectionRenamed struct {
	ConnectionID string    `json:"connection_id"`
	TenantID     string    `json:"tenant_id"`
	DisplayName  string    `json:"display_name"`
	At           time.Time `json:"at"`
}

// ProviderConnectionConsentChanged records that consent was granted, found missing or
// revoked, by an operator or, when RunID is set, learned by that run.
type ProviderConnectionConsentChanged struct {
	ConnectionID string    `json:"connection_id"`
	TenantID     string    `json:"tenant_id"`
	Consent      Consent   `json:"consent"`
	RunID        string    `json:"run_id,omitempty"`
	At           time.Time `json:"at"`
}

// ProviderConnectionCredentialsChanged records that the credentials' state changed, by
// an operator or, when RunID is set, learned by that run.
type ProviderConnectionCredentialsChanged struct {
	ConnectionID string      `json:"connection_id"`
	TenantID     string      `json:"tenant_id"`
	Credentials  Credentials `json:"credentials"`
	RunID        string      `json:"run_id,omitempty"`
	At           time.Time   `json:"at"`
}

// ProviderConnectionVerified records that a connection check (run RunID) succeeded
// against the connection.
type ProviderConnectionVerified struct {
	ConnectionID string    `json:"connection_id"`
	TenantID     string    `json:"tenant_id"`
	RunID        string    `json:"run_id"`
	At           time.Time `json:"at"`
}

// ProviderConnectionEnabledChanged records that the connection was enabled or disabled.
type ProviderConnectionEnabledChanged struct {
	ConnectionID string    `json:"connection_id"`
	TenantID     string    `json:"tenant_id"`
	Enabled      bool      `json:"enabled"`
	At           time.Time `json:"at"`
}

// ProviderConnectionSimulationChanged records that the simulated provider's behaviour changed.
type ProviderConnectionSimulationChanged struct {
	ConnectionID string      `json:"connection_id"`
	TenantID     string      `json:"tenant_id"`
	Simulation   *Simulation `json:"simulation"`
	At           time.Time   `json:"at"`
}

// ProviderConnectionMadeDefault records that the connection is the tenant's default;
// PreviousID (if any) no longer is.
type ProviderConnectionMadeDefault struct {
	ConnectionID string    `json:"connection_id"`
	TenantID     string    `json:"tenant_id"`
	PreviousID   string    `json:"previous_id,omitempty"`
	At           time.Time `json:"at"`
}

// RestoreRunCreated records that a restore run was drafted.
type RestoreRunCreated struct {
	RestoreRunID string          `json:"restore_run_id"`
	TenantID     string          `json:"tenant_id"`
	Name         string          `json:"name"`
	Items        json.RawMessage `json:"items"`
	CreatedBy    string          `json:"created_by"`
	At           time.Time       `json:"at"`
}

// RestoreRunPreviewed records that the restore run was previewed, with warnings.
type RestoreRunPreviewed struct {
	RestoreRunID string    `json:"restore_run_id"`
	TenantID     string    `json:"tenant_id"`
	Warnings     []string  `json:"warnings"`
	PreviewedBy  string    `json:"previewed_by"`
	At           time.Time `json:"at"`
}

func (WorkspaceCreated) EventType() string                 { return "WorkspaceCreated" }
func (TenantCreated) EventType() string                    { return "TenantCreated" }
func (UserCreated) EventType() string                      { return "UserCreated" }
func (MembershipGranted) EventType() string                { return "MembershipGranted" }
func (ProviderConnectionCreated) EventType() string        { return "ProviderConnectionCreated" }
func (ProviderConnectionRenamed) EventType() string        { return "ProviderConnectionRenamed" }
func (ProviderConnectionConsentChanged) EventType() string { return "ProviderConnectionConsentChanged" }
func (ProviderConnectionCredentialsChanged) EventType() string {
	return "ProviderConnectionCredentialsChanged"
}
func (ProviderConnectionEnabledChanged) EventType() string { return "ProviderConnectionEnabledChanged" }
func (ProviderConnectionSimulationChanged) EventType() string {
	return "ProviderConnectionSimulationChanged"
}
func (ProviderConnectionMadeDefault) EventType() string { return "ProviderConnectionMadeDefault" }
func (ProviderConnectionVerified) EventType() string    { return "ProviderConnectionVerified" }
func (RestoreRunCreated) EventType() string             { return "RestoreRunCreated" }
func (RestoreRunPreviewed) EventType() string           { return "RestoreRunPreviewed" }

// TenancyEvents lists a sample of every write-side event outside the scope.
func TenancyEvents() []Event {
	return []Event{WorkspaceCreated{}, TenantCreated{}, UserCreated{}, MembershipGranted{},
		MembershipRevoked{}, UserDisabled{}, UserEnabled{}, IntegrationCreated{}, IntegrationRevoked{},
		TokenIssued{}, TokenRevoked{},
		ProviderConnectionCreated{}, ProviderConnectionRenamed{}, ProviderConnectionConsentChanged{},
		ProviderConnectionCredentialsChanged{}, ProviderConnectionEnabledChanged{},
		ProviderConnectionSimulationChanged{}, ProviderConnectionMadeDefault{}, ProviderConnectionVerified{},
		ExecutorRegistered{}, ExecutorRevoked{},
		RestoreRunCreated{}, RestoreRunPreviewed{}}
}
