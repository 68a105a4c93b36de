package api

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/projections"
)

// maxBatch bounds the items of a batch start and of a bulk cancel.
const maxBatch = 500

// BatchItemResult is one item's answer: the status it alone would have
// got, and its StartResult (or dry run) or its problem.
type BatchItemResult struct {
	Status  int      `json:"status"`
	Result  any      `json:"result"`
	Problem *Problem `json:"problem"`
}

// batchItem is one start of a batch.
type batchItem struct {
	Surface              string          `json:"surface"`
	TenantID             string          `json:"tenant_id"`
	ProviderConnectionID string          `json:"provider_connection_id"`
	RestoreRunID         string          `json:"restore_run_id"`
	Confirm              *bool           `json:"confirm"`
	AcknowledgeWarnings  *bool           `json:"acknowledge_warnings"`
	Limits               json.RawMessage `json:"limits"`
	IdempotencyKey       string          `json:"idempotency_key"`
}

// envelope decodes a batch's {<name>: [...]} with 1 to maxBatch items;
// anything else is 422 for the whole request.
func envelope(c echo.Context, name string) ([]json.RawMessage, error) {
	raw, err := readBody(c)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		return nil, domain.Invalid(name, "the body must be an object {%q: [...]}", name)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body[name], &items); err != nil || len(body) != 1 {
		return nil, domain.Invalid(name, "the body must be an object with %q, a list, and nothing else", name)
	}
	if len(items) == 0 || len(items) > maxBatch {
		return nil, domain.Invalid(name, "must hold 1 to %d items, not %d", maxBatch, len(items))
	}
	return items, nil
}

// requestOf turns one batch item into the start it stands for.
func (h *handlers) requestOf(c echo.Context, raw json.RawMessage) (gate.StartRequest, error) {
	var item batchItem
	if err := decodeStrict(raw, &item, false); err != nil {
		return gate.StartRequest{}, err
	}
	surface, ok := domain.LookupSurface(item.Surface)
	if !ok || surface.Scope == domain.ScopeOnboarding {
		return gate.StartRequest{}, domain.Invalid("surface", "%q is not a start surface of a batch (%s)", item.Surface, "tenant_verification, directory_groups_sync, role_definitions_sync, restore_execute, connection_check, inventory_sync, compliance_snapshot")
	}
	req := gate.StartRequest{Actor: actor(c), Surface: surface, TraceContext: traceContextOf(c.Request())}
	var err error
	switch surface.Scope {
	case domain.ScopeTenant:
		if req.TenantID, err = requiredID("tenant_id", item.TenantID); err != nil {
			return req, err
		}
		if req.ConnectionID, err = optionalID("provider_connection_id", item.ProviderConnectionID); err != nil {
			return req, err
		}
		if surface.Operation == domain.OpRestoreExecute {
			if req.RestoreRunID, err = requiredID("restore_run_id", item.RestoreRunID); err != nil {
				return req, err
			}
		}
	case domain.ScopeConnection:
		if req.ConnectionID, err = requiredID("provider_connection_id", item.ProviderConnectionID); err != nil {
			return req, err
		}
	}
	if surface.Operation != domain.OpRestoreExecute && (item.Confirm != nil || item.AcknowledgeWarnings != nil || item.RestoreRunID != "") {
		return req, &badRequest{code: "unknown_field", detail: "restore_run_id, confirm and acknowledge_warnings belong to restore execution"}
	}
	req.Confirm = item.Confirm != nil && *item.Confirm
	req.AcknowledgeWarnings = item.AcknowledgeWarnings != nil && *item.AcknowledgeWarnings
	if req.Limits, err = decodeLimits(item.Limits); err != nil {
		return req, err
	}
	if item.IdempotencyKey != "" {
		if len(item.IdempotencyKey) > 255 {
			return req, &badRequest{code: "invalid_idempotency_key", detail: "idempotency_key is longer than 255 characters"}
		}
		sum := sha256.Sum256(append([]byte("batch item\n"), raw...))
		req.IdempotencyKey, req.RequestHash = item.IdempotencyKey, sum[:]
	}
	return req, nil
}

// itemProblem is the answer of an item that failed alone; ok is false for
// a failure that is not the item's (the database), which fails the whole
// request.
func itemProblem(err error) (BatchItemResult, bool) {
	p := ProblemOf(err)
	if p == nil {
		return BatchItemResult{}, false
	}
	return BatchItemResult{Status: p.Status, Problem: p}, true
}

