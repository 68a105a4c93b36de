package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/tokens"
)

// Integrations, tokens with a lifecycle, users and memberships (contract
// section 13): admin endpoints, and the caller's tenants.

func (h *handlers) createIntegration(c echo.Context) error {
	var body struct {
		WorkspaceID string `json:"workspace_id"`
		Name        string `json:"name"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	ws, err := requiredID("workspace_id", body.WorkspaceID)
	if err != nil {
		return err
	}
	in, err := h.tenancy.CreateIntegration(c.Request().Context(), actor(c), ws, body.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, in)
}

func (h *handlers) listIntegrations(c echo.Context) error {
	list, err := h.tenancy.Integrations(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list})
}

func (h *handlers) revokeIntegration(c echo.Context) error {
	id, err := pathID(c, "integrationId")
	if err != nil {
		return err
	}
	if err := h.tenancy.RevokeIntegration(c.Request().Context(), actor(c), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// ownerParams names the path parameter of each kind of token owner.
var ownerParams = map[string]string{"users": "userId", "integrations": "integrationId", "executors": "executorId"}

// ownerOf reads the token owner of a tokens endpoint of kind.
func ownerOf(c echo.Context, kind string) (tokens.Owner, error) {
	id, err := pathID(c, ownerParams[kind])
	if err != nil {
		return tokens.Owner{}, err
	}
	switch kind {
	case "integrations":
		return tokens.Owner{Kind: domain.OwnerIntegration, ID: id}, nil
	case "executors":
		return tokens.Owner{Kind: domain.OwnerExecutor, ID: id}, nil
	}
	return tokens.Owner{Kind: domain.OwnerUser, ID: id}, nil
}

// issueToken issues a token of an owner of kind: {expires_at?}, RFC 3339
// and in the future (else 422).
func (h *handlers) issueToken(kind string) echo.HandlerFunc {
	return func(c echo.Context) error {
		owner, err := ownerOf(c, kind)
		if err != nil {
			return err
		}
		raw, err := readBody(c)
		if err != nil {
			return err
		}
		var body struct {
			ExpiresAt json.RawMessage `json:"expires_at"`
		}
		if err := decodeStrict(raw, &body, true); err != nil {
			return err
		}
		expires, err := expiry(body.ExpiresAt)
		if err != nil {
			return err
		}
		ctx, by := c.Request().Context(), actor(c)
		var t tokens.Token
		if owner.Kind == domain.OwnerExecutor {
			t, err = h.executors.IssueToken(ctx, by, owner.ID, expires)
		} else {
			t, err = h.tenancy.IssueToken(ctx, by, owner, expires)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, t)
	}
}

// expiry reads an optional expires_at: null or absent for none, else an
// RFC 3339 time (422 otherwise; the service refuses one in the past).
func expiry(raw json.RawMessage) (*time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, domain.Invalid("expires_at", "must be an RFC 3339 time such as 2027-01-31T12:00:00Z")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, domain.Invalid("expires_at", "must be an RFC 3339 time such as 2027-01-31T12:00:00Z")
	}
	return &t, nil
}

func (h *handlers) listTokens(kind string) echo.HandlerFunc {
	return func(c echo.Context) error {
		owner, err := ownerOf(c, kind)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		var list []tokens.Token
		if owner.Kind == domain.OwnerExecutor {
			list, err = h.executors.Tokens(ctx, owner.ID)
		} else {
			list, err = h.tenancy.Tokens(ctx, owner)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"items": list})
	}
}

// revokeToken revokes one token. An executor left without a valid token
// has its leases ended, as a revoked executor's are.
func (h *handlers) revokeToken(kind string) echo.HandlerFunc {
	return func(c echo.Context) error {
		owner, err := ownerOf(c, kind)
		if err != nil {
			return err
		}
		tokenID, err := pathID(c, "tokenId")
		if err != nil {
			return err
		}
		ctx, by := c.Request().Context(), actor(c)
		if owner.Kind != domain.OwnerExecutor {
			if err := h.tenancy.RevokeToken(ctx, by, owner, tokenID); err != nil {
				return err
			}
			return c.NoContent(http.StatusNoContent)
		}
		left, err := h.executors.RevokeToken(ctx, by, owner.ID, tokenID)
		if err != nil {
			return err
		}
		if left == 0 {
			if err := h.endLeases(ctx, by, owner.ID); err != nil {
				return err
			}
		}
		return c.NoContent(http.StatusNoContent)
	}
}

// endLeases ends the runs executor id holds as lost; a failure leaves
// them to their leases, which end the same way.
func (h *handlers) endLeases(ctx context.Context, by domain.Actor, id string) error {
	_, err := h.gate.EndLeasesOf(ctx, by, claimantOf(executors.Executor{ID: id}).ID)
	return err
}

func (h *handlers) updateUser(c echo.Context) error {
	id, err := pathID(c, "userId")
	if err != nil {
		return err
	}
	var body struct {
		Disabled *bool `json:"disabled"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	if body.Disabled == nil {
		return domain.Invalid("disabled", "is required: true or false")
	}
	u, err := h.tenancy.SetDisabled(c.Request().Context(), actor(c), id, *body.Disabled)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// membershipOf reads the user and tenant a membership path names.
func membershipOf(c echo.Context) (user, tenant string, err error) {
	if user, err = pathID(c, "userId"); err != nil {
		return "", "", err
	}
	tenant, err = pathID(c, "tenantId")
	return user, tenant, err
}

func (h *handlers) putMembership(c echo.Context) error {
	user, tenant, err := membershipOf(c)
	if err != nil {
		return err
	}
	var body struct {
		Role string `json:"role"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	m, err := h.tenancy.PutMembership(c.Request().Context(), actor(c), user, tenant, body.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

func (h *handlers) deleteMembership(c echo.Context) error {
	user, tenant, err := membershipOf(c)
	if err != nil {
		return err
	}
	if err := h.tenancy.RevokeMembership(c.Request().Context(), actor(c), user, tenant); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// listTenants lists the caller's tenants (through an integration, the
// on-behalf user's within its workspace) with the caller's role and
// capabilities on each.
func (h *handlers) listTenants(c echo.Context) error {
	list, err := h.tenancy.Tenants(c.Request().Context(), actor(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list})
}
