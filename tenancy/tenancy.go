// Package tenancy holds who may do what: MSP workspaces, customer tenants,
// users (their tokens are the tokens package's), integrations that act for
// the users of a workspace, and memberships that give a user a role on a
// tenant. It authorizes capabilities for every other service, in one
// path: a non-member of a tenant, or an actor limited to another workspace
// (a request through an integration), gets domain.ErrNotFound, exactly as
// for a tenant that does not exist.
package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
	"github.com/opsgate/opsgate/tokens"
)

// Workspace is an MSP workspace.
type Workspace struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Tenant is a customer tenant.
type Tenant struct {
	ID          string `json:"id"`
	WorkspaceID string `json:"workspace_id"`
	Name        string `json:"name"`
}

// User is a user; Token is set only in the answer that created it.
type User struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
	Token    string `json:"token,omitempty"`
}

// Membership is a user's role on a tenant.
type Membership struct {
	UserID   string      `json:"user_id"`
	TenantID string      `json:"tenant_id"`
	Role     domain.Role `json:"role"`
}

// Service records tenancy and answers who may do what.
type Service struct {
	// db is what the service reads with; store records its changes.
	db     *pgxpool.Pool
	store  *eventstore.Store
	tokens *tokens.Service
	now    journal.Clock
}

// New returns the tenancy service over store; users' and integrations'
// tokens are issued and revoked through tokens.
func New(db *pgxpool.Pool, store *eventstore.Store, tokens *tokens.Service, now journal.Clock) *Service {
	return &Service{db: db, store: store, tokens: tokens, now: now}
}

// Required checks a required, bounded text field.
func Required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return domain.Invalid(field, "is required")
	}
	if len(value) > 200 {
		return domain.Invalid(field, "is longer than 200 characters")
	}
	return nil
}

// CreateWorkspace records a new workspace.
func (s *Service) CreateWorkspace(ctx context.Context, by domain.Actor, name string) (Workspace, error) {
	if err := Required("name", name); err != nil {
		return Workspace{}, err
	}
	w := Workspace{ID: journal.NewID(), Name: strings.TrimSpace(name)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		if _, err := tx.Exec(ctx, `INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)`, w.ID, w.Name, now); err != nil {
			return fmt.Errorf("insert workspace: %w", err)
		}
		return journal.Append(ctx, tx, domain.WorkspaceStream(w.ID), journal.Meta(by, "", ""),
			domain.WorkspaceCreated{WorkspaceID: w.ID, Name: w.Name, At: now})
	})
	return w, err
}

// CreateTenant records a new tenant in an existing workspace.
func (s *Service) CreateTenant(ctx context.Context, by domain.Actor, workspaceID, name string) (Tenant, error) {
	if err := Required("workspace_id", workspaceID); err != nil {
		return Tenant{}, err
	}
	if err := Required("name", name); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: journal.NewID(), WorkspaceID: workspaceID, Name: strings.TrimSpace(name)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, workspaceID).Scan(&exists); err != nil {
			return fmt.Errorf("look up workspace: %w", err)
		}
		if !exists {
			return domain.Invalid("workspace_id", "names no workspace")
		}
		now := s.now()
		if _, err := tx.Exec(ctx, `INSERT INTO tenants (id, workspace_id, name, created_at) VALUES ($1, $2, $3, $4)`, t.ID, t.WorkspaceID, t.Name, now); err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		return journal.Append(ctx, tx, domain.TenantStream(t.ID), journal.Meta(by, t.ID, ""),
			domain.TenantCreated{TenantID: t.ID, WorkspaceID: workspaceID, Name: t.Name, At: now})
	})
	return t, err
}

