package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
	"github.com/opsgate/opsgate/tokens"
)

// Integrations, on-behalf-of, the lifecycle of users' and integrations'
// tokens, disabled users and memberships removed (contract section 13).

// ErrOnBehalfRefused means an integration named a user it may not act
// for: unknown, disabled, or with no membership in a tenant of the
// integration's workspace.
var ErrOnBehalfRefused = errors.New("the integration may not act on behalf of that user")

// Integration is the MSP's platform, acting for the users of one
// workspace with its tokens.
type Integration struct {
	ID          string     `json:"id"`
	WorkspaceID string     `json:"workspace_id"`
	Name        string     `json:"name"`
	CreatedAt   time.Time  `json:"created_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	// Token is its first token, in the answer that created it only.
	Token *tokens.Token `json:"token,omitempty"`
}

// CreateIntegration records an integration of workspaceID with its first
// token, the only time the token's value is shown.
func (s *Service) CreateIntegration(ctx context.Context, by domain.Actor, workspaceID, name string) (Integration, error) {
	if err := Required("workspace_id", workspaceID); err != nil {
		return Integration{}, err
	}
	if err := Required("name", name); err != nil {
		return Integration{}, err
	}
	in := Integration{ID: journal.NewID(), WorkspaceID: workspaceID, Name: strings.TrimSpace(name), CreatedAt: s.now()}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, workspaceID).Scan(&exists); err != nil {
			return fmt.Errorf("look up workspace: %w", err)
		}
		if !exists {
			return domain.Invalid("workspace_id", "names no workspace")
		}
		tx.Defer(`INSERT INTO integrations (id, workspace_id, name, created_at) VALUES ($1, $2, $3, $4)`,
			in.ID, in.WorkspaceID, in.Name, in.CreatedAt)
		if err := journal.Append(ctx, tx, domain.IntegrationStream(in.ID), journal.Meta(by, "", in.ID),
			domain.IntegrationCreated{IntegrationID: in.ID, WorkspaceID: workspaceID, Name: in.Name, At: in.CreatedAt}); err != nil {
			return err
		}
		t, err := s.tokens.Issue(ctx, tx, by, tokens.Owner{Kind: domain.OwnerIntegration, ID: in.ID}, nil)
		in.Token = &t
		return err
	})
	return in, err
}

// Integrations lists every integration, revoked ones included, oldest
// first, with when a token of it was last used.
func (s *Service) Integrations(ctx context.Context) ([]Integration, error) {
	rows, err := s.db.Query(ctx, `SELECT id, workspace_id, name, created_at, revoked_at FROM integrations ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list integrations: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Integration, error) {
		var in Integration
		err := row.Scan(&in.ID, &in.WorkspaceID, &in.Name, &in.CreatedAt, &in.RevokedAt)
		in.CreatedAt = in.CreatedAt.UTC()
		return in, err
	})
	if err != nil {
		return nil, fmt.Errorf("list integrations: %w", err)
	}
	ids := make([]string, len(list))
	for i, in := range list {
		ids[i] = in.ID
	}
	used, err := s.tokens.LastUsed(ctx, domain.OwnerIntegration, ids)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if at, ok := used[list[i].ID]; ok {
			list[i].LastUsedAt = &at
		}
		if list[i].RevokedAt != nil {
			r := list[i].RevokedAt.UTC()
			list[i].RevokedAt = &r
		}
	}
	if list == nil {
		list = []Integration{}
	}
	return list, nil
}

