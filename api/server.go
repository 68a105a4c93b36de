// Package api is opsgate's REST API on Echo: thin handlers that parse a
// request, call one application function and render its answer. Errors
// become application/problem+json in one place (problems.go).
package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// Readiness reports whether the service can take traffic.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Health answers /healthz (the process is up) and /readyz (the database is
// reachable and migrated).
type Health struct {
	Migrated *atomic.Bool
	Ping     func(ctx context.Context) error
}

// Ready reports nil once migrations ran and the database answers.
func (h Health) Ready(ctx context.Context) error {
	if h.Migrated != nil && !h.Migrated.Load() {
		return errNotMigrated
	}
	if h.Ping == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.Ping(ctx)
}

type notMigrated struct{}

func (notMigrated) Error() string { return "database not migrated yet" }

var errNotMigrated error = notMigrated{}

func registerHealth(e *echo.Echo, ready Readiness, logger *slog.Logger) {
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		if err := ready.Ready(c.Request().Context()); err != nil {
			logger.DebugContext(c.Request().Context(), "not ready", "err", err)
			c.Response().Header().Set("Retry-After", "1")
			return problem(c, http.StatusServiceUnavailable, "not_ready", "Not ready", err.Error())
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
}
