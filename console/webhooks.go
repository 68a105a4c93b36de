package console

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/webhooks"
)

// deliveriesShown is how many of an endpoint's latest deliveries its card
// shows.
const deliveriesShown = 20

type webhooksPage struct {
	WorkspaceID string
	// Tenants are the user's tenants of the workspace.
	Tenants   []tenancy.MemberOf
	Endpoints []endpointCard
}

// endpointCard is an endpoint with its latest deliveries; never its
// secrets, nor what the deliveries carried.
type endpointCard struct {
	webhooks.Endpoint
	Deliveries []webhooks.Delivery
	// More says that older deliveries than these exist.
	More bool
	// Replayed is the attempt "Send again" just queued, if it is one of
	// these.
	Replayed *webhooks.Delivery
}

// IsReplayed reports whether delivery id is the attempt "Send again" just
// queued.
func (e endpointCard) IsReplayed(id string) bool { return e.Replayed != nil && e.Replayed.ID == id }

// ownedWorkspace returns the user's tenants of workspace when they hold
// the owner role on one of them. Anyone else is answered not found, as
// for a workspace that does not exist.
func (c *Console) ownedWorkspace(ec echo.Context, workspace string) ([]tenancy.MemberOf, error) {
	members, err := c.d.Tenancy.Memberships(c.ctx(ec), actorOf(ec))
	if err != nil {
		return nil, err
	}
	var mine []tenancy.MemberOf
	owner := false
	for _, m := range members {
		if m.WorkspaceID == workspace {
			mine = append(mine, m)
			owner = owner || m.Role == domain.RoleOwner
		}
	}
	if !owner {
		return nil, domain.ErrNotFound
	}
	return mine, nil
}

// webhookEndpoints shows a workspace's webhook endpoints to its owners,
// each with its latest deliveries and a "Send again" form per delivery.
func (c *Console) webhookEndpoints(ec echo.Context) error {
	workspace := strings.ToUpper(ec.Param("workspaceId"))
	tenants, err := c.ownedWorkspace(ec, workspace)
	if err != nil {
		return err
	}
	ctx := c.ctx(ec)
	endpoints, err := c.d.Webhooks.List(ctx, workspace)
	if err != nil {
		return err
	}
	replayed := strings.ToUpper(ec.QueryParam("replayed"))
	p := webhooksPage{WorkspaceID: workspace, Tenants: tenants}
	for _, e := range endpoints {
		card := endpointCard{Endpoint: e}
		var next string
		if card.Deliveries, next, err = c.d.Webhooks.Deliveries(ctx, e.ID, "", "", deliveriesShown); err != nil {
			return err
		}
		card.More = next != ""
		for i, d := range card.Deliveries {
			if replayed != "" && d.ID == replayed {
				card.Replayed = &card.Deliveries[i]
			}
		}
		p.Endpoints = append(p.Endpoints, card)
	}
	return c.render(ec, http.StatusOK, "webhooks", "Webhooks", p)
}

// replayDelivery sends a delivery's message again, now, as a new attempt,
// and goes back to the endpoint's card, which names the attempt.
func (c *Console) replayDelivery(ec echo.Context) error {
	ctx := c.ctx(ec)
	e, err := c.d.Webhooks.Get(ctx, strings.ToUpper(ec.Param("endpointId")))
	if err != nil {
		return err
	}
	if _, err := c.ownedWorkspace(ec, e.WorkspaceID); err != nil {
		return err
	}
	d, err := c.d.Webhooks.Replay(ctx, e.ID, strings.ToUpper(ec.Param("deliveryId")))
	if err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/workspaces/"+e.WorkspaceID+"/webhooks?replayed="+d.ID+"#endpoint-"+e.ID)
}

// deliveryError is what a delivery's error adds to its response: nothing
// when it only repeats the status ("HTTP 503").
func deliveryError(d webhooks.Delivery) string {
	if d.Error == nil || d.ResponseStatus != nil && *d.Error == fmt.Sprintf("HTTP %d", *d.ResponseStatus) {
		return ""
	}
	return *d.Error
}
