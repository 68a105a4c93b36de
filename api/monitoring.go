package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/tenancy"
)

// RunDetail is GET /operations/{id}: the run, the presenter's wording of
// it, and the counts of later starts answered with it.
type RunDetail struct {
	domain.Run
	Message        domain.Message    `json:"message"`
	NextSteps      []domain.NextStep `json:"next_steps"`
	DedupedCount   int               `json:"deduped_count"`
	ScopeBusyCount int               `json:"scope_busy_count"`
	// Summary is what the run's executor reported (null: nothing).
	Summary json.RawMessage `json:"summary"`
	// ConnectionChanges is what the run changed on its connection's
	// readiness (null: nothing).
	ConnectionChanges *domain.ReadinessChange `json:"connection_changes"`
	// InitiatedBy names who started the run ("<user> via <integration>").
	InitiatedBy tenancy.Initiator `json:"initiated_by"`
}

// detailOf is v as its detail shows it.
func (h *handlers) detailOf(ctx context.Context, v projections.RunView) (RunDetail, error) {
	msg, steps := domain.PresentRun(v.Run)
	summary := v.Summary
	if len(summary) == 0 {
		summary = json.RawMessage("null")
	}
	by, err := h.tenancy.Initiator(ctx, v.InitiatorID, v.InitiatedVia)
	if err != nil {
		return RunDetail{}, err
	}
	return RunDetail{Run: v.Run, Message: msg, NextSteps: steps, DedupedCount: v.DedupedCount, ScopeBusyCount: v.ScopeBusyCount,
		Summary: summary, ConnectionChanges: v.Changes, InitiatedBy: by}, nil
}

// Page is a page of a list with the cursor of the next one.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func page[T any](items []T, next string) Page[T] {
	p := Page[T]{Items: items}
	if next != "" {
		p.NextCursor = &next
	}
	return p
}

func badQuery(detail string) error {
	return &badRequest{code: "invalid_query", detail: detail}
}

func limitParam(c echo.Context) (int, error) {
	v := c.QueryParam("limit")
	if v == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 200 {
		return 0, badQuery("limit must be a whole number from 1 to 200")
	}
	return n, nil
}

func (h *handlers) listOperations(c echo.Context) error {
	ctx := c.Request().Context()
	f := projections.RunFilter{}
	var err error
	if f.Limit, err = limitParam(c); err != nil {
		return err
	}
	tenant, err := optionalID("tenant_id", c.QueryParam("tenant_id"))
	if err != nil {
		return err
	}
	if f.ConnectionID, err = optionalID("provider_connection_id", c.QueryParam("provider_connection_id")); err != nil {
		return err
	}
	if f.Cursor, err = optionalID("cursor", c.QueryParam("cursor")); err != nil {
		return err
	}
	if s := c.QueryParam("status"); s != "" {
		if _, ok := domain.ParseRunStatus(s); !ok {
			return badQuery("status must be one of blocked, queued, running, succeeded, failed, cancelled")
		}
		f.Status = s
	}
	if t := c.QueryParam("type"); t != "" {
		op, ok := domain.LookupOperation(t)
		if !ok {
			return &badRequest{code: "unknown_operation_type", detail: strconv.Quote(t) + " is not an operation type"}
		}
		f.CanonicalType = op.Canonical
	}
	if tenant != "" {
		if err := h.tenancy.Authorize(ctx, actor(c), tenant, domain.CapOperationsView); err != nil {
			return err
		}
		f.TenantIDs = []string{tenant}
	} else if f.TenantIDs, err = h.tenancy.MemberTenants(ctx, actor(c), domain.CapOperationsView); err != nil {
		return err
	}
	runs, next, err := h.reader.ListRuns(ctx, f)
	if err != nil {
		return err
	}
	items := make([]domain.Run, len(runs))
	for i, r := range runs {
		items[i] = r.Run
	}
	return c.JSON(http.StatusOK, page(items, next))
}

// visibleRun returns a run the caller may view, else domain.ErrNotFound.
func (h *handlers) visibleRun(c echo.Context) (projections.RunView, error) {
	id, err := pathID(c, "runId")
	if err != nil {
		return projections.RunView{}, err
	}
	return h.reader.VisibleRun(c.Request().Context(), h.tenancy, actor(c), id)
}