// RevokeIntegration revokes integration id and every token of it;
// domain.ErrNotFound for an integration that does not exist or was
// revoked before.
func (s *Service) RevokeIntegration(ctx context.Context, by domain.Actor, id string) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		tag, err := tx.Exec(ctx, `UPDATE integrations SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, id, now)
		if err != nil {
			return fmt.Errorf("revoke integration %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return domain.ErrNotFound
		}
		if err := s.tokens.RevokeAll(ctx, tx, by, tokens.Owner{Kind: domain.OwnerIntegration, ID: id}); err != nil {
			return err
		}
		return journal.Append(ctx, tx, domain.IntegrationStream(id), journal.Meta(by, "", id),
			domain.IntegrationRevoked{IntegrationID: id, At: now})
	})
}

// OnBehalf returns the actor of a request of integration integrationID
// on behalf of userID: the user, via the integration, limited to the
// integration's workspace. ErrOnBehalfRefused for a user the integration
// may not act for, domain.ErrNotFound for an integration that was revoked
// meanwhile.
func (s *Service) OnBehalf(ctx context.Context, integrationID, userID string, requestID string) (domain.Actor, error) {
	var workspace string
	var revoked, found, disabled, member bool
	err := s.db.QueryRow(ctx, `SELECT i.workspace_id, i.revoked_at IS NOT NULL,
			EXISTS (SELECT 1 FROM users u WHERE u.id = $2), EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.disabled_at IS NOT NULL),
			EXISTS (SELECT 1 FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.user_id = $2 AND t.workspace_id = i.workspace_id)
		FROM integrations i WHERE i.id = $1`, integrationID, userID).Scan(&workspace, &revoked, &found, &disabled, &member)
	if errors.Is(err, pgx.ErrNoRows) || revoked {
		return domain.Actor{}, domain.ErrNotFound
	}
	if err != nil {
		return domain.Actor{}, fmt.Errorf("look up the on-behalf-of user: %w", err)
	}
	if !found || disabled || !member {
		return domain.Actor{}, ErrOnBehalfRefused
	}
	return domain.Actor{ID: userID, RequestID: requestID, Via: domain.ViaIntegration(integrationID), Workspace: workspace}, nil
}

// IntegrationNames returns the names of those of ids that are
// integrations.
func (s *Service) IntegrationNames(ctx context.Context, ids []string) (map[string]string, error) {
	names := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return names, nil
	}
	rows, err := s.db.Query(ctx, `SELECT id, name FROM integrations WHERE id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("read integration names: %w", err)
	}
	var id, name string
	if _, err := pgx.ForEachRow(rows, []any{&id, &name}, func() error {
		names[id] = name
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read integration names: %w", err)
	}
	return names, nil
}

// IssueToken issues a token of a user or an integration (executors'
// are the executors package's), valid until expiresAt (nil: until
// revoked); domain.ErrNotFound for an owner that does not exist or was
// revoked.
func (s *Service) IssueToken(ctx context.Context, by domain.Actor, owner tokens.Owner, expiresAt *time.Time) (tokens.Token, error) {
	var t tokens.Token
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := s.ownerExists(ctx, tx, owner); err != nil {
			return err
		}
		var err error
		t, err = s.tokens.Issue(ctx, tx, by, owner, expiresAt)
		return err
	})
	return t, err
}

// Tokens lists the unrevoked tokens of a user or an integration.
func (s *Service) Tokens(ctx context.Context, owner tokens.Owner) ([]tokens.Token, error) {
	if err := s.ownerExists(ctx, s.db, owner); err != nil {
		return nil, err
	}
	return s.tokens.List(ctx, owner)
}

// RevokeToken revokes token tokenID of a user or an integration.
func (s *Service) RevokeToken(ctx context.Context, by domain.Actor, owner tokens.Owner, tokenID string) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := s.ownerExists(ctx, tx, owner); err != nil {
			return err
		}
		_, err := s.tokens.Revoke(ctx, tx, by, owner, tokenID)
		return err
	})
}

// ownerExists checks that a user, or an unrevoked integration, exists.
func (s *Service) ownerExists(ctx context.Context, q pg.Querier, owner tokens.Owner) error {
	query := `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`
	if owner.Kind == domain.OwnerIntegration {
		query = `SELECT EXISTS (SELECT 1 FROM integrations WHERE id = $1 AND revoked_at IS NULL)`
	}
	var exists bool
	if err := q.QueryRow(ctx, query, owner.ID).Scan(&exists); err != nil {
		return fmt.Errorf("look up %s %s: %w", owner.Kind, owner.ID, err)
	}
	if !exists {
		return domain.ErrNotFound
	}
	return nil
}

