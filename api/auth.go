package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
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
			if errors.Is(err, gate.ErrNotFound) {
				return errUnauthorized
			}
			if err != nil {
				return err
			}
			c.Set("user_id", id)
			setActor(c, id)
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
			setActor(c, "admin")
			return next(c)
		}
	}
}

// setActor records who acts, and the request id, in the metadata of every
// event the request appends.
func setActor(c echo.Context, actor string) {
	req := c.Request()
	md := eventstore.MetadataFrom(req.Context())
	md.Actor = actor
	md.RequestID = RequestID(req.Context())
	md.CorrelationID = ""
	c.SetRequest(req.WithContext(eventstore.WithMetadata(req.Context(), md)))
}
