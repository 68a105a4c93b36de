package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/webhooks"
)

// Problem is an RFC 9457 problem document with a stable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	// retryAfter is the Retry-After header of the answer ("" for none).
	retryAfter string
}

const problemContentType = "application/problem+json"

func newProblem(status int, code, title, detail string) *Problem {
	return &Problem{Type: "https://opsgate.dev/problems/" + code, Title: title, Status: status, Detail: detail, Code: code}
}

// retryLater is a 503 problem whose answer says when to try again.
func retryLater(status int, code, title, detail string) *Problem {
	p := newProblem(status, code, title, detail)
	p.retryAfter = "1"
	return p
}

func writeProblem(c echo.Context, p *Problem) error {
	body, _ := json.Marshal(p)
	return c.Blob(p.Status, problemContentType, body)
}

func problem(c echo.Context, status int, code, title, detail string) error {
	return writeProblem(c, newProblem(status, code, title, detail))
}

// notFoundProblem is byte-for-byte the same for an id that does not exist
// and for one in a tenant where the caller is no member.
func notFoundProblem() *Problem {
	return newProblem(http.StatusNotFound, "not_found", "Not found", "The resource does not exist or you have no access to it.")
}

// renderError answers err as its problem (ProblemOf), or returns it when
// it is not an application error.
func renderError(c echo.Context, err error) error {
	p := ProblemOf(err)
	if p == nil {
		return err
	}
	if p.retryAfter != "" {
		c.Response().Header().Set("Retry-After", p.retryAfter)
	}
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="opsgate"`)
	}
	return writeProblem(c, p)
}

// ProblemOf maps an application error to its problem, in one place: the
// API answers it as JSON, the console as a page. It is nil for an error
// that is not the application's (a failure to report as internal).
func ProblemOf(err error) *Problem {
	var forbidden *domain.ForbiddenError
	var validation *domain.ValidationError
	var maxBytes *http.MaxBytesError
	var httpErr *echo.HTTPError
	var unknownOp *onboarding.UnknownOperationError
	var leaseLost *gate.LeaseLostError
	var limited *rateLimited
	if p := auditProblem(err); p != nil {
		return p
	}
	switch {
	case errors.Is(err, domain.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		return notFoundProblem()
	case errors.As(err, &forbidden):
		return newProblem(http.StatusForbidden, "forbidden", "Forbidden",
			fmt.Sprintf("This needs the capability %s on the tenant.", forbidden.Capability))
	case errors.As(err, &validation):
		return newProblem(http.StatusUnprocessableEntity, "validation_failed", "Invalid request", validation.Error())
	case errors.As(err, &maxBytes):
		return newProblem(http.StatusRequestEntityTooLarge, "payload_too_large", "Request body too large",
			"Request bodies are limited to 1 MiB.")
	case errors.Is(err, gate.ErrConfirmationRequired):
		return newProblem(http.StatusUnprocessableEntity, "confirmation_required", "Confirmation required",
			`Restore execution is destructive: send "confirm": true to start it.`)
	case errors.Is(err, gate.ErrWarningsNotAcknowledged):
		return newProblem(http.StatusUnprocessableEntity, "warnings_not_acknowledged", "Warnings not acknowledged",
			`The restore run's preview produced warnings: review them and send "acknowledge_warnings": true.`)
	case errors.Is(err, domain.ErrInvalidLimits):
		return newProblem(http.StatusUnprocessableEntity, "invalid_limits", "Invalid limits", err.Error())
	case errors.Is(err, gate.ErrIdempotencyKeyReused):
		return newProblem(http.StatusUnprocessableEntity, "idempotency_key_reused", "Idempotency key reused",
			"This Idempotency-Key was used before with a different request.")
	case errors.Is(err, webhooks.ErrURLRefused):
		return newProblem(http.StatusUnprocessableEntity, "webhook_url_refused", "Webhook URL refused",
			strings.TrimPrefix(err.Error(), webhooks.ErrURLRefused.Error()+": ")+
				". Deliveries may not reach loopback, private, link-local or unspecified addresses (OPSGATE_WEBHOOK_ALLOW_PRIVATE=true allows them).")
	case errors.Is(err, domain.ErrConflict):
		return newProblem(http.StatusConflict, "conflict", "Conflict", err.Error())
	case errors.As(err, &leaseLost):
		return newProblem(http.StatusConflict, "lease_lost", "Lease lost",
			fmt.Sprintf("The lease on run %s is gone: %s. Stop working on it; nothing more it reports will count.", leaseLost.RunID, leaseLostDetail(leaseLost.Why)))
	case errors.Is(err, gate.ErrRunActive):
		return newProblem(http.StatusConflict, "run_active", "Run still active",
			"Only a run that ended (blocked, succeeded, failed or cancelled) can be run again; this one is still queued or running.")
	case errors.Is(err, domain.ErrRunNotActive):
		return newProblem(http.StatusConflict, "run_not_active", "Run not active",
			"Only a queued or running run can be cancelled.")
	case errors.Is(err, onboarding.ErrBootstrapInProgress):
		return newProblem(http.StatusConflict, "bootstrap_in_progress", "Bootstrap in progress",
			"A bootstrap operation of this session is still queued or running; the next starts when it succeeds.")
	case errors.Is(err, onboarding.ErrBootstrapRequested):
		return newProblem(http.StatusConflict, "bootstrap_already_requested", "Bootstrap already requested",
			"This session's bootstrap was requested before; use bootstrap/continue to retry pending operations.")
	case errors.Is(err, onboarding.ErrNothingToContinue):
		return newProblem(http.StatusConflict, "nothing_to_continue", "Nothing to continue",
			"This session has no pending bootstrap operations.")
	case errors.As(err, &unknownOp):
		return newProblem(http.StatusBadRequest, "unknown_operation_type", "Unknown operation type", unknownOp.Error())
	case errors.As(err, &limited):
		p := newProblem(http.StatusTooManyRequests, "rate_limited", "Too many requests",
			fmt.Sprintf("This caller sent more requests than it may (see the RateLimit-Policy header); nothing was recorded. Try again in %d s.", limited.retryAfter))
		p.retryAfter = strconv.Itoa(limited.retryAfter)
		return p
	case errors.Is(err, gate.ErrOverloaded):
		return retryLater(http.StatusServiceUnavailable, "overloaded", "Overloaded",
			"More starts are waiting to be decided than opsgate takes at once; nothing was recorded. Try again after the Retry-After delay.")
	case errors.Is(err, context.DeadlineExceeded):
		return retryLater(http.StatusServiceUnavailable, "request_timeout", "Request timed out",
			"The request took longer than the server allows; nothing was recorded unless the answer said so. Try again.")
	case errors.Is(err, errUnauthorized):
		return newProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized", "Send a valid bearer token.")
	case errors.As(err, &httpErr):
		return httpProblem(httpErr)
	}
	var bad *badRequest
	if errors.As(err, &bad) {
		return newProblem(bad.status(), bad.code, bad.title(), bad.detail)
	}
	return nil
}