// CreateUser records a new user and returns it with its token, the only
// time the token is ever shown.
func (s *Service) CreateUser(ctx context.Context, by domain.Actor, email, name string) (User, error) {
	email = strings.TrimSpace(email)
	if err := Required("email", email); err != nil {
		return User{}, err
	}
	if at := strings.Index(email, "@"); at < 1 || at == len(email)-1 || strings.ContainsAny(email, " \t\r\n") {
		return User{}, domain.Invalid("email", "is not an email address")
	}
	if err := Required("name", name); err != nil {
		return User{}, err
	}
	u := User{ID: journal.NewID(), Email: email, Name: strings.TrimSpace(name)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		_, err := tx.Exec(ctx, `INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)`,
			u.ID, u.Email, u.Name, now)
		if isUniqueViolation(err) {
			return fmt.Errorf("email %s is taken: %w", email, domain.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("insert user: %w", err)
		}
		if err := journal.Append(ctx, tx, domain.UserStream(u.ID), journal.Meta(by, "", ""),
			domain.UserCreated{UserID: u.ID, Email: u.Email, Name: u.Name, At: now}); err != nil {
			return err
		}
		t, err := s.tokens.Issue(ctx, tx, by, tokens.Owner{Kind: domain.OwnerUser, ID: u.ID}, nil)
		u.Token = t.Value
		return err
	})
	return u, err
}

// GrantMembership gives a user a role on a tenant, replacing any other;
// a user or tenant that does not exist is invalid input.
func (s *Service) GrantMembership(ctx context.Context, by domain.Actor, userID, tenantID, role string) (Membership, error) {
	if err := Required("user_id", userID); err != nil {
		return Membership{}, err
	}
	if err := Required("tenant_id", tenantID); err != nil {
		return Membership{}, err
	}
	return s.grant(ctx, by, userID, tenantID, role, func(field string) error {
		return domain.Invalid(field, "names no %s", strings.TrimSuffix(field, "_id"))
	})
}

// PutMembership gives userID role on tenantID, or changes the role it
// has; domain.ErrNotFound for a user or tenant that does not exist.
func (s *Service) PutMembership(ctx context.Context, by domain.Actor, userID, tenantID, role string) (Membership, error) {
	return s.grant(ctx, by, userID, tenantID, role, func(string) error { return domain.ErrNotFound })
}