// batchStart decides up to 500 starts, each as if it had been sent alone,
// in order (contract section 15).
func (h *handlers) batchStart(c echo.Context) error {
	dry, err := dryRunParam(c)
	if err != nil {
		return err
	}
	items, err := envelope(c, "items")
	if err != nil {
		return err
	}
	out := make([]BatchItemResult, len(items))
	var reqs []gate.StartRequest
	var at []int
	for i, raw := range items {
		req, err := h.requestOf(c, raw)
		if err != nil {
			if out[i], _ = itemProblem(err); out[i].Problem == nil {
				return err
			}
			continue
		}
		reqs, at = append(reqs, req), append(at, i)
	}
	ctx := c.Request().Context()
	var resps []gate.StartResponse
	var errs []error
	if dry {
		if resps, errs, err = h.gate.DryRun(ctx, reqs); err != nil {
			return err
		}
	} else {
		resps, errs = h.gate.StartMany(ctx, reqs)
	}
	for j, i := range at {
		if errs[j] != nil {
			var ok bool
			if out[i], ok = itemProblem(errs[j]); !ok {
				return errs[j]
			}
			continue
		}
		res := resps[j].Result
		out[i] = BatchItemResult{Status: StatusOf(res.Outcome), Result: res}
		if dry {
			out[i].Result = DryRunOf(res)
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"items": out})
}

// CancelItem is one run's answer in a bulk cancel.
type CancelItem struct {
	RunID   string      `json:"run_id"`
	Status  int         `json:"status"`
	Run     *domain.Run `json:"run"`
	Problem *Problem    `json:"problem"`
}

// cancelOne cancels run id (a malformed id is its own problem) and
// returns the run as the cancel left it.
func (h *handlers) cancelOne(c echo.Context, id string) (domain.Run, error) {
	id, err := optionalID("ids", id)
	if err != nil {
		return domain.Run{}, err
	}
	if id == "" {
		return domain.Run{}, invalidID("ids")
	}
	cancelled, err := h.gate.CancelRun(c.Request().Context(), actor(c), id)
	if err != nil {
		return domain.Run{}, err
	}
	run, _ := domain.Ended(cancelled)
	return run, nil
}

// cancelMany cancels runs by ids, or those a filter matches (at most 500),
// each as if alone.
func (h *handlers) cancelMany(c echo.Context) error {
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	var body struct {
		IDs    []string `json:"ids"`
		Filter *struct {
			TenantID             string `json:"tenant_id"`
			Type                 string `json:"type"`
			ProviderConnectionID string `json:"provider_connection_id"`
			Status               string `json:"status"`
		} `json:"filter"`
	}
	if err := decodeStrict(raw, &body, false); err != nil {
		return err
	}
	ctx := c.Request().Context()
	var ids []string
	switch {
	case body.IDs != nil && body.Filter == nil:
		if len(body.IDs) == 0 || len(body.IDs) > maxBatch {
			return domain.Invalid("ids", "must hold 1 to %d run ids, not %d", maxBatch, len(body.IDs))
		}
		ids = body.IDs
	case body.Filter != nil && body.IDs == nil:
		f := projections.RunFilter{Limit: maxBatch + 1}
		tenant, err := requiredID("filter.tenant_id", body.Filter.TenantID)
		if err != nil {
			return err
		}
		if err := h.tenancy.Authorize(ctx, actor(c), tenant, domain.CapOperationsView); err != nil {
			return err
		}
		f.TenantIDs = []string{tenant}
		if f.ConnectionID, err = optionalID("filter.provider_connection_id", body.Filter.ProviderConnectionID); err != nil {
			return err
		}
		if t := body.Filter.Type; t != "" {
			op, ok := domain.LookupOperation(t)
			if !ok {
				return domain.Invalid("filter.type", "%q is not an operation type", t)
			}
			f.CanonicalType = op.Canonical
		}
		statuses := []string{string(domain.StatusQueued), string(domain.StatusRunning)}
		if s := body.Filter.Status; s != "" {
			if st, ok := domain.ParseRunStatus(s); !ok || !st.Active() {
				return domain.Invalid("filter.status", "must be queued or running: only those can be cancelled")
			}
			statuses = []string{s}
		}
		for _, s := range statuses {
			f.Status = s
			runs, _, err := h.reader.ListRuns(ctx, f)
			if err != nil {
				return err
			}
			for _, r := range runs {
				ids = append(ids, r.ID)
			}
		}
		if len(ids) > maxBatch {
			return &badRequest{code: "too_many_runs", code4: http.StatusUnprocessableEntity,
				detail: "More than " + strconv.Itoa(maxBatch) + " runs match the filter; nothing was cancelled. Narrow it (type, provider_connection_id, status)."}
		}
	default:
		return domain.Invalid("ids", "send either ids (1 to %d run ids) or filter {tenant_id, type?, provider_connection_id?, status?}", maxBatch)
	}
	out := make([]CancelItem, len(ids))
	for i, id := range ids {
		out[i].RunID = id
		run, err := h.cancelOne(c, id)
		if err != nil {
			p := ProblemOf(err)
			if p == nil {
				return err
			}
			out[i].Status, out[i].Problem = p.Status, p
			continue
		}
		out[i].Status, out[i].Run = http.StatusOK, &run
	}
	return c.JSON(http.StatusOK, map[string]any{"items": out})
}
