package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/opsgate/opsgate/eventstore"
)

// MaxBodyBytes caps every request body (contract section 5).
const MaxBodyBytes = 1 << 20

// Config is what the API needs.
type Config struct {
	Logger *slog.Logger
	Ready  Readiness
	// Routes registers the application endpoints; nil serves health only.
	Routes func(e *echo.Echo)
	// Metrics observes each request; may be nil.
	Metrics RequestObserver
	// RequestTimeout, if positive, is the deadline of each request's
	// context: database work of a request that overstays it is cancelled.
	// Streamed responses (exports of the audit chain, server-sent events) have none: they
	// last as long as what they carry, and end when their client goes away.
	RequestTimeout time.Duration
	// Tracer starts a span per request (but health and metrics scrapes);
	// nil: a no-op tracer, which still carries the caller's trace context
	// to the starts that keep it.
	Tracer trace.Tracer
}

// RequestObserver records request counts and latencies by route.
type RequestObserver interface {
	ObserveRequest(method, route string, status int, elapsed time.Duration)
}

type requestIDKey struct{}

// statusClientClosed is the status logged for a request whose caller went
// away before its answer.
const statusClientClosed = 499

// RequestID returns the id of the request ctx belongs to.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewEcho returns the Echo instance with opsgate's middleware: request
// ids, body cap, panic recovery into a logged 500 problem, structured
// access logs and problem rendering of every error.
func NewEcho(cfg Config) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	logger := cfg.Logger
	outage := newOutageLog(logger, 5*time.Second)
	tracer := cfg.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		if errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
			// The caller went away (a long poll dropped by an executor
			// that stops): nobody reads the answer, and it is no error of
			// ours. Logged with nginx's "client closed request".
			_ = c.NoContent(statusClientClosed)
			return
		}
		if eventstore.IsUnavailable(err) {
			outage.note(c.Request().Context(), err)
			_ = unavailable(c)
			return
		}
		if rerr := renderError(c, err); rerr != nil {
			logger.ErrorContext(c.Request().Context(), "request failed", "err", rerr, "request_id", RequestID(c.Request().Context()))
			_ = problem(c, http.StatusInternalServerError, "internal", "Internal error",
				"Something went wrong on our side; quote request id "+RequestID(c.Request().Context())+".")
		}
	}
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			req := c.Request()
			id := req.Header.Get(echo.HeaderXRequestID)
			if id == "" || len(id) > 128 {
				id = newRequestID()
			}
			c.Response().Header().Set(echo.HeaderXRequestID, id)
			ctx := context.WithValue(req.Context(), requestIDKey{}, id)
			if cfg.RequestTimeout > 0 && !streamed(req) {
				timeout := cfg.RequestTimeout
				if longPoll(req) {
					// A long poll waits up to 30 s before its work begins.
					timeout += maxWaitMS * time.Millisecond
					_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(timeout + 5*time.Second))
				}
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var span trace.Span
			if untraced(c.Path()) {
				span = trace.SpanFromContext(ctx)
			} else {
				ctx, span = startSpan(ctx, tracer, req, routeOf(c))
			}
			req = req.WithContext(ctx)
			// Cap the reader itself: Content-Length can be absent (chunked).
			req.Body = http.MaxBytesReader(c.Response(), req.Body, MaxBodyBytes)
			c.SetRequest(req)
			start := time.Now()
			defer func() {
				if r := recover(); r != nil {
					if r == http.ErrAbortHandler {
						panic(r) // a streamed response cut on purpose
					}
					logger.ErrorContext(ctx, "panic", "request_id", id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					err = problem(c, http.StatusInternalServerError, "internal", "Internal error",
						"Something went wrong on our side; quote request id "+id+".")
				}
				if err != nil {
					c.Error(err)
					err = nil
				}
				status := c.Response().Status
				endSpan(span, status)
				elapsed := time.Since(start)
				if cfg.Metrics != nil {
					cfg.Metrics.ObserveRequest(req.Method, routeOf(c), status, elapsed)
				}
				level := slog.LevelInfo
				if status >= 500 && status != http.StatusServiceUnavailable {
					// 503s are the database's absence or a timeout, logged
					// once per burst; anything else is a bug.
					level = slog.LevelError
				}
				logger.Log(ctx, level, "request", "request_id", id, "method", req.Method, "route", routeOf(c),
					"status", status, "duration_ms", float64(elapsed.Microseconds())/1000)
			}()
			return next(c)
		}
	})
	registerHealth(e, cfg.Ready, logger)
	if cfg.Routes != nil {
		cfg.Routes(e)
	}
	return e
}

// streamed reports whether req asks for a response that lasts as long as
// what it carries: an export of the audit chain (the API's or the
// console's), or server-sent events.
func streamed(req *http.Request) bool {
	return strings.HasSuffix(req.URL.Path, "/audit/export") || req.Header.Get("Accept") == "text/event-stream"
}

// longPoll reports whether req may wait for work before it is answered
// (wait_ms): an executor's claim, a wait on a run, the change feed.
func longPoll(req *http.Request) bool {
	return req.URL.Query().Has("wait_ms") || strings.HasSuffix(req.URL.Path, "/executor/claims")
}

// untraced reports whether requests of route get no span: health checks
// and metrics scrapes, which would drown the rest.
func untraced(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == "/metrics"
}

// routeOf is the route pattern (never the raw path, which holds ids).
func routeOf(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return "unmatched"
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
