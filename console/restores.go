package console

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/restores"
)

type restoresPage struct {
	TenantID  string
	Runs      []restores.RestoreRun
	CanManage bool
}

// restoreRuns lists a tenant's restore runs, with the preview and the
// safeguards of execution (confirm, acknowledge warnings) as forms.
func (c *Console) restoreRuns(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	runs, err := c.d.Restores.List(c.ctx(ec), actorOf(ec), tenant)
	if err != nil {
		return err
	}
	p := restoresPage{TenantID: tenant, Runs: runs, CanManage: c.can(ec, tenant, domain.CapRestoreExecute)}
	return c.render(ec, http.StatusOK, "restores", "Restore runs", p)
}

func (c *Console) createRestoreRun(ec echo.Context) error {
	tenant := strings.ToUpper(ec.FormValue("tenant_id"))
	items := json.RawMessage(strings.TrimSpace(ec.FormValue("items")))
	if !json.Valid(items) {
		return domain.Invalid("items", "must be a JSON array of items, such as [{\"name\": \"mailbox\", \"overwrite\": true}]")
	}
	if _, err := c.d.Restores.Create(c.ctx(ec), actorOf(ec), tenant, ec.FormValue("name"), items); err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/tenants/"+tenant+"/restores")
}

func (c *Console) previewRestoreRun(ec echo.Context) error {
	r, err := c.d.Restores.Preview(c.ctx(ec), actorOf(ec), strings.ToUpper(ec.Param("restoreRunId")))
	if err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/tenants/"+r.TenantID+"/restores#restore-"+r.ID)
}

// executeRestoreRun starts a restore through the one gate with the
// safeguards the operator ticked, and shows the outcome.
func (c *Console) executeRestoreRun(ec echo.Context) error {
	id := strings.ToUpper(ec.Param("restoreRunId"))
	r, err := c.d.Restores.Get(c.ctx(ec), actorOf(ec), id)
	if err != nil {
		return err
	}
	req := gate.StartRequest{Actor: actorOf(ec), Surface: domain.SurfaceRestoreExecute, TenantID: r.TenantID, RestoreRunID: r.ID,
		ConnectionID: strings.ToUpper(ec.FormValue("connection_id")),
		Confirm:      ec.FormValue("confirm") == "yes", AcknowledgeWarnings: ec.FormValue("acknowledge_warnings") == "yes"}
	resp, err := c.d.Gate.Start(c.ctx(ec), req)
	if err != nil {
		return err
	}
	return c.outcome(ec, resp)
}
