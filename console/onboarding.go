package console

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/onboarding"
)

type onboardingPage struct {
	TenantID   string
	Sessions   []onboarding.Session
	Operations []domain.Operation // what a bootstrap may select
	CanRun     bool
	// Verify and Continue are what a session's "Verify access" and
	// "Continue the bootstrap" would get from the gate now, by session.
	Verify, Continue map[string]startButton
}

// onboardingSessions lists a tenant's onboarding sessions with their
// steps, runs and pending follow-ups, and the forms that move them on,
// each saying before the click what the gate would answer.
func (c *Console) onboardingSessions(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	sessions, err := c.d.Onboarding.List(c.ctx(ec), actorOf(ec), tenant)
	if err != nil {
		return err
	}
	p := onboardingPage{TenantID: tenant, Sessions: sessions, Operations: domain.BootstrapOperations(),
		CanRun: c.can(ec, tenant, domain.CapOnboardingRun)}
	if p.CanRun {
		if p.Verify, p.Continue, err = c.onboardingAvailability(ec, sessions); err != nil {
			return err
		}
	}
	return c.render(ec, http.StatusOK, "onboarding", "Onboarding", p)
}

// onboardingAvailability decides, as dry runs, the start each session's
// verify and continue would ask the gate for: the verification on the
// session's connection, and the first pending bootstrap operation. The
// session's own rules (a bootstrap already running) are the session's,
// decided when pressed; a start the gate cannot decide gets no note.
func (c *Console) onboardingAvailability(ec echo.Context, sessions []onboarding.Session) (verify, cont map[string]startButton, err error) {
	who := actorOf(ec)
	var reqs []gate.StartRequest
	var at []startButton
	for _, s := range sessions {
		req := gate.StartRequest{Actor: who, Surface: domain.SurfaceOnboardingVerification, TenantID: s.TenantID}
		if s.ProviderConnectionID != nil {
			req.ConnectionID = *s.ProviderConnectionID
		}
		reqs, at = append(reqs, req), append(at, startButton{Surface: req.Surface, Label: "Verify access", Value: s.ID, NoteID: "avail-" + s.ID + "-verify"})
		if len(s.Steps.Bootstrap.Pending) > 0 {
			req.Surface, req.Operation = domain.SurfaceOnboardingBootstrap, s.Steps.Bootstrap.Pending[0]
			reqs, at = append(reqs, req), append(at, startButton{Surface: req.Surface, Label: "Continue the bootstrap", Value: s.ID, NoteID: "avail-" + s.ID + "-continue"})
		}
	}
	verify, cont = map[string]startButton{}, map[string]startButton{}
	if len(reqs) == 0 {
		return verify, cont, nil
	}
	resps, errs, err := c.d.Gate.Availability(c.ctx(ec), reqs)
	if err != nil {
		return nil, nil, err
	}
	for i, b := range at {
		if errs[i] != nil {
			continue
		}
		b.decided(resps[i].Result)
		if b.Surface == domain.SurfaceOnboardingVerification {
			verify[b.Value] = b
		} else {
			cont[b.Value] = b
		}
	}
	return verify, cont, nil
}

func (c *Console) createOnboardingSession(ec echo.Context) error {
	tenant := strings.ToUpper(ec.FormValue("tenant_id"))
	if _, err := c.d.Onboarding.Create(c.ctx(ec), actorOf(ec), tenant, strings.ToUpper(ec.FormValue("connection_id"))); err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/tenants/"+tenant+"/onboarding")
}

// onboardingStep runs a step of a session (verify, bootstrap, continue)
// through the onboarding service and shows the outcome of its start.
func (c *Console) onboardingStep(ec echo.Context) error {
	r := onboarding.Request{Actor: actorOf(ec), SessionID: strings.ToUpper(ec.Param("sessionId"))}
	var resp gate.StartResponse
	var err error
	switch ec.Param("step") {
	case "verify":
		resp, err = c.d.Onboarding.Verify(c.ctx(ec), r)
	case "bootstrap":
		if err = ec.Request().ParseForm(); err == nil {
			resp, err = c.d.Onboarding.Bootstrap(c.ctx(ec), r, ec.Request().PostForm["operations"])
		}
	case "continue":
		resp, err = c.d.Onboarding.Continue(c.ctx(ec), r)
	default:
		return domain.ErrNotFound
	}
	if err != nil {
		return err
	}
	return c.outcome(ec, resp)
}
