package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// retryAfterUnavailable is how long a client is asked to wait before it
// tries again while the database is unavailable: about what a restart of
// the database takes.
const retryAfterUnavailable = 2 * time.Second

// unavailable answers 503 database_unavailable with Retry-After.
func unavailable(c echo.Context) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(int(retryAfterUnavailable/time.Second)))
	return problem(c, http.StatusServiceUnavailable, "database_unavailable", "Database unavailable",
		"The database cannot be reached right now; try again after the Retry-After delay. "+
			"A start that was answered this way may or may not have been recorded: repeat it with the same Idempotency-Key to learn its outcome once.")
}

// outageLog logs database unavailability once per burst of answers rather
// than once per request: the first answer of a burst logs a warning with
// its cause, and the burst's end (no such answer for quiet) logs how many
// requests were answered 503 during it.
type outageLog struct {
	logger *slog.Logger
	quiet  time.Duration

	mu    sync.Mutex
	count int       // answers in the current burst; 0: no burst
	first time.Time // the burst's first answer
	last  time.Time // its latest
}

func newOutageLog(logger *slog.Logger, quiet time.Duration) *outageLog {
	return &outageLog{logger: logger, quiet: quiet}
}

// note records one request answered 503 because of err.
func (o *outageLog) note(ctx context.Context, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	o.last = now
	o.count++
	if o.count > 1 {
		return
	}
	o.first = now
	o.logger.WarnContext(ctx, "database unavailable: answering 503 database_unavailable until it returns", "err", err)
	time.AfterFunc(o.quiet, o.endIfQuiet)
}

// endIfQuiet ends the burst once quiet has passed since its last answer,
// or looks again when that will be.
func (o *outageLog) endIfQuiet() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if wait := o.quiet - time.Since(o.last); wait > 0 {
		time.AfterFunc(wait, o.endIfQuiet)
		return
	}
	o.logger.Info("database reachable again (no unavailable answer for a while)",
		"answered_503", o.count, "burst_seconds", o.last.Sub(o.first).Seconds())
	o.count = 0
}
