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
}

// onboardingSessions lists a tenant's onboarding sessions with their
// steps, runs and pending follow-ups, and the forms that move them on.
func (c *Console) onboardingSessions(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	sessions, err := c.d.Onboarding.List(c.ctx(ec), actorOf(ec), tenant)
	if err != nil {
		return err
	}
	p := onboardingPage{TenantID: tenant, Sessions: sessions, Operations: domain.BootstrapOperations(),
		CanRun: c.can(ec, tenant, domain.CapOnboardingRun)}
	return c.render(ec, http.StatusOK, "onboarding", "Onboarding", p)
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
