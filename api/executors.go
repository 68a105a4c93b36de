package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/tokens"
)

// ExecutorSettings are what the executor endpoints need besides the
// services: the lease they hand out, and when to answer a long poll.
type ExecutorSettings struct {
	// Lease is the length of a claim's lease; Heartbeat how often the
	// executor is asked to renew it.
	Lease, Heartbeat time.Duration
	// Accepted returns a channel closed at the next acceptance of a start
	// (in any process).
	Accepted func() <-chan struct{}
	// Draining is closed when the server starts draining: long polls
	// answer at once.
	Draining <-chan struct{}
}

// Limits of the executor endpoints (contract section 9).
const (
	maxClaims      = 100
	maxWaitMS      = 30_000
	maxSummarySize = 16 << 10
)

func (h *handlers) registerExecutor(c echo.Context) error {
	var body struct {
		Name           string    `json:"name"`
		Providers      []string  `json:"providers"`
		OperationTypes *[]string `json:"operation_types"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	var types []string
	if body.OperationTypes != nil {
		types = *body.OperationTypes
		if types == nil {
			types = []string{}
		}
	}
	ex, err := h.executors.Register(c.Request().Context(), actor(c), body.Name, body.Providers, types)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, ex)
}

func (h *handlers) listExecutors(c echo.Context) error {
	list, err := h.executors.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list})
}

func (h *handlers) revokeExecutor(c echo.Context) error {
	id, err := pathID(c, "executorId")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := h.executors.Revoke(ctx, actor(c), id); err != nil {
		return err
	}
	// Its runs end as a lost worker's do; a failure here leaves them to
	// their leases, which end the same way.
	if _, err := h.gate.EndLeasesOf(ctx, actor(c), claimantOf(executors.Executor{ID: id}).ID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// claimantOf is ex as it claims runs.
func claimantOf(ex executors.Executor) gate.Claimant {
	return gate.Claimant{ID: ex.Actor().ID, Actor: ex.Actor(), Providers: ex.Providers, Types: ex.OperationTypes}
}

// requireExecutor authenticates an executor token; user and admin tokens
// are no executor's (401), and executor tokens are nobody's elsewhere.
func requireExecutor(reg *executors.Service, cs Callers) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := bearer(c)
			if !ok || !strings.HasPrefix(token, tokens.Prefix(domain.OwnerExecutor)) {
				return errUnauthorized
			}
			ex, err := reg.Authenticate(c.Request().Context(), token)
			if err != nil {
				if isNotFound(err) {
					return errUnauthorized
				}
				return err
			}
			cs.seen(string(domain.OwnerExecutor))
			if !exemptFromLimits(c.Request()) {
				if err := cs.Limits.limit(c, "executor:"+ex.ID, string(domain.OwnerExecutor)); err != nil {
					return err
				}
			}
			c.Set("executor", ex)
			c.Set("actor", ex.Actor())
			return next(c)
		}
	}
}

func executorOf(c echo.Context) executors.Executor {
	ex, _ := c.Get("executor").(executors.Executor)
	return ex
}

// Claim is one run handed to an executor.
type Claim struct {
	Run        domain.Run      `json:"run"`
	Connection ClaimConnection `json:"connection"`
	Lease      Lease           `json:"lease"`
	// TraceContext is the start's W3C trace context (null: none), so that
	// the executor's work can be linked to the click.
	TraceContext *domain.TraceContext `json:"trace_context"`
}

// ClaimConnection is the pinned connection as an executor needs it.
type ClaimConnection struct {
	ID          string         `json:"id"`
	DisplayName string         `json:"display_name"`
	Provider    string         `json:"provider"`
	Settings    map[string]any `json:"settings"`
}

// Lease is a claim's hold on its run.
type Lease struct {
	Epoch               int64     `json:"epoch"`
	ExpiresAt           time.Time `json:"expires_at"`
	HeartbeatIntervalMS int64     `json:"heartbeat_interval_ms"`
}

func (h *handlers) claim(c echo.Context) error {
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	var body struct {
		Max    *int `json:"max"`
		WaitMS *int `json:"wait_ms"`
	}
	if err := decodeStrict(raw, &body, true); err != nil {
		return err
	}
	max, wait := 1, 0
	if body.Max != nil {
		max = *body.Max
	}
	if body.WaitMS != nil {
		wait = *body.WaitMS
	}
	if max < 1 || max > maxClaims {
		return domain.Invalid("max", "must be a whole number from 1 to %d", maxClaims)
	}
	if wait < 0 || wait > maxWaitMS {
		return domain.Invalid("wait_ms", "must be a whole number from 0 to %d", maxWaitMS)
	}
	ctx := c.Request().Context()
	ex := executorOf(c)
	claimant := claimantOf(ex)
	began := time.Now()
	deadline := time.NewTimer(time.Duration(wait) * time.Millisecond)
	defer deadline.Stop()
	var claimed []gate.Claimed
	for {
		// Take the wake-up before looking, so that an acceptance committed
		// in between is not missed. The wait holds no database connection.
		accepted := h.executor.Accepted()
		if claimed, err = h.gate.Claim(ctx, claimant, max, h.executor.Lease); err != nil {
			return err
		}
		if len(claimed) > 0 || wait == 0 {
			break
		}
		select {
		case <-accepted:
			continue
		case <-deadline.C:
		case <-h.executor.Draining:
		case <-ctx.Done():
			return ctx.Err()
		}
		break
	}
	items := make([]Claim, 0, len(claimed))
	for _, cl := range claimed {
		items = append(items, h.claimOf(c, cl))
	}
	if h.metrics != nil {
		h.metrics.ObserveClaims(ex.ID, len(items), time.Since(began))
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// claimOf is cl as the executor receives it, with its connection's
// non-secret settings.
func (h *handlers) claimOf(c echo.Context, cl gate.Claimed) Claim {
	out := Claim{Run: cl.Run, Lease: Lease{Epoch: cl.Epoch, ExpiresAt: cl.ExpiresAt, HeartbeatIntervalMS: h.executor.Heartbeat.Milliseconds()},
		TraceContext: cl.TraceContext}
	ref := cl.Run.ProviderConnection
	out.Connection = ClaimConnection{ID: ref.ID, DisplayName: ref.DisplayName, Provider: ref.Provider, Settings: map[string]any{}}
	if cl.Connection != nil {
		out.Connection.Settings = settingsOf(*cl.Connection)
	}
	return out
}

// settingsOf are the non-secret settings of a connection: none are
// secret today; the simulated provider's behaviour is the only one.
func settingsOf(conn connections.Connection) map[string]any {
	settings := map[string]any{}
	if conn.Simulation != nil {
		settings["simulation"] = conn.Simulation
	}
	return settings
}

func (h *handlers) heartbeat(c echo.Context) error {
	id, err := pathID(c, "runId")
	if err != nil {
		return err
	}
	var body struct {
		Epoch *int64 `json:"epoch"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	if body.Epoch == nil {
		return domain.Invalid("epoch", "is required: the epoch of the claim's lease")
	}
	ex := executorOf(c)
	expires, err := h.gate.Heartbeat(c.Request().Context(), claimantOf(ex), id, *body.Epoch, h.executor.Lease)
	if err != nil {
		h.observeLoss(ex, err)
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"expires_at": expires})
}

