package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/projections"
)

// maxCancel is how many runs one "Cancel selected" may name, as the API's
// bulk cancel.
const maxCancel = 500

// cancelled is what cancelling one selected run did, in words.
type cancelled struct {
	ID string
	// Run is the run as the cancel left it; nil when the user may not see
	// it.
	Run *domain.Run
	// Result is cancelled, ended (it had ended already), forbidden (not
	// allowed), or missing (no such run the user may see).
	Result string
}

type cancelPage struct {
	Items []cancelled
	// Back is the Operations view the form was sent from.
	Back string
	// Counts by result.
	Cancelled, Ended, Forbidden, Missing int
}

// mayCancelAny reports whether the user may cancel some run: they hold a
// start's capability on some tenant.
func (c *Console) mayCancelAny(ctx context.Context, who domain.Actor) (bool, error) {
	roles, err := c.roles(ctx, who)
	if err != nil {
		return false, err
	}
	for _, role := range roles {
		for _, s := range domain.Surfaces() {
			if role.Can(s.Capability) {
				return true, nil
			}
		}
	}
	return false, nil
}

// cancelSelected cancels the runs selected in the Operations view (ids),
// each through the gate as the signed-in user, as if alone, and shows
// what became of each in words: cancelled, already ended, not allowed.
func (c *Console) cancelSelected(ec echo.Context) error {
	if err := ec.Request().ParseForm(); err != nil {
		return domain.Invalid("ids", "the form could not be read")
	}
	var ids []string
	seen := map[string]bool{}
	for _, id := range ec.Request().PostForm["ids"] {
		id = strings.ToUpper(strings.TrimSpace(id))
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return domain.Invalid("ids", "select at least one queued or running run to cancel")
	}
	if len(ids) > maxCancel {
		return domain.Invalid("ids", "select at most %d runs at once, not %d", maxCancel, len(ids))
	}
	ctx, who := c.ctx(ec), actorOf(ec)
	p := cancelPage{Back: Prefix + "/operations"}
	if q := ec.FormValue("back"); q != "" {
		if v, err := url.ParseQuery(q); err == nil {
			p.Back += "?" + v.Encode()
		}
	}
	for _, id := range ids {
		item := cancelled{ID: id}
		e, err := c.d.Gate.CancelRun(ctx, who, id)
		var forbidden *domain.ForbiddenError
		switch {
		case err == nil:
			run, _ := domain.Ended(e)
			item.Run, item.Result = &run, "cancelled"
			p.Cancelled++
		case errors.Is(err, domain.ErrRunNotActive):
			item.Result = "ended"
			p.Ended++
			v, err := c.d.Reader.VisibleRun(ctx, c.d.Tenancy, who, id)
			if err != nil && !errors.Is(err, domain.ErrNotFound) && !errors.Is(err, projections.ErrNotFound) {
				return err
			}
			if err == nil {
				item.Run = &v.Run
			}
		case errors.As(err, &forbidden):
			item.Result = "forbidden"
			p.Forbidden++
			if v, err := c.d.Reader.VisibleRun(ctx, c.d.Tenancy, who, id); err == nil {
				item.Run = &v.Run
			}
		case errors.Is(err, domain.ErrNotFound):
			item.Result = "missing"
			p.Missing++
		default:
			return err
		}
		p.Items = append(p.Items, item)
	}
	title := "Runs cancelled"
	if p.Cancelled == 0 {
		title = "No run cancelled"
	}
	return c.render(ec, http.StatusOK, "cancel", title, p)
}
