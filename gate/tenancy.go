package gate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// TokenPrefix starts every user token, so that a leaked token is
// recognisable (by secret scanners, too).
const TokenPrefix = "ogu_"

// HashToken returns the stored form of a bearer token.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
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

func required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return invalid(field, "is required")
	}
	if len(value) > 200 {
		return invalid(field, "is longer than 200 characters")
	}
	return nil
}

// CreateWorkspace records a new workspace.
func (s *Service) CreateWorkspace(ctx context.Context, name string) (Workspace, error) {
	if err := required("name", name); err != nil {
		return Workspace{}, err
	}
	w := Workspace{ID: newID(), Name: strings.TrimSpace(name)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		if _, err := tx.Exec(ctx, `INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)`, w.ID, w.Name, now); err != nil {
			return fmt.Errorf("insert workspace: %w", err)
		}
		return appendOne(ctx, tx, "workspace-"+w.ID, domain.WorkspaceCreated{WorkspaceID: w.ID, Name: w.Name, At: now})
	})
	return w, err
}

// CreateTenant records a new tenant in an existing workspace.
func (s *Service) CreateTenant(ctx context.Context, workspaceID, name string) (Tenant, error) {
	if err := required("workspace_id", workspaceID); err != nil {
		return Tenant{}, err
	}
	if err := required("name", name); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: newID(), WorkspaceID: workspaceID, Name: strings.TrimSpace(name)}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, workspaceID).Scan(&exists); err != nil {
			return fmt.Errorf("look up workspace: %w", err)
		}
		if !exists {
			return invalid("workspace_id", "names no workspace")
		}
		now := s.now()
		if _, err := tx.Exec(ctx, `INSERT INTO tenants (id, workspace_id, name, created_at) VALUES ($1, $2, $3, $4)`, t.ID, t.WorkspaceID, t.Name, now); err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		ctx = WithMetadata(ctx, "", t.ID, "")
		return appendOne(ctx, tx, "tenant-"+t.ID, domain.TenantCreated{TenantID: t.ID, WorkspaceID: workspaceID, Name: t.Name, At: now})
	})
	return t, err
}

// CreateUser records a new user and returns it with its token, the only
// time the token is ever shown.
func (s *Service) CreateUser(ctx context.Context, email, name string) (User, error) {
	email = strings.TrimSpace(email)
	if err := required("email", email); err != nil {
		return User{}, err
	}
	if at := strings.Index(email, "@"); at < 1 || at == len(email)-1 || strings.ContainsAny(email, " \t\r\n") {
		return User{}, invalid("email", "is not an email address")
	}
	if err := required("name", name); err != nil {
		return User{}, err
	}
	u := User{ID: newID(), Email: email, Name: strings.TrimSpace(name), Token: newToken()}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		_, err := tx.Exec(ctx, `INSERT INTO users (id, email, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			u.ID, u.Email, u.Name, HashToken(u.Token), now)
		if isUniqueViolation(err) {
			return fmt.Errorf("email %s is taken: %w", email, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("insert user: %w", err)
		}
		return appendOne(ctx, tx, "user-"+u.ID, domain.UserCreated{UserID: u.ID, Email: u.Email, Name: u.Name, At: now})
	})
	return u, err
}

// GrantMembership gives a user a role on a tenant, replacing any other.
func (s *Service) GrantMembership(ctx context.Context, userID, tenantID, role string) (Membership, error) {
	if err := required("user_id", userID); err != nil {
		return Membership{}, err
	}
	if err := required("tenant_id", tenantID); err != nil {
		return Membership{}, err
	}
	r, ok := domain.ParseRole(role)
	if !ok {
		return Membership{}, invalid("role", "must be one of owner, operator, auditor, readonly")
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
			return invalid("user_id", "names no user")
		}
		if tenants == 0 {
			return invalid("tenant_id", "names no tenant")
		}
		_, err = tx.Exec(ctx, `INSERT INTO memberships (user_id, tenant_id, role) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, tenant_id) DO UPDATE SET role = excluded.role`, userID, tenantID, string(r))
		if err != nil {
			return fmt.Errorf("upsert membership: %w", err)
		}
		ctx = WithMetadata(ctx, "", tenantID, "")
		return appendOne(ctx, tx, "tenant-"+tenantID, domain.MembershipGranted{UserID: userID, TenantID: tenantID, Role: r, At: s.now()})
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
	err := s.store.Pool().QueryRow(ctx, `SELECT id FROM users WHERE token_hash = $1`, hash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("authenticate: %w", err)
	}
	s.tokens.Store(string(hash), id)
	return id, nil
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// authorize checks that userID may use capability on tenantID: a
// non-member gets ErrNotFound, a member without it *ForbiddenError.
func authorize(ctx context.Context, q queryRower, userID, tenantID string, capability domain.Capability) error {
	var role string
	err := q.QueryRow(ctx, `SELECT role FROM memberships WHERE user_id = $1 AND tenant_id = $2`, userID, tenantID).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("look up membership: %w", err)
	}
	if !domain.Role(role).Can(capability) {
		return &ForbiddenError{Capability: capability}
	}
	return nil
}

// Authorize checks that userID may use capability on tenantID (see
// authorize); read endpoints call it before they answer.
func (s *Service) Authorize(ctx context.Context, userID, tenantID string, capability domain.Capability) error {
	return authorize(ctx, s.store.Pool(), userID, tenantID, capability)
}

// MemberTenants lists the tenants where userID holds capability.
func (s *Service) MemberTenants(ctx context.Context, userID string, capability domain.Capability) ([]string, error) {
	rows, err := s.store.Pool().Query(ctx, `SELECT tenant_id, role FROM memberships WHERE user_id = $1`, userID)
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