// SetDisabled disables (or enables again) user id: a disabled user's
// tokens and console sessions stop working, and no integration may act
// for the user. It returns the user; domain.ErrNotFound if there is none.
func (s *Service) SetDisabled(ctx context.Context, by domain.Actor, id string, disabled bool) (User, error) {
	var u User
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := journal.Lock(ctx, tx, domain.UserStream(id)); err != nil {
			return err
		}
		var was *time.Time
		err := tx.QueryRow(ctx, `SELECT email, name, disabled_at FROM users WHERE id = $1`, id).Scan(&u.Email, &u.Name, &was)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("look up user %s: %w", id, err)
		}
		u.ID, u.Disabled = id, disabled
		if (was != nil) == disabled {
			return nil // as asked already
		}
		now := s.now()
		var at *time.Time
		var event domain.Event = domain.UserEnabled{UserID: id, At: now}
		if disabled {
			at, event = &now, domain.UserDisabled{UserID: id, At: now}
		}
		tx.Defer(`UPDATE users SET disabled_at = $2 WHERE id = $1`, id, at)
		if err := s.tokens.Suspend(ctx, tx, tokens.Owner{Kind: domain.OwnerUser, ID: id}, disabled); err != nil {
			return err
		}
		return journal.Append(ctx, tx, domain.UserStream(id), journal.Meta(by, "", id), event)
	})
	return u, err
}

// Active reports whether user id exists and is not disabled (console
// sessions ask on every page).
func (s *Service) Active(ctx context.Context, id string) (bool, error) {
	var active bool
	err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND disabled_at IS NULL)`, id).Scan(&active)
	if err != nil {
		return false, fmt.Errorf("look up user %s: %w", id, err)
	}
	return active, nil
}

// RevokeMembership removes userID's role on tenantID: the user gets 404
// for the tenant at once. domain.ErrNotFound if there is no such
// membership.
func (s *Service) RevokeMembership(ctx context.Context, by domain.Actor, userID, tenantID string) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM memberships WHERE user_id = $1 AND tenant_id = $2`, userID, tenantID)
		if err != nil {
			return fmt.Errorf("remove membership: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return domain.ErrNotFound
		}
		return journal.Append(ctx, tx, domain.TenantStream(tenantID), journal.Meta(by, tenantID, ""),
			domain.MembershipRevoked{UserID: userID, TenantID: tenantID, At: s.now()})
	})
}

// TenantOf is a tenant as its member sees it: with the member's role and
// capabilities there.
type TenantOf struct {
	ID           string              `json:"id"`
	WorkspaceID  string              `json:"workspace_id"`
	Name         string              `json:"name"`
	Role         domain.Role         `json:"role"`
	Capabilities []domain.Capability `json:"capabilities"`
}

// Tenants lists who's tenants, by name, with who's role and capabilities
// on each.
func (s *Service) Tenants(ctx context.Context, who domain.Actor) ([]TenantOf, error) {
	list, err := s.Memberships(ctx, who)
	if err != nil {
		return nil, err
	}
	out := make([]TenantOf, len(list))
	for i, m := range list {
		out[i] = TenantOf{ID: m.TenantID, WorkspaceID: m.WorkspaceID, Name: m.TenantName, Role: m.Role, Capabilities: m.Role.Capabilities()}
	}
	return out, nil
}

// Initiator is who started something, as every surface names them: the
// user, and the integration the request came through.
type Initiator struct {
	UserID string          `json:"user_id"`
	Name   string          `json:"name"`
	Via    *IntegrationRef `json:"via"`
	// Label is "<user> via <integration>", or the user's name alone.
	Label string `json:"label"`
}

// IntegrationRef names an integration.
type IntegrationRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Initiator names userID and the integration via names
// ("integration:<id>"; "" for none). An id that names nobody is shown as
// itself.
func (s *Service) Initiator(ctx context.Context, userID, via string) (Initiator, error) {
	in := Initiator{UserID: userID, Name: userID}
	names, err := s.UserNames(ctx, []string{userID})
	if err != nil {
		return Initiator{}, err
	}
	if name, ok := names[userID]; ok {
		in.Name = name
	}
	in.Label = in.Name
	if id, ok := domain.IntegrationOf(via); ok {
		ref := IntegrationRef{ID: id, Name: id}
		names, err := s.IntegrationNames(ctx, []string{id})
		if err != nil {
			return Initiator{}, err
		}
		if name, ok := names[id]; ok {
			ref.Name = name
		}
		in.Via, in.Label = &ref, in.Name+" via "+ref.Name
	}
	return in, nil
}

// Label is Initiator's label alone.
func (s *Service) Label(ctx context.Context, userID, via string) (string, error) {
	in, err := s.Initiator(ctx, userID, via)
	return in.Label, err
}
