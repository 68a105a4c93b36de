package domain

import "time"

// Identity events (contract section 13): integrations, the tokens of
// users, integrations and executors, users disabled and enabled,
// memberships removed. Each is an event of its owner's stream (a user's,
// an integration's, an executor's; a membership's tenant's). Token values
// are never recorded, not even hashed.

// TokenOwner is what a bearer token authenticates.
type TokenOwner string

// The kinds of token owners.
const (
	OwnerUser        TokenOwner = "user"
	OwnerIntegration TokenOwner = "integration"
	OwnerExecutor    TokenOwner = "executor"
)

// TokenIssued records that a token of an owner was issued, valid until
// ExpiresAt (nil: until revoked).
type TokenIssued struct {
	TokenID   string     `json:"token_id"`
	OwnerKind TokenOwner `json:"owner_kind"`
	OwnerID   string     `json:"owner_id"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	At        time.Time  `json:"at"`
}

// TokenRevoked records that a token no longer authenticates anything.
type TokenRevoked struct {
	TokenID   string     `json:"token_id"`
	OwnerKind TokenOwner `json:"owner_kind"`
	OwnerID   string     `json:"owner_id"`
	At        time.Time  `json:"at"`
}

// IntegrationCreated records that the MSP's platform may act for the
// users of a workspace with the integration's tokens.
type IntegrationCreated struct {
	IntegrationID string    `json:"integration_id"`
	WorkspaceID   string    `json:"workspace_id"`
	Name          string    `json:"name"`
	At            time.Time `json:"at"`
}

// IntegrationRevoked records that the integration and every token of it
// no longer work.
type IntegrationRevoked struct {
	IntegrationID string    `json:"integration_id"`
	At            time.Time `json:"at"`
}

// UserDisabled records that a user's tokens and console sessions stop
// working, and that no integration may act for the user, until enabled.
type UserDisabled struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
}

// UserEnabled records that a disabled user may act again.
type UserEnabled struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
}

// MembershipRevoked records that a user no longer holds a role on a
// tenant.
type MembershipRevoked struct {
	UserID   string    `json:"user_id"`
	TenantID string    `json:"tenant_id"`
	At       time.Time `json:"at"`
}

func (TokenIssued) EventType() string        { return "TokenIssued" }
func (TokenRevoked) EventType() string       { return "TokenRevoked" }
func (IntegrationCreated) EventType() string { return "IntegrationCreated" }
func (IntegrationRevoked) EventType() string { return "IntegrationRevoked" }
func (UserDisabled) EventType() string       { return "UserDisabled" }
func (UserEnabled) EventType() string        { return "UserEnabled" }
func (MembershipRevoked) EventType() string  { return "MembershipRevoked" }

// IntegrationStream is the stream of integration id.
func IntegrationStream(id string) StreamID { return StreamID("integration-" + id) }
