package apptest

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/tenancy"
)

var seq atomic.Int64

// Admin is the admin as an actor.
var Admin = domain.ActorAdmin

// As returns userID as an actor.
func As(userID string) domain.Actor { return domain.Actor{ID: userID} }

// Workspace creates a workspace.
func (a *App) Workspace(t testing.TB, name string) tenancy.Workspace {
	t.Helper()
	w, err := a.Tenancy.CreateWorkspace(a.Ctx, Admin, name)
	if err != nil {
		t.Fatalf("create workspace %s: %v", name, err)
	}
	return w
}

// Tenant creates a tenant in workspaceID.
func (a *App) Tenant(t testing.TB, workspaceID, name string) tenancy.Tenant {
	t.Helper()
	tn, err := a.Tenancy.CreateTenant(a.Ctx, Admin, workspaceID, name)
	if err != nil {
		t.Fatalf("create tenant %s: %v", name, err)
	}
	return tn
}

// User creates a user (with a unique email) and returns it with its token.
func (a *App) User(t testing.TB, name string) tenancy.User {
	t.Helper()
	email := fmt.Sprintf("%s-%d@example.test", strings.ToLower(strings.ReplaceAll(name, " ", "-")), seq.Add(1))
	u, err := a.Tenancy.CreateUser(a.Ctx, Admin, email, name)
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

// Grant gives userID role on tenantID.
func (a *App) Grant(t testing.TB, userID, tenantID string, role domain.Role) {
	t.Helper()
	if _, err := a.Tenancy.GrantMembership(a.Ctx, Admin, userID, tenantID, string(role)); err != nil {
		t.Fatalf("grant %s on %s: %v", role, tenantID, err)
	}
}

// Member creates a user with role on tenantID.
func (a *App) Member(t testing.TB, name, tenantID string, role domain.Role) tenancy.User {
	t.Helper()
	u := a.User(t, name)
	a.Grant(t, u.ID, tenantID, role)
	return u
}

// Team is a tenant of its own workspace with a member in each role, and
// an outsider: the owner of another tenant of the workspace, who is no
// member of the team's tenant.
type Team struct {
	Workspace tenancy.Workspace
	Tenant    tenancy.Tenant

	Owner, Operator, Auditor, Readonly tenancy.User

	// Other is the outsider's tenant.
	Other    tenancy.Tenant
	Outsider tenancy.User
}

// Team creates a team: the workspace "Contoso MSP", its tenant "Fabrikam"
// with an owner, an operator, an auditor and a readonly member, and the
// tenant "Northwind" owned by the outsider. Neither tenant has a
// connection.
func (a *App) Team(t testing.TB) Team {
	t.Helper()
	var tm Team
	tm.Workspace = a.Workspace(t, "Contoso MSP")
	tm.Tenant = a.Tenant(t, tm.Workspace.ID, "Fabrikam")
	tm.Owner = a.Member(t, "owner", tm.Tenant.ID, domain.RoleOwner)
	tm.Operator = a.Member(t, "operator", tm.Tenant.ID, domain.RoleOperator)
	tm.Auditor = a.Member(t, "auditor", tm.Tenant.ID, domain.RoleAuditor)
	tm.Readonly = a.Member(t, "readonly", tm.Tenant.ID, domain.RoleReadonly)
	tm.Other = a.Tenant(t, tm.Workspace.ID, "Northwind")
	tm.Outsider = a.Member(t, "outsider", tm.Other.ID, domain.RoleOwner)
	return tm
}

// Connection creates a connection on tenantID on behalf of ownerID: a
// ready simulated one (consent granted, credentials valid, enabled, not
// the default) unless opts say otherwise.
func (a *App) Connection(t testing.TB, ownerID, tenantID, name string, opts ...ConnectionOption) connections.Connection {
	t.Helper()
	in := connections.NewConnection{
		Provider: connections.ProviderSimulated, DisplayName: name,
		Consent: domain.ConsentGranted, Credentials: domain.CredentialsValid, Enabled: true,
	}
	for _, o := range opts {
		o(&in)
	}
	c, err := a.Connections.Create(a.Ctx, As(ownerID), tenantID, in)
	if err != nil {
		t.Fatalf("create connection %s: %v", name, err)
	}
	return c
}

// ConnectionOption changes a connection before Connection creates it.
type ConnectionOption func(*connections.NewConnection)

// AsDefault makes the connection its tenant's default.
func AsDefault(in *connections.NewConnection) { in.IsDefault = true }

// Disabled creates the connection disabled.
func Disabled(in *connections.NewConnection) { in.Enabled = false }

// Consent sets the connection's consent.
func Consent(c domain.Consent) ConnectionOption {
	return func(in *connections.NewConnection) { in.Consent = c }
}

// Credentials sets the connection's credentials.
func Credentials(c domain.Credentials) ConnectionOption {
	return func(in *connections.NewConnection) { in.Credentials = c }
}

// Provider sets the connection's provider: one the application runs
// (Providers) or one a registered executor runs, for its starts to be
// accepted.
func Provider(name string) ConnectionOption {
	return func(in *connections.NewConnection) { in.Provider = name }
}

// Latency makes each simulated execution on the connection take ms
// milliseconds.
func Latency(ms int) ConnectionOption {
	return func(in *connections.NewConnection) { simOf(in).LatencyMS = ms }
}

// FailWith makes each simulated execution on the connection fail with code.
func FailWith(code domain.ReasonCode) ConnectionOption {
	return func(in *connections.NewConnection) { simOf(in).FailWith = &code }
}

// Throttle makes the first times simulated executions on the connection
// answer throttled.
func Throttle(times int) ConnectionOption {
	return func(in *connections.NewConnection) { simOf(in).ThrottleTimes = times }
}

func simOf(in *connections.NewConnection) *domain.Simulation {
	if in.Simulation == nil {
		in.Simulation = &domain.Simulation{}
	}
	return in.Simulation
}