func (h *handlers) complete(c echo.Context) error {
	id, err := pathID(c, "runId")
	if err != nil {
		return err
	}
	var body struct {
		Epoch        *int64          `json:"epoch"`
		Status       string          `json:"status"`
		ReasonCode   *string         `json:"reason_code"`
		Summary      json.RawMessage `json:"summary"`
		Observations *struct {
			Consent     *string `json:"consent"`
			Credentials *string `json:"credentials"`
		} `json:"observations"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	done := gate.Completion{RunID: id}
	if body.Epoch == nil {
		return domain.Invalid("epoch", "is required: the epoch of the claim's lease")
	}
	done.Epoch = *body.Epoch
	switch domain.RunStatus(body.Status) {
	case domain.StatusSucceeded, domain.StatusFailed:
		done.Status = domain.RunStatus(body.Status)
	default:
		return domain.Invalid("status", "must be succeeded or failed")
	}
	switch {
	case done.Status == domain.StatusFailed && body.ReasonCode == nil:
		return domain.Invalid("reason_code", "is required when the run failed")
	case done.Status == domain.StatusSucceeded && body.ReasonCode != nil:
		return domain.Invalid("reason_code", "is only for a failed run")
	case body.ReasonCode != nil:
		done.Reason = domain.ReasonCode(*body.ReasonCode)
		if !done.Reason.Reported() {
			return domain.Invalid("reason_code", "%q is not a reason found during execution (provider.credentials_rejected, provider.consent_revoked, provider.throttled, provider.unavailable)", *body.ReasonCode)
		}
	}
	if s := body.Summary; len(s) > 0 && string(s) != "null" {
		if len(s) > maxSummarySize {
			return domain.Invalid("summary", "is larger than 16 KiB")
		}
		var obj map[string]any
		if json.Unmarshal(s, &obj) != nil || obj == nil {
			return domain.Invalid("summary", "must be a JSON object")
		}
		if err := audit.CheckCanonical(s); err != nil {
			// The history must be chainable (audit/record.go).
			return domain.Invalid("summary", "has no canonical JSON form (RFC 8785): %v", err)
		}
		done.Summary = s
	}
	if o := body.Observations; o != nil {
		if v := o.Consent; v != nil {
			consent := domain.Consent(*v)
			if consent != domain.ConsentGranted && consent != domain.ConsentRevoked {
				return domain.Invalid("observations.consent", "must be granted or revoked")
			}
			done.Observations.Consent = &consent
		}
		if v := o.Credentials; v != nil {
			creds := domain.Credentials(*v)
			if creds != domain.CredentialsValid && creds != domain.CredentialsInvalid {
				return domain.Invalid("observations.credentials", "must be valid or invalid")
			}
			done.Observations.Credentials = &creds
		}
	}
	ex := executorOf(c)
	run, repeated, err := h.gate.Complete(c.Request().Context(), claimantOf(ex), done)
	if err != nil {
		h.observeLoss(ex, err)
		return err
	}
	if h.metrics != nil && !repeated {
		h.metrics.ObserveCompletion(ex.ID, string(done.Status))
	}
	return c.JSON(http.StatusOK, run)
}

func isNotFound(err error) bool { return errors.Is(err, domain.ErrNotFound) }

func isLeaseLost(err error) bool { return errors.Is(err, gate.ErrLeaseLost) }

// observeLoss counts a lease loss an executor learned of.
func (h *handlers) observeLoss(ex executors.Executor, err error) {
	if h.metrics != nil && isLeaseLost(err) {
		h.metrics.ObserveLeaseLoss(ex.ID)
	}
}
