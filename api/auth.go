package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/tokens"
)

// OnBehalfOfHeader names the user a request with an integration token acts
// for (contract section 13).
const OnBehalfOfHeader = "Opsgate-On-Behalf-Of"

// Callers resolves who sends a request: the owner of a bearer token, and
// for an integration the user it acts for.
type Callers struct {
	// Tokens authenticates bearer tokens (tokens.Service).
	Tokens interface {
		Authenticate(ctx context.Context, token string) (tokens.Owner, error)
	}
	// OnBehalf resolves an integration's request on behalf of a user
	// (tenancy.Service).
	OnBehalf interface {
		OnBehalf(ctx context.Context, integrationID, userID, requestID string) (domain.Actor, error)
	}
	// Seen, if set, counts each authenticated request by the kind of its
	// token (user, integration, executor, admin).
	Seen func(kind string)
	// Limits, if set, bounds each caller's rate (contract section 16).
	Limits *RateLimits
}

func (cs Callers) seen(kind string) {
	if cs.Seen != nil {
		cs.Seen(kind)
	}
}

// actor returns who asks, as the events the request records name them:
// the authenticated user (through an integration, if so), or the admin,
// or an executor, with the request's id.
func actor(c echo.Context) domain.Actor {
	a, _ := c.Get("actor").(domain.Actor)
	a.RequestID = RequestID(c.Request().Context())
	return a
}

func bearer(c echo.Context) (string, bool) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// requireUser authenticates a user's token, or an integration's token on
// behalf of the user that Opsgate-On-Behalf-Of names (authorized, from
// then on, exactly as that user, within the integration's workspace).
// Executor tokens answer 401. The token itself is never logged.
func requireUser(cs Callers) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearer(c)
			if !ok {
				return errUnauthorized
			}
			ctx := c.Request().Context()
			owner, err := cs.Tokens.Authenticate(ctx, token)
			if errors.Is(err, domain.ErrNotFound) {
				return errUnauthorized
			}
			if err != nil {
				return err
			}
			var who domain.Actor
			switch owner.Kind {
			case domain.OwnerUser:
				who = domain.Actor{ID: owner.ID}
			case domain.OwnerIntegration:
				if who, err = onBehalf(c, cs, owner.ID); err != nil {
					return err
				}
			default:
				return errUnauthorized
			}
			cs.seen(string(owner.Kind))
			key := string(owner.Kind) + ":" + owner.ID
			if owner.Kind == domain.OwnerIntegration {
				key += "/" + who.ID // each user the platform acts for has a rate of their own
			}
			if err := cs.Limits.limit(c, key, string(owner.Kind)); err != nil {
				return err
			}
			c.Set("actor", who)
			return next(c)
		}
	}
}

// onBehalf resolves integration's request to the user it names.
func onBehalf(c echo.Context, cs Callers, integration string) (domain.Actor, error) {
	user := strings.TrimSpace(c.Request().Header.Get(OnBehalfOfHeader))
	if user == "" {
		return domain.Actor{}, &badRequest{code: "on_behalf_of_required",
			detail: "An integration's token acts for a user: name the user in the " + OnBehalfOfHeader + " header."}
	}
	who, err := cs.OnBehalf.OnBehalf(c.Request().Context(), integration, strings.ToUpper(user), RequestID(c.Request().Context()))
	switch {
	case errors.Is(err, tenancy.ErrOnBehalfRefused):
		return domain.Actor{}, &badRequest{code: "on_behalf_of_refused", code4: http.StatusForbidden,
			detail: "This integration may not act for the user " + OnBehalfOfHeader + " names: unknown, disabled, or a member of no tenant of the integration's workspace."}
	case errors.Is(err, domain.ErrNotFound):
		return domain.Actor{}, errUnauthorized // revoked meanwhile
	}
	return who, err
}

// requireAdmin checks the admin token in constant time; every other token
// answers 401.
func requireAdmin(adminToken string, cs Callers) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearer(c)
			if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(adminToken)) != 1 {
				return errUnauthorized
			}
			cs.seen("admin")
			if err := cs.Limits.limit(c, "admin", "admin"); err != nil {
				return err
			}
			c.Set("actor", domain.ActorAdmin)
			return next(c)
		}
	}
}
