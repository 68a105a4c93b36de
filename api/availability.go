package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

// Availability is what one button of a tenant would get now (contract
// section 15).
type Availability struct {
	Surface            string                `json:"surface"`
	Type               string                `json:"type"`
	ProviderConnection *domain.ConnectionRef `json:"provider_connection"`
	Permitted          bool                  `json:"permitted"`
	MissingCapability  *domain.Capability    `json:"missing_capability"`
	Outcome            *domain.Outcome       `json:"outcome"`
	Reason             *domain.Reason        `json:"reason"`
	Run                *domain.Run           `json:"run"`
	Message            *domain.Message       `json:"message"`
	NextSteps          []domain.NextStep     `json:"next_steps"`
}

// AvailabilityPage is a tenant's availability.
type AvailabilityPage struct {
	TenantID  string         `json:"tenant_id"`
	DecidedAt time.Time      `json:"decided_at"`
	Items     []Availability `json:"items"`
}

// availability answers every surface of a tenant, on each of its
// connections (the tenant's surfaces on its default), decided as dry runs
// in one pass that reads everything together.
func (h *handlers) availability(c echo.Context) error {
	tenant, err := pathID(c, "tenantId")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	who := actor(c)
	conns, err := h.conns.List(ctx, who, tenant) // operations.view, and the connections in one read
	if err != nil {
		return err
	}
	buttons := gate.ButtonsOf(who, tenant, conns)
	reqs := gate.Requests(buttons)
	resps, errs, err := h.gate.Availability(ctx, reqs)
	if err != nil {
		return err
	}
	page := AvailabilityPage{TenantID: tenant, DecidedAt: time.Now().UTC(), Items: make([]Availability, len(reqs))}
	for i, req := range reqs {
		op := domain.MustOperation(req.Surface.Operation)
		item := Availability{Surface: req.Surface.Name, Type: op.Type, NextSteps: []domain.NextStep{}}
		if c := buttons[i].Connection; c != nil {
			item.ProviderConnection = c.Ref()
		}
		var forbidden *domain.ForbiddenError
		switch {
		case errors.As(errs[i], &forbidden):
			capability := forbidden.Capability
			item.MissingCapability = &capability
		case errs[i] != nil:
			return errs[i]
		default:
			dry := DryRunOf(resps[i].Result)
			item.Permitted, item.Outcome, item.Reason, item.Run = true, &dry.Outcome, dry.Reason, dry.Run
			item.Message, item.NextSteps = &dry.Message, dry.NextSteps
		}
		page.Items[i] = item
	}
	return c.JSON(http.StatusOK, page)
}