// grant records userID's role on tenantID; missing says what a user or
// tenant that does not exist is.
func (s *Service) grant(ctx context.Context, by domain.Actor, userID, tenantID, role string, missing func(field string) error) (Membership, error) {
	r, ok := domain.ParseRole(role)
	if !ok {
		return Membership{}, domain.Invalid("role", "must be one of owner, operator, auditor, readonly")
	}
	m := Membership{UserID: userID, TenantID: tenantID, Role: r}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var users, tenants int
		err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM users WHERE id = $1), (SELECT count(*) FROM tenants WHERE id = $2)`,
			userID, tenantID).Scan(&users, &tenants)
		if err != nil {
			return fmt.Errorf("look up user and tenant: %w", err)
		}
		if users == 0 {
			return missing("user_id")
		}
		if tenants == 0 {
			return missing("tenant_id")
		}
		_, err = tx.Exec(ctx, `INSERT INTO memberships (user_id, tenant_id, role) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, tenant_id) DO UPDATE SET role = excluded.role`, userID, tenantID, string(r))
		if err != nil {
			return fmt.Errorf("upsert membership: %w", err)
		}
		return journal.Append(ctx, tx, domain.TenantStream(tenantID), journal.Meta(by, tenantID, ""),
			domain.MembershipGranted{UserID: userID, TenantID: tenantID, Role: r, At: s.now()})
	})
	return m, err
}

// AuthorizeIn checks, with q, that who may use capability on tenantID: a
// non-member (or an actor limited to another workspace) gets
// domain.ErrNotFound, a member without it *domain.ForbiddenError.
func AuthorizeIn(ctx context.Context, q pg.Querier, who domain.Actor, tenantID string, capability domain.Capability) error {
	var role, workspace string
	err := q.QueryRow(ctx, `SELECT m.role, t.workspace_id FROM memberships m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.user_id = $1 AND m.tenant_id = $2`, who.ID, tenantID).Scan(&role, &workspace)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("look up membership: %w", err)
	}
	return Check(domain.Role(role), who.Sees(workspace), capability)
}

// Check is the rule of AuthorizeIn for a role already read (member false:
// no membership).
func Check(role domain.Role, member bool, capability domain.Capability) error {
	if !member {
		return domain.ErrNotFound
	}
	if !role.Can(capability) {
		return &domain.ForbiddenError{Capability: capability}
	}
	return nil
}

// Authorize is AuthorizeIn on the pool; read endpoints call it before they
// answer.
func (s *Service) Authorize(ctx context.Context, who domain.Actor, tenantID string, capability domain.Capability) error {
	return AuthorizeIn(ctx, s.db, who, tenantID, capability)
}

// Roles are the roles of some users on some tenants, and the tenants'
// workspaces.
type Roles map[[2]string]roleIn

type roleIn struct {
	role      domain.Role
	workspace string
}

// Of returns who's role on tenant, and whether who is a member there (as
// AuthorizeIn judges it).
func (r Roles) Of(who domain.Actor, tenantID string) (domain.Role, bool) {
	m, ok := r[[2]string{who.ID, tenantID}]
	return m.role, ok && who.Sees(m.workspace)
}

// QueueRoles queues into b the read of the roles of users on tenants; the
// map is filled when b is sent.
func QueueRoles(b *pgx.Batch, users, tenants []string) Roles {
	roles := Roles{}
	b.Queue(`SELECT m.user_id, m.tenant_id, m.role, t.workspace_id FROM memberships m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.user_id = ANY($1) AND m.tenant_id = ANY($2)`, users, tenants).
		Query(func(rows pgx.Rows) error {
			var user, tenant, role, workspace string
			_, err := pgx.ForEachRow(rows, []any{&user, &tenant, &role, &workspace}, func() error {
				roles[[2]string{user, tenant}] = roleIn{domain.Role(role), workspace}
				return nil
			})
			if err != nil {
				return fmt.Errorf("look up memberships: %w", err)
			}
			return nil
		})
	return roles
}

// MemberTenants lists the tenants where who holds capability.
func (s *Service) MemberTenants(ctx context.Context, who domain.Actor, capability domain.Capability) ([]string, error) {
	list, err := s.Memberships(ctx, who)
	if err != nil {
		return nil, err
	}
	var tenants []string
	for _, m := range list {
		if m.Role.Can(capability) {
			tenants = append(tenants, m.TenantID)
		}
	}
	return tenants, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// MemberOf is a tenant a user is a member of, with the user's role there.
type MemberOf struct {
	TenantID    string
	TenantName  string
	WorkspaceID string
	Role        domain.Role
}

// Memberships lists who's tenants by name (for an actor limited to a
// workspace, those of that workspace).
func (s *Service) Memberships(ctx context.Context, who domain.Actor) ([]MemberOf, error) {
	rows, err := s.db.Query(ctx, `SELECT t.id, t.name, t.workspace_id, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.user_id = $1 ORDER BY t.name, t.id`, who.ID)
	if err != nil {
		return nil, fmt.Errorf("list memberships of %s: %w", who.ID, err)
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MemberOf, error) {
		var m MemberOf
		return m, row.Scan(&m.TenantID, &m.TenantName, &m.WorkspaceID, (*string)(&m.Role))
	})
	if err != nil {
		return nil, fmt.Errorf("list memberships of %s: %w", who.ID, err)
	}
	out := make([]MemberOf, 0, len(all))
	for _, m := range all {
		if who.Sees(m.WorkspaceID) {
			out = append(out, m)
		}
	}
	return out, nil
}

// UserNames returns the names of those of ids that are users; the other
// actors ("admin", "worker:…", "system:…") and unknown ids are absent.
func (s *Service) UserNames(ctx context.Context, ids []string) (map[string]string, error) {
	names := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return names, nil
	}
	rows, err := s.db.Query(ctx, `SELECT id, name FROM users WHERE id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("read user names: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, name string
		if err := rows.Scan(&id, &name); err != nil {
			return nil, fmt.Errorf("read user names: %w", err)
		}
		names[id] = name
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read user names: %w", err)
	}
	return names, nil
}