func httpProblem(he *echo.HTTPError) *Problem {
	switch he.Code {
	case http.StatusNotFound:
		return notFoundProblem()
	case http.StatusMethodNotAllowed:
		return newProblem(he.Code, "method_not_allowed", "Method not allowed", "This path does not take this method.")
	case http.StatusRequestEntityTooLarge:
		return newProblem(he.Code, "payload_too_large", "Request body too large", "Request bodies are limited to 1 MiB.")
	case http.StatusUnsupportedMediaType:
		return newProblem(he.Code, "unsupported_media_type", "Unsupported media type", "Send application/json.")
	}
	if he.Code >= 400 && he.Code < 500 {
		return newProblem(he.Code, "bad_request", http.StatusText(he.Code), fmt.Sprint(he.Message))
	}
	return newProblem(http.StatusInternalServerError, "internal", "Internal error", "Something went wrong on our side.")
}

// leaseLostDetail words why a lease is gone.
func leaseLostDetail(why string) string {
	switch why {
	case "reaped":
		return "it expired and the run was ended as lost (or the executor was revoked)"
	case "cancelled":
		return "an operator cancelled the run"
	case "completed":
		return "the run was completed already"
	case "not started":
		return "the run was never claimed"
	case "timed out":
		return "the run ran past its finish_by deadline and was ended as timed out"
	}
	return "another executor holds the run"
}

// badRequest is a request that could not be parsed or validated.
type badRequest struct {
	code   string
	detail string
	code4  int
}

func (b *badRequest) Error() string { return b.code + ": " + b.detail }
func (b *badRequest) status() int {
	if b.code4 != 0 {
		return b.code4
	}
	return http.StatusBadRequest
}
func (b *badRequest) title() string {
	switch b.code {
	case "malformed_json":
		return "Malformed JSON"
	case "unknown_field":
		return "Unknown field"
	case "invalid_id":
		return "Invalid id"
	case "invalid_limits":
		return "Invalid limits"
	}
	return "Bad request"
}

func malformed(format string, args ...any) error {
	return &badRequest{code: "malformed_json", detail: fmt.Sprintf(format, args...)}
}

func invalidID(name string) error {
	return &badRequest{code: "invalid_id", detail: fmt.Sprintf("%s is not a ULID", name)}
}

var errUnauthorized = errors.New("unauthorized")
