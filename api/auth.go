package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
)

// Authenticator resolves a bearer token to a user id.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (string, error)
}

// userID returns the authenticated user of the request.
func userID(c echo.Context) string {
	id, _ := c.Get("user_id").(string)
	return id
}

// actor returns who asks, as the events the request records name them:
// the authenticated user (or the admin) and the request's id.
func actor(c echo.Context) domain.Actor {
	id, _ := c.Get("actor").(string)
	return domain.Actor{ID: id, RequestID: RequestID(c.Request().Context())}
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

// requireUser authenticates a user token; the token itself is never logged.
func requireUser(auth Authenticator) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearer(c)
			if !ok {
				return errUnauthorized
			}
			id, err := auth.Authenticate(c.Request().Context(), token)
			if errors.Is(err, domain.ErrNotFound) {
				return errUnauthorized
			}
			if err != nil {
				return err
			}
			c.Set("user_id", id)
			c.Set("actor", id)
			return next(c)
		}
	}
}

// requireAdmin checks the admin token in constant time.
func requireAdmin(adminToken string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearer(c)
			if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(adminToken)) != 1 {
				return errUnauthorized
			}
			c.Set("actor", domain.ActorAdmin.ID)
			return next(c)
		}
	}
}
