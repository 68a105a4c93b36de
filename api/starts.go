package api

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

// IdempotencyKeyHeader names the header of idempotent starts.
const IdempotencyKeyHeader = "Idempotency-Key"

// startBody is the body every start accepts; which fields a surface takes
// is checked by startFields.
type startBody struct {
	ProviderConnectionID *string         `json:"provider_connection_id"`
	Confirm              *bool           `json:"confirm"`
	AcknowledgeWarnings  *bool           `json:"acknowledge_warnings"`
	Limits               json.RawMessage `json:"limits"`
	limits               *domain.Limits
}

// decodeStartBody decodes a start's body for surface: tenant-scoped
// surfaces take provider_connection_id, restore execute also its
// safeguards, connection-scoped surfaces nothing.
func decodeStartBody(surface domain.Surface, raw []byte) (startBody, error) {
	var b startBody
	if err := decodeStrict(raw, &b, true); err != nil {
		return b, err
	}
	if surface.Scope != domain.ScopeTenant && b.ProviderConnectionID != nil {
		return b, &badRequest{code: "unknown_field", detail: `json: unknown field "provider_connection_id" is not accepted here`}
	}
	if surface.Operation != domain.OpRestoreExecute && (b.Confirm != nil || b.AcknowledgeWarnings != nil) {
		return b, &badRequest{code: "unknown_field", detail: `json: unknown fields "confirm" and "acknowledge_warnings" belong to restore execution`}
	}
	var err error
	if b.limits, err = decodeLimits(b.Limits); err != nil {
		return b, err
	}
	if b.ProviderConnectionID != nil {
		id, err := optionalID("provider_connection_id", *b.ProviderConnectionID)
		if err != nil {
			return b, err
		}
		if id == "" {
			b.ProviderConnectionID = nil
		} else {
			b.ProviderConnectionID = &id
		}
	}
	return b, nil
}

// requestHash identifies a request for idempotency: method, path and body.
func requestHash(c echo.Context, body []byte) []byte {
	h := sha256.New()
	h.Write([]byte(c.Request().Method + " " + c.Request().URL.Path + "\n"))
	h.Write(body)
	return h.Sum(nil)
}

// dryRunParam reads dry_run (true or false).
func dryRunParam(c echo.Context) (bool, error) {
	switch c.QueryParam("dry_run") {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, badQuery("dry_run must be true or false")
}

// startOrDryRun decides req for real, or as a dry run.
func (h *handlers) startOrDryRun(c echo.Context, req gate.StartRequest, dry bool) error {
	if !dry {
		resp, err := h.gate.Start(c.Request().Context(), req)
		if err != nil {
			return err
		}
		return h.renderStart(c, resp)
	}
	resps, errs, err := h.gate.DryRun(c.Request().Context(), []gate.StartRequest{req})
	if err != nil {
		return err
	}
	if errs[0] != nil {
		return errs[0]
	}
	return c.JSON(StatusOf(resps[0].Result.Outcome), DryRunOf(resps[0].Result))
}

// DryRunResult is a dry run's answer: the StartResult a real start would
// get, with run null where the start would have created it.
type DryRunResult struct {
	Outcome   domain.Outcome    `json:"outcome"`
	Run       *domain.Run       `json:"run"`
	Reason    *domain.Reason    `json:"reason"`
	NextSteps []domain.NextStep `json:"next_steps"`
	Message   domain.Message    `json:"message"`
	DryRun    bool              `json:"dry_run"`
}

// DryRunOf is res as a dry run answers it: no run for accepted and
// blocked (none was created), and no link to it.
func DryRunOf(res domain.StartResult) DryRunResult {
	out := DryRunResult{Outcome: res.Outcome, Reason: res.Reason, NextSteps: res.NextSteps, Message: res.Message, DryRun: true}
	if res.Outcome == domain.OutcomeDeduped || res.Outcome == domain.OutcomeScopeBusy {
		run := res.Run
		out.Run = &run
		return out
	}
	out.NextSteps = make([]domain.NextStep, len(res.NextSteps))
	for i, step := range res.NextSteps {
		if step.Href != nil && *step.Href == domain.RunHref(res.Run.ID) {
			step.Href = nil
		}
		out.NextSteps[i] = step
	}
	return out
}

// start returns the handler of one start surface. Every start endpoint is
// made by this function and calls the one gate; none decides anything.
func (h *handlers) start(surface domain.Surface) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := gate.StartRequest{Actor: actor(c), Surface: surface, TraceContext: traceContextOf(c.Request())}
		dry, err := dryRunParam(c)
		if err != nil {
			return err
		}
		switch surface.Scope {
		case domain.ScopeTenant:
			if req.TenantID, err = pathID(c, "tenantId"); err != nil {
				return err
			}
			if surface.Operation == domain.OpRestoreExecute {
				if req.RestoreRunID, err = pathID(c, "restoreRunId"); err != nil {
					return err
				}
			}
		case domain.ScopeConnection:
			if req.ConnectionID, err = pathID(c, "connectionId"); err != nil {
				return err
			}
		}
		raw, err := readBody(c)
		if err != nil {
			return err
		}
		body, err := decodeStartBody(surface, raw)
		if err != nil {
			return err
		}
		if body.ProviderConnectionID != nil {
			req.ConnectionID = *body.ProviderConnectionID
		}
		req.Confirm = body.Confirm != nil && *body.Confirm
		req.AcknowledgeWarnings = body.AcknowledgeWarnings != nil && *body.AcknowledgeWarnings
		req.Limits = body.limits
		if key := c.Request().Header.Get(IdempotencyKeyHeader); key != "" {
			if len(key) > 255 {
				return &badRequest{code: "invalid_idempotency_key", detail: "Idempotency-Key is longer than 255 characters"}
			}
			req.IdempotencyKey, req.RequestHash = key, requestHash(c, raw)
		}
		return h.startOrDryRun(c, req, dry)
	}
}

