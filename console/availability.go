package console

import (
	"context"
	"errors"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

// startButton is one start button with what pressing it would get now,
// decided by the gate as a dry run of its own (gate.Availability).
type startButton struct {
	Surface domain.Surface
	Label   string
	// Field and Value are what the start names: "tenant_id" and the
	// tenant (its default connection is resolved when it is pressed), or
	// "connection_id" and the connection.
	Field, Value string
	// Permitted is false when the user lacks the surface's capability: the
	// button is disabled.
	Permitted bool
	Outcome   domain.Outcome
	// Run is the run a deduped or scope_busy start would be answered with.
	Run     *domain.Run
	Reason  *domain.Reason
	Message domain.Message
	// Step is a blocked start's first next step.
	Step *domain.NextStep
	// NoteID names the line that says what the button would get (its
	// aria-describedby).
	NoteID string
}

// Kind is the button's look: accepted, deduped, scope_busy, blocked, or
// forbidden.
func (b startButton) Kind() string {
	if !b.Permitted {
		return "forbidden"
	}
	return string(b.Outcome)
}

// startGroup is the buttons of the tenant's card or of one connection's.
type startGroup struct {
	Buttons []startButton
	// Permitted is whether the user may press any of them.
	Permitted bool
	// Quiet is a group with nothing to say: every button would be
	// accepted, shown in a row.
	Quiet bool
	// Shared is the one note of a group whose every button would be
	// blocked for the same reason: the buttons in a row, the reason once.
	Shared *startButton
}

// availability decides what each start button of a tenant's connections
// page would get now: the same requests as the API's availability, decided
// by gate.Availability (each alone, as a dry run: no writes, no locks).
// A missing capability is a button not permitted; any other refusal is
// the page's error.
func (c *Console) availability(ctx context.Context, who domain.Actor, tenant string, conns []connections.Connection) (startGroup, map[string]startGroup, error) {
	all := gate.ButtonsOf(who, tenant, conns)
	reqs := gate.Requests(all)
	buttons := make([]startButton, len(all))
	for i, b := range all {
		buttons[i] = startButton{Surface: b.Request.Surface, Field: "tenant_id", Value: tenant}
		if b.Request.Surface.Scope == domain.ScopeConnection {
			buttons[i].Field, buttons[i].Value = "connection_id", b.Request.ConnectionID
		}
	}
	resps, errs, err := c.d.Gate.Availability(ctx, reqs)
	if err != nil {
		return startGroup{}, nil, err
	}
	for i := range buttons {
		b := &buttons[i]
		b.Label, b.NoteID = startLabel(b.Surface), "avail-"+b.Value+"-"+b.Surface.Name
		var forbidden *domain.ForbiddenError
		switch {
		case errors.As(errs[i], &forbidden):
			continue
		case errs[i] != nil:
			return startGroup{}, nil, errs[i]
		}
		b.decided(resps[i].Result)
	}
	tenantGroup := groupOf(buttons[:len(gate.TenantSurfaces)])
	byConn := map[string]startGroup{}
	for i, conn := range conns {
		at := len(gate.TenantSurfaces) + i*len(gate.ConnectionSurfaces)
		byConn[conn.ID] = groupOf(buttons[at : at+len(gate.ConnectionSurfaces)])
	}
	return tenantGroup, byConn, nil
}

// decided sets what pressing b would get: the gate's dry answer res,
// shaped as the API's dry runs are (api.DryRunOf).
func (b *startButton) decided(res domain.StartResult) {
	dry := api.DryRunOf(res)
	b.Permitted, b.Outcome, b.Run, b.Reason, b.Message = true, dry.Outcome, dry.Run, dry.Reason, dry.Message
	if len(dry.NextSteps) > 0 && dry.Outcome == domain.OutcomeBlocked {
		b.Step = &dry.NextSteps[0]
	}
}

// groupOf is how a card shows its buttons: in a row when there is
// nothing to say or one reason for all, else each with its own line.
func groupOf(buttons []startButton) startGroup {
	g := startGroup{Buttons: buttons, Quiet: true}
	var reason domain.ReasonCode
	sameBlock := len(buttons) > 1
	for i, b := range buttons {
		g.Permitted = g.Permitted || b.Permitted
		g.Quiet = g.Quiet && b.Permitted && b.Outcome == domain.OutcomeAccepted
		if !b.Permitted || b.Outcome != domain.OutcomeBlocked || b.Reason == nil || (i > 0 && b.Reason.Code != reason) {
			sameBlock = false
			continue
		}
		reason = b.Reason.Code
	}
	if sameBlock {
		shared := buttons[0]
		shared.NoteID = "avail-" + shared.Value
		for i := range g.Buttons {
			g.Buttons[i].NoteID = shared.NoteID
		}
		g.Shared = &shared
	}
	return g
}