func (h *handlers) getOperation(c echo.Context) error {
	asOf, past, err := asOfParam(c)
	if err != nil {
		return err
	}
	wait, err := waitParam(c)
	if err != nil {
		return err
	}
	v, err := h.visibleRun(c)
	if err != nil {
		return err
	}
	if wait > 0 && !past {
		if v, err = h.waitForRun(c, v, wait); err != nil {
			return err
		}
	}
	if past {
		// As it was then, folded from its history.
		if v, err = h.history.RunAt(c.Request().Context(), v.ID, asOf); err != nil {
			return asOfError(err)
		}
	}
	d, err := h.detailOf(c.Request().Context(), v)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

// AuditEvent is an event as auditors read it, with its hash in its
// tenant's chain (null until the chainer reached it).
type AuditEvent = audit.Hashed

func (h *handlers) operationEvents(c echo.Context) error {
	v, err := h.visibleRun(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	events, err := h.store.ReadCorrelated(ctx, v.ID, 10_000)
	if err != nil {
		return err
	}
	items, err := h.history.WithHashes(ctx, events)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

func (h *handlers) cancelOperation(c echo.Context) error {
	id, err := pathID(c, "runId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	cancelled, err := h.gate.CancelRun(ctx, actor(c), id)
	if err != nil {
		return err
	}
	v, err := h.reader.GetRun(ctx, id)
	if errors.Is(err, projections.ErrNotFound) {
		// The read model is behind: answer from the event itself.
		run, _ := domain.Ended(cancelled)
		v, err = projections.RunView{Run: run}, nil
	}
	if err != nil {
		return err
	}
	d, err := h.detailOf(c.Request().Context(), v)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

// AuditPage is a page of the audit trail.
type AuditPage struct {
	Items     []AuditEvent `json:"items"`
	NextAfter *int64       `json:"next_after"`
}

func (h *handlers) auditTrail(c echo.Context) error {
	ctx := c.Request().Context()
	limit, err := limitParam(c)
	if err != nil {
		return err
	}
	tenant, after, err := h.auditQuery(c)
	if err != nil {
		return err
	}
	events, err := h.store.ReadTenant(ctx, tenant, after, limit)
	if errors.Is(err, eventstore.ErrUnknownPosition) {
		return badQuery("after names no event")
	}
	if err != nil {
		return err
	}
	items, err := h.history.WithHashes(ctx, events)
	if err != nil {
		return err
	}
	p := AuditPage{Items: items}
	if len(events) == limit {
		last := events[len(events)-1].Position
		p.NextAfter = &last
	}
	return c.JSON(http.StatusOK, p)
}

func (h *handlers) notifications(c echo.Context) error {
	limit, err := limitParam(c)
	if err != nil {
		return err
	}
	cursor, err := optionalID("cursor", c.QueryParam("cursor"))
	if err != nil {
		return err
	}
	ctx, who := c.Request().Context(), actor(c)
	var tenants []string // through an integration: its workspace's only
	if who.Workspace != "" {
		if tenants, err = h.tenancy.MemberTenants(ctx, who, domain.CapOperationsView); err != nil {
			return err
		}
		if tenants == nil {
			tenants = []string{}
		}
	}
	list, next, err := h.reader.Notifications(ctx, who.ID, tenants, cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page(list, next))
}

func (h *handlers) queue(c echo.Context) error {
	ctx := c.Request().Context()
	tenant, err := optionalID("tenant_id", c.QueryParam("tenant_id"))
	if err != nil {
		return err
	}
	var tenants []string
	if tenant != "" {
		if err := h.tenancy.Authorize(ctx, actor(c), tenant, domain.CapOperationsView); err != nil {
			return err
		}
		tenants = []string{tenant}
	} else if tenants, err = h.tenancy.MemberTenants(ctx, actor(c), domain.CapOperationsView); err != nil {
		return err
	}
	if tenants == nil {
		tenants = []string{}
	}
	stats, err := h.reader.Queue(ctx, tenants)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, stats)
}