func (h *handlers) renderStart(c echo.Context, resp gate.StartResponse) error {
	res := resp.Result
	if resp.Replayed {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	return c.JSON(StatusOf(res.Outcome), res)
}

// StatusOf is the HTTP status of an outcome (contract section 5).
func StatusOf(o domain.Outcome) int {
	switch o {
	case domain.OutcomeAccepted:
		return http.StatusAccepted
	case domain.OutcomeDeduped:
		return http.StatusOK
	case domain.OutcomeScopeBusy:
		return http.StatusConflict
	default:
		return http.StatusUnprocessableEntity
	}
}

// rerunBody is the body of POST /operations/{id}/rerun: a restore's
// safeguards and the limits, as on every start.
type rerunBody struct {
	Confirm             *bool           `json:"confirm"`
	AcknowledgeWarnings *bool           `json:"acknowledge_warnings"`
	Limits              json.RawMessage `json:"limits"`
}

// rerun starts a run's operation again through the gate (contract
// section 12).
func (h *handlers) rerun(c echo.Context) error {
	id, err := pathID(c, "runId")
	if err != nil {
		return err
	}
	dry, err := dryRunParam(c)
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	var body rerunBody
	if err := decodeStrict(raw, &body, true); err != nil {
		return err
	}
	req := gate.RerunRequest{Actor: actor(c), RunID: id,
		Confirm: body.Confirm != nil && *body.Confirm, AcknowledgeWarnings: body.AcknowledgeWarnings != nil && *body.AcknowledgeWarnings}
	if req.Limits, err = decodeLimits(body.Limits); err != nil {
		return err
	}
	if key := c.Request().Header.Get(IdempotencyKeyHeader); key != "" {
		if len(key) > 255 {
			return &badRequest{code: "invalid_idempotency_key", detail: "Idempotency-Key is longer than 255 characters"}
		}
		req.IdempotencyKey, req.RequestHash = key, requestHash(c, raw)
	}
	sr, err := h.gate.RerunStart(c.Request().Context(), req)
	if err != nil {
		return err
	}
	sr.TraceContext = traceContextOf(c.Request())
	return h.startOrDryRun(c, sr, dry)
}
