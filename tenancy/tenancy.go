// Package tenancy holds who may do what: MSP workspaces, customer tenants,
// users with their bearer tokens, and memberships that give a user a role
// on a tenant. It authenticates tokens and authorizes capabilities for
// every other service; a non-member of a tenant gets domain.ErrNotFound,
// exactly as for a tenant that does not exist.
package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
)

// TokenPrefix starts every user token, so that a leaked token is
// recognisable (by secret scanners, too).
const TokenPrefix = "ogu_"

// HashToken returns the stored form of a bearer token.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// NewToken returns a new random token with prefix.
func NewToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

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
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Token string `json:"token,omitempty"`
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
	db    *pgxpool.Pool
	store *eventstore.Store
	now   journal.Clock
	// tokens caches token hash -> user id of known tokens.
	tokens sync.Map
}

// New returns the tenancy service over store.
func New(db *pgxpool.Pool, store *eventstore.Store, now journal.Clock) *Service {
	return &Service{db: db, store: store, now: now}
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
	u := User{ID: journal.NewID(), Email: email, Name: strings.TrimSpace(name), Token: NewToken(TokenPrefix)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		_, err := tx.Exec(ctx, `INSERT INTO users (id, email, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			u.ID, u.Email, u.Name, HashToken(u.Token), now)
		if isUniqueViolation(err) {
			return fmt.Errorf("email %s is taken: %w", email, domain.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("insert user: %w", err)
		}
		return journal.Append(ctx, tx, domain.UserStream(u.ID), journal.Meta(by, "", ""),
			domain.UserCreated{UserID: u.ID, Email: u.Email, Name: u.Name, At: now})
	})
	return u, err
}

// GrantMembership gives a user a role on a tenant, replacing any other.
func (s *Service) GrantMembership(ctx context.Context, by domain.Actor, userID, tenantID, role string) (Membership, error) {
	if err := Required("user_id", userID); err != nil {
		return Membership{}, err
	}
	if err := Required("tenant_id", tenantID); err != nil {
		return Membership{}, err
	}
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
			return domain.Invalid("user_id", "names no user")
		}
		if tenants == 0 {
			return domain.Invalid("tenant_id", "names no tenant")
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

// Authenticate returns the id of the user holding token. Tokens never
// change owner and are never reissued, so a known token's user is cached
// (by hash, never the token itself); unknown tokens are not.
func (s *Service) Authenticate(ctx context.Context, token string) (string, error) {
	hash := HashToken(token)
	if id, ok := s.tokens.Load(string(hash)); ok {
		return id.(string), nil
	}
	var id string
	err := s.db.QueryRow(ctx, `SELECT id FROM users WHERE token_hash = $1`, hash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", domain.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("authenticate: %w", err)
	}
	s.tokens.Store(string(hash), id)
	return id, nil
}

// AuthorizeIn checks, with q, that userID may use capability on tenantID:
// a non-member gets domain.ErrNotFound, a member without it
// *domain.ForbiddenError.
func AuthorizeIn(ctx context.Context, q pg.Querier, userID, tenantID string, capability domain.Capability) error {
	var role string
	err := q.QueryRow(ctx, `SELECT role FROM memberships WHERE user_id = $1 AND tenant_id = $2`, userID, tenantID).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("look up membership: %w", err)
	}
	return Check(domain.Role(role), true, capability)
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
func (s *Service) Authorize(ctx context.Context, userID, tenantID string, capability domain.Capability) error {
	return AuthorizeIn(ctx, s.db, userID, tenantID, capability)
}

// Roles are the roles of some users on some tenants.
type Roles map[[2]string]domain.Role

// Of returns user's role on tenant, and whether there is one.
func (r Roles) Of(userID, tenantID string) (domain.Role, bool) {
	role, ok := r[[2]string{userID, tenantID}]
	return role, ok
}

// QueueRoles queues into b the read of the roles of users on tenants; the
// map is filled when b is sent.
func QueueRoles(b *pgx.Batch, users, tenants []string) Roles {
	roles := Roles{}
	b.Queue(`SELECT user_id, tenant_id, role FROM memberships WHERE user_id = ANY($1) AND tenant_id = ANY($2)`, users, tenants).
		Query(func(rows pgx.Rows) error {
			var user, tenant, role string
			_, err := pgx.ForEachRow(rows, []any{&user, &tenant, &role}, func() error {
				roles[[2]string{user, tenant}] = domain.Role(role)
				return nil
			})
			if err != nil {
				return fmt.Errorf("look up memberships: %w", err)
			}
			return nil
		})
	return roles
}

// MemberTenants lists the tenants where userID holds capability.
func (s *Service) MemberTenants(ctx context.Context, userID string, capability domain.Capability) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT tenant_id, role FROM memberships WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	var tenants []string
	for rows.Next() {
		var tenant, role string
		if err := rows.Scan(&tenant, &role); err != nil {
			rows.Close()
			return nil, err
		}
		if domain.Role(role).Can(capability) {
			tenants = append(tenants, tenant)
		}
	}
	rows.Close()
	return tenants, rows.Err()
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// MemberOf is a tenant a user is a member of, with the user's role there.
type MemberOf struct {
	TenantID   string
	TenantName string
	Role       domain.Role
}

// Memberships lists userID's tenants by name.
func (s *Service) Memberships(ctx context.Context, userID string) ([]MemberOf, error) {
	rows, err := s.db.Query(ctx, `SELECT t.id, t.name, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.user_id = $1 ORDER BY t.name, t.id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list memberships of %s: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MemberOf, error) {
		var m MemberOf
		return m, row.Scan(&m.TenantID, &m.TenantName, (*string)(&m.Role))
	})
	if err != nil {
		return nil, fmt.Errorf("list memberships of %s: %w", userID, err)
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
