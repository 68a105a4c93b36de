package console

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/webhooks"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// ---- sign-in

type signInPage struct {
	Next  string
	Nonce string
	Error string
}

// signInForm sets a sign-in nonce (a cookie and the form's hidden field
// must match: the sign-in form's CSRF protection, before any session).
func (c *Console) signInForm(ec echo.Context) error {
	nonce := randomToken()
	ec.SetCookie(c.cookie(ec, signInCookie, nonce, 10*time.Minute))
	return c.render(ec, http.StatusOK, "sign-in", "Sign in", signInPage{Next: safeNext(ec.QueryParam("next")), Nonce: nonce})
}

func (c *Console) signIn(ec echo.Context) error {
	nonce, err := ec.Cookie(signInCookie)
	next := safeNext(ec.FormValue("next"))
	if err != nil || subtle.ConstantTimeCompare([]byte(nonce.Value), []byte(ec.FormValue("csrf"))) != 1 {
		return c.render(ec, http.StatusForbidden, "problem", "Form refused", &api.Problem{Status: http.StatusForbidden, Code: "csrf",
			Title: "Form refused", Detail: "This sign-in form is stale or did not come from the console. Reload the sign-in page and try again."})
	}
	token := strings.TrimSpace(ec.FormValue("token"))
	owner, err := c.d.Tokens.Authenticate(c.ctx(ec), token)
	if errors.Is(err, domain.ErrNotFound) || token == "" || (err == nil && owner.Kind != domain.OwnerUser) {
		fresh := randomToken()
		ec.SetCookie(c.cookie(ec, signInCookie, fresh, 10*time.Minute))
		return c.render(ec, http.StatusUnauthorized, "sign-in", "Sign in", signInPage{Next: next, Nonce: fresh,
			Error: "That token is not valid. Paste the token you were given when your user was created."})
	}
	if err != nil {
		return err
	}
	value, err := c.sessions.open(c.ctx(ec), owner.ID)
	if err != nil {
		return err
	}
	ec.SetCookie(c.cookie(ec, signInCookie, "", -1))
	ec.SetCookie(c.cookie(ec, sessionCookie, value, c.d.SessionTTL))
	return ec.Redirect(http.StatusSeeOther, next)
}

func (c *Console) signOut(ec echo.Context) error {
	if cookie, err := ec.Cookie(sessionCookie); err == nil {
		if err := c.sessions.close(c.ctx(ec), cookie.Value); err != nil {
			return err
		}
	}
	ec.SetCookie(c.cookie(ec, sessionCookie, "", -1))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in")
}

// cookie is a console cookie: HttpOnly, SameSite=Strict, Secure over TLS,
// expiring after ttl (deleted for a negative ttl).
func (c *Console) cookie(ec echo.Context, name, value string, ttl time.Duration) *http.Cookie {
	ck := &http.Cookie{Name: name, Value: value, Path: Prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: ec.Request().TLS != nil || ec.Request().Header.Get("X-Forwarded-Proto") == "https"}
	if ttl < 0 {
		ck.MaxAge = -1
	} else {
		ck.MaxAge = int(ttl.Seconds())
		ck.Expires = time.Now().Add(ttl)
	}
	return ck
}

// safeNext keeps a redirect after sign-in inside the console.
func safeNext(next string) string {
	if strings.HasPrefix(next, Prefix+"/") && !strings.HasPrefix(next, Prefix+"//") && !strings.Contains(next, "\\") {
		return next
	}
	return Prefix + "/operations"
}

// ---- Operations view

type operationsPage struct {
	// CanCancel shows the "Cancel selected" form: the user may cancel
	// some run of some tenant.
	CanCancel bool
	Filter    opsFilter
	Types     []domain.Operation
	Statuses  []string
	Rows      rowsData
	Query     string // the filters as a query string (live updates)
	NextQuery string // the next page's query string, "" on the last
}

type opsFilter struct {
	TenantID, Status, Type, ConnectionID, Cursor string
}

type rowsData struct {
	Runs   []projections.RunView
	People people
	// Cancellable are the queued and running runs the user may cancel:
	// their rows carry a checkbox of the "Cancel selected" form.
	Cancellable map[string]bool
}

// rowsOf is the Operations view's rows with the names of their
// initiators, and which of them the user may cancel (by their role on the
// run's tenant, as cancel decides: for showing the checkboxes; the gate
// decides each cancel).
func (c *Console) rowsOf(ctx context.Context, who domain.Actor, runs []projections.RunView) (rowsData, error) {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.InitiatorID
		if r.InitiatedVia != "" {
			ids = append(ids, r.InitiatedVia)
		}
	}
	p, err := c.people(ctx, ids)
	if err != nil {
		return rowsData{}, err
	}
	rows := rowsData{Runs: runs, People: p, Cancellable: map[string]bool{}}
	var roles map[string]domain.Role
	for _, r := range runs {
		if !r.Status.Active() {
			continue
		}
		if roles == nil {
			if roles, err = c.roles(ctx, who); err != nil {
				return rowsData{}, err
			}
		}
		if role, ok := roles[r.TenantID]; ok && role.Can(cancelCapability(r.Run)) {
			rows.Cancellable[r.ID] = true
		}
	}
	return rows, nil
}

// roles are the user's roles by tenant.
func (c *Console) roles(ctx context.Context, who domain.Actor) (map[string]domain.Role, error) {
	members, err := c.d.Tenancy.Memberships(ctx, who)
	if err != nil {
		return nil, err
	}
	roles := make(map[string]domain.Role, len(members))
	for _, m := range members {
		roles[m.TenantID] = m.Role
	}
	return roles, nil
}

// filterOf reads the Operations view's filters and the runs the user may
// see with them, through the same reader and rules as the API.
func (c *Console) runsOf(ec echo.Context) (opsFilter, projections.RunFilter, error) {
	q := ec.QueryParams()
	f := opsFilter{TenantID: q.Get("tenant_id"), Status: q.Get("status"), Type: q.Get("type"),
		ConnectionID: q.Get("provider_connection_id"), Cursor: q.Get("cursor")}
	rf := projections.RunFilter{Limit: 25, Cursor: f.Cursor, ConnectionID: f.ConnectionID}
	if f.Status != "" {
		if _, ok := domain.ParseRunStatus(f.Status); !ok {
			return f, rf, domain.Invalid("status", "%q is not a run status", f.Status)
		}
		rf.Status = f.Status
	}
	if f.Type != "" {
		op, ok := domain.LookupOperation(f.Type)
		if !ok {
			return f, rf, domain.Invalid("type", "%q is not an operation type", f.Type)
		}
		rf.CanonicalType = op.Canonical
	}
	ctx, user := c.ctx(ec), actorOf(ec)
	if f.TenantID != "" {
		if err := c.d.Tenancy.Authorize(ctx, user, f.TenantID, domain.CapOperationsView); err != nil {
			return f, rf, err
		}
		rf.TenantIDs = []string{f.TenantID}
		return f, rf, nil
	}
	var err error
	rf.TenantIDs, err = c.d.Tenancy.MemberTenants(ctx, user, domain.CapOperationsView)
	return f, rf, err
}

func (f opsFilter) query(cursor string) string {
	v := url.Values{}
	for k, s := range map[string]string{"tenant_id": f.TenantID, "status": f.Status, "type": f.Type, "provider_connection_id": f.ConnectionID, "cursor": cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

func (c *Console) operations(ec echo.Context) error {
	f, rf, err := c.runsOf(ec)
	if err != nil {
		return err
	}
	runs, next, err := c.d.Reader.ListRuns(c.ctx(ec), rf)
	if err != nil {
		return err
	}
	rows, err := c.rowsOf(c.ctx(ec), actorOf(ec), runs)
	if err != nil {
		return err
	}
	p := operationsPage{Filter: f, Types: domain.Operations(), Rows: rows, Query: f.query(f.Cursor),
		Statuses: []string{"queued", "running", "succeeded", "failed", "cancelled", "blocked"}}
	if p.CanCancel, err = c.mayCancelAny(c.ctx(ec), actorOf(ec)); err != nil {
		return err
	}
	if next != "" {
		p.NextQuery = f.query(next)
	}
	return c.render(ec, http.StatusOK, "operations", "Operations", p)
}

// rows renders the Operations view's table body for the filters.
func (c *Console) rows(ec echo.Context) ([]byte, error) {
	_, rf, err := c.runsOf(ec)
	if err != nil {
		return nil, err
	}
	runs, _, err := c.d.Reader.ListRuns(c.ctx(ec), rf)
	if err != nil {
		return nil, err
	}
	rows, err := c.rowsOf(c.ctx(ec), actorOf(ec), runs)
	if err != nil {
		return nil, err
	}
	return c.fragment(ec, "operations", "rows", rows)
}

// operationRows is the fallback of the live updates: the table body, polled.
func (c *Console) operationRows(ec echo.Context) error {
	b, err := c.rows(ec)
	if err != nil {
		return err
	}
	ec.Response().Header().Set("Cache-Control", "no-store")
	return ec.HTMLBlob(http.StatusOK, b)
}

// operationStream sends the table body as server-sent events whenever it
// changes: at each commit of changes, which commit with the projections
// (and at least every two seconds), until the client goes.
func (c *Console) operationStream(ec echo.Context) error {
	first, err := c.rows(ec)
	if err != nil {
		return err
	}
	w := ec.Response()
	_ = http.NewResponseController(w.Writer).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) error {
		var msg bytes.Buffer
		msg.WriteString("event: rows\n")
		for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
			msg.WriteString("data: ")
			msg.Write(line)
			msg.WriteString("\n")
		}
		msg.WriteString("\n")
		if _, err := w.Write(msg.Bytes()); err != nil {
			return err
		}
		w.Flush()
		return nil
	}
	if err := send(first); err != nil {
		return nil
	}
	last := first
	ctx := c.ctx(ec)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.d.Changes():
			// Changes commit with the projections: the rows are new.
		case <-tick.C:
		}
		// A disabled user's stream ends as their session does; the page
		// then finds itself signed out.
		if active, err := c.d.Tenancy.Active(ctx, sessionOf(ec).UserID); err == nil && !active {
			return nil
		}
		b, err := c.rows(ec)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.d.Logger.Warn("console stream", "err", err)
			continue
		}
		if bytes.Equal(b, last) {
			continue
		}
		if send(b) != nil {
			return nil
		}
		last = b
	}
}

// ---- run detail

type runPage struct {
	Run         projections.RunView
	Message     domain.Message
	Steps       []domain.NextStep
	Events      []audit.Record
	Explanation audit.Explanation
	Summary     string
	CanCancel   bool
	// CanRerun offers "Run again" on a run that ended, to those with its
	// operation's capability; Restore asks for the restore's safeguards.
	CanRerun bool
	Restore  bool
	People   people
}

// visibleRun is the run id if the user may see it; the same not-found for
// an unknown id and a run of another tenant.
func (c *Console) visibleRun(ec echo.Context) (projections.RunView, error) {
	return c.d.Reader.VisibleRun(c.ctx(ec), c.d.Tenancy, actorOf(ec), strings.ToUpper(ec.Param("runId")))
}

// run shows a run; while it is queued or running, the page's script
// waits on it (runWait) and shows each change of its status in place.
func (c *Console) run(ec echo.Context) error {
	v, err := c.visibleRun(ec)
	if err != nil {
		return err
	}
	p, err := c.runPageOf(ec, v)
	if err != nil {
		return err
	}
	return c.render(ec, http.StatusOK, "run", v.Label+" · "+v.ID, p)
}

// maxRunWait bounds a wait on a run (runWait), below what proxies let a
// quiet request last.
const maxRunWait = 25 * time.Second

// runWait is the long poll of a run's page: it answers the page's run
// section (the "run" template) as soon as the run's status is no longer
// the status the page shows (?status=), or the run ended, and 204 No
// Content when neither holds after wait_ms (at most 25 s, the default) or
// when the server drains. It holds no database connection while it
// waits: each commit of changes, which commit with the projections, wakes
// it to read the run again. A run the user may not see is the same
// not-found page as the run's.
func (c *Console) runWait(ec echo.Context) error {
	// Take the wake-up before reading, so that a change committed in
	// between is not missed.
	next := c.d.Changes()
	v, err := c.visibleRun(ec)
	if err != nil {
		return err
	}
	shown := ec.QueryParam("status")
	if _, ok := domain.ParseRunStatus(shown); !ok && shown != "" {
		return domain.Invalid("status", "%q is not a run status", shown)
	}
	wait := maxRunWait
	if ms := ec.QueryParam("wait_ms"); ms != "" {
		n, err := strconv.Atoi(ms)
		if err != nil || n < 0 || n > int(maxRunWait/time.Millisecond) {
			return domain.Invalid("wait_ms", "must be a whole number from 0 to %d", maxRunWait/time.Millisecond)
		}
		wait = time.Duration(n) * time.Millisecond
	}
	ctx := c.ctx(ec)
	if deadline, ok := ctx.Deadline(); ok {
		// Answer before the request's deadline cuts the wait.
		wait = max(0, min(wait, time.Until(deadline)-time.Second))
	}
	changed := func(v projections.RunView) bool {
		return v.Status.Terminal() || shown != "" && string(v.Status) != shown
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !changed(v) {
		select {
		case <-next:
		case <-timer.C:
			return ec.NoContent(http.StatusNoContent)
		case <-c.d.Draining:
			return ec.NoContent(http.StatusNoContent)
		case <-ctx.Done():
			return nil
		}
		next = c.d.Changes()
		if v, err = c.d.Reader.GetRun(ctx, v.ID); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	p, err := c.runPageOf(ec, v)
	if err != nil {
		return err
	}
	b, err := c.fragment(ec, "run", "run", view{CSRF: sessionOf(ec).CSRF, Page: p})
	if err != nil {
		return err
	}
	ec.Response().Header().Set("Cache-Control", "no-store")
	return ec.HTMLBlob(http.StatusOK, b)
}

// runPageOf is what a run's page shows of run v.
func (c *Console) runPageOf(ec echo.Context, v projections.RunView) (runPage, error) {
	ctx := c.ctx(ec)
	p := runPage{Run: v}
	p.Message, p.Steps = domain.PresentRun(v.Run)
	p.Steps = stepsBesides(p.Steps, v.ID) // not "View the run" on the run's own page
	events, err := c.d.Store.ReadCorrelated(ctx, v.ID, 1000)
	if err != nil {
		return p, err
	}
	for _, e := range events {
		p.Events = append(p.Events, audit.RecordOf(e))
	}
	if p.Explanation, err = c.history.Explain(ctx, v.ID); err != nil && !errors.Is(err, domain.ErrNotFound) {
		return p, err
	}
	ids := []string{v.InitiatorID, p.Explanation.AskedBy.InitiatorID, v.InitiatedVia}
	for _, s := range p.Explanation.LaterStarts {
		ids = append(ids, s.InitiatorID, opt(s.Via))
	}
	for _, e := range p.Events {
		ids = append(ids, e.Metadata.Actor, e.Metadata.Via)
	}
	if p.People, err = c.people(ctx, ids); err != nil {
		return p, err
	}
	if len(v.Summary) > 0 {
		var pretty bytes.Buffer
		if json.Indent(&pretty, v.Summary, "", "  ") == nil {
			p.Summary = pretty.String()
		}
	}
	if v.Status.Active() {
		p.CanCancel = c.can(ec, v.TenantID, cancelCapability(v.Run))
	} else if op, ok := domain.LookupOperation(v.Type); ok {
		p.CanRerun, p.Restore = c.can(ec, v.TenantID, op.Capability), op.Type == domain.OpRestoreExecute
	}
	return p, nil
}

// cancelCapability is what cancelling run needs: its surface's capability.
func cancelCapability(run domain.Run) domain.Capability {
	if s, ok := domain.LookupSurface(run.Surface); ok {
		return s.Capability
	}
	if op, ok := domain.LookupOperation(run.Type); ok {
		return op.Capability
	}
	return domain.CapOperationsView
}

// can reports whether the user holds capability on tenant (for showing
// actions; the services decide).
func (c *Console) can(ec echo.Context, tenantID string, capability domain.Capability) bool {
	return c.d.Tenancy.Authorize(c.ctx(ec), actorOf(ec), tenantID, capability) == nil
}

func (c *Console) cancel(ec echo.Context) error {
	id := strings.ToUpper(ec.Param("runId"))
	if _, err := c.d.Gate.CancelRun(c.ctx(ec), actorOf(ec), id); err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/operations/"+id)
}

// rerun starts a run's operation again (contract section 12) and shows
// the outcome in the presenter's words, as every start of the console.
func (c *Console) rerun(ec echo.Context) error {
	resp, err := c.d.Gate.Rerun(c.ctx(ec), gate.RerunRequest{Actor: actorOf(ec), RunID: strings.ToUpper(ec.Param("runId")),
		Confirm: ec.FormValue("confirm") == "yes", AcknowledgeWarnings: ec.FormValue("acknowledge_warnings") == "yes"})
	if err != nil {
		return err
	}
	return c.outcome(ec, resp)
}

// ---- connections and starts

type connectionsPage struct {
	TenantID, TenantName string
	// Default is the tenant's default connection, nil if it has none.
	Default     *connections.Connection
	Connections []connectionRow
	// TenantStarts are the tenant's buttons, on its default connection.
	TenantStarts startGroup
	// CanStart is whether the user may press any button of the page.
	CanStart bool
	People   people
}

type connectionRow struct {
	connections.Connection
	Holding *projections.RunView
	Starts  startGroup
}

// connections shows a tenant's provider connections, their readiness, the
// run holding each scope, and the start buttons, each saying before the
// click what it would get (availability).
func (c *Console) connections(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	ctx, user := c.ctx(ec), actorOf(ec)
	list, err := c.d.Connections.List(ctx, user, tenant)
	if err != nil {
		return err
	}
	p := connectionsPage{TenantID: tenant}
	members, err := c.d.Tenancy.Memberships(ctx, user)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.TenantID == tenant {
			p.TenantName = m.TenantName
		}
	}
	tenantStarts, connStarts, err := c.availability(ctx, user, tenant, list)
	if err != nil {
		return err
	}
	p.TenantStarts, p.CanStart = tenantStarts, tenantStarts.Permitted
	active, err := c.d.Reader.ActiveRuns(ctx, tenant)
	if err != nil {
		return err
	}
	for i, conn := range list {
		if conn.IsDefault {
			p.Default = &list[i]
		}
		row := connectionRow{Connection: conn, Starts: connStarts[conn.ID]}
		if v, ok := active[conn.ID]; ok {
			row.Holding = &v
		}
		p.CanStart = p.CanStart || row.Starts.Permitted
		p.Connections = append(p.Connections, row)
	}
	var changers []string
	for _, conn := range list {
		if by := conn.ReadinessChangedBy; by != nil && by.Kind == "operator" {
			changers = append(changers, by.ID)
		}
	}
	if p.People, err = c.people(ctx, changers); err != nil {
		return err
	}
	return c.render(ec, http.StatusOK, "connections", "Provider connections", p)
}

// connection sends a connection's link (a next step's) to its tenant's page.
func (c *Console) connection(ec echo.Context) error {
	id := strings.ToUpper(ec.Param("connectionId"))
	conn, err := c.d.Connections.Get(c.ctx(ec), actorOf(ec), id)
	if err != nil {
		return err
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/tenants/"+conn.TenantID+"/connections#connection-"+conn.ID)
}

type outcomePage struct {
	Result domain.StartResult
	Status int
	// RunLinked is whether a next step already links to the run.
	RunLinked bool
}

// start starts an operation from a button of the connections page,
// through the one gate, and shows the outcome in the presenter's words
// with the API's status.
func (c *Console) start(ec echo.Context) error {
	surface, ok := domain.LookupSurface(ec.FormValue("surface"))
	if !ok || surface.Operation == "" || surface.Operation == domain.OpRestoreExecute {
		return domain.Invalid("surface", "%q is not a start of this page", ec.FormValue("surface"))
	}
	req := gate.StartRequest{Actor: actorOf(ec), Surface: surface}
	switch surface.Scope {
	case domain.ScopeTenant:
		req.TenantID = strings.ToUpper(ec.FormValue("tenant_id"))
		req.ConnectionID = strings.ToUpper(ec.FormValue("connection_id"))
	case domain.ScopeConnection:
		req.ConnectionID = strings.ToUpper(ec.FormValue("connection_id"))
	}
	if req.TenantID == "" && req.ConnectionID == "" {
		return domain.Invalid("connection_id", "name a connection")
	}
	resp, err := c.d.Gate.Start(c.ctx(ec), req)
	if err != nil {
		return err
	}
	return c.outcome(ec, resp)
}

// outcome shows a start's outcome in the presenter's words: its title,
// body and next steps, the tone as colour and symbol; the outcome's code,
// the API's status and the reason's code for support, in a details
// element.
func (c *Console) outcome(ec echo.Context, resp gate.StartResponse) error {
	status := api.StatusOf(resp.Result.Outcome)
	p := outcomePage{Result: resp.Result, Status: status}
	p.RunLinked = len(stepsBesides(resp.Result.NextSteps, resp.Result.Run.ID)) < len(resp.Result.NextSteps)
	return c.render(ec, status, "outcome", resp.Result.Message.Title, p)
}

// ---- audit trail

type auditPage struct {
	TenantID  string
	Events    []auditEvent
	NextAfter string
	People    people
	// Checkpoint is the latest signed checkpoint of the tenant's tree (nil
	// until one is signed).
	Checkpoint *auditCheckpoint
}

// auditEvent is a listed event with its seq in the tenant's chain (0
// until the chainer linked it) and whether the latest checkpoint covers
// it, so that its proof can be downloaded.
type auditEvent struct {
	audit.Hashed
	Seq    int64
	Signed bool
}

// auditCheckpoint is a signed checkpoint as the page shows it: what its
// note says, and the note itself.
type auditCheckpoint struct {
	Origin string
	Size   int64
	Root   string
	Note   string
}

func (c *Console) auditTrail(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	ctx := c.ctx(ec)
	if err := c.d.Tenancy.Authorize(ctx, actorOf(ec), tenant, domain.CapAuditRead); err != nil {
		return err
	}
	var after int64
	if v := ec.QueryParam("after"); v != "" {
		var err error
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return domain.Invalid("after", "must be the position of an event")
		}
	}
	events, err := c.d.Store.ReadTenant(ctx, tenant, after, 50)
	if errors.Is(err, eventstore.ErrUnknownPosition) {
		return domain.Invalid("after", "names no event")
	}
	if err != nil {
		return err
	}
	hashed, err := c.history.WithHashes(ctx, events)
	if err != nil {
		return err
	}
	seqs, err := c.seqsOf(ctx, tenant, events)
	if err != nil {
		return err
	}
	cp, err := c.latestCheckpoint(ctx, tenant)
	if err != nil {
		return err
	}
	listed := make([]auditEvent, len(hashed))
	for i, h := range hashed {
		seq := seqs[h.Position]
		listed[i] = auditEvent{Hashed: h, Seq: seq, Signed: cp != nil && seq > 0 && seq <= cp.Size}
	}
	actors := make([]string, 0, len(events))
	for _, e := range events {
		actors = append(actors, e.Metadata.Actor, e.Metadata.Via)
	}
	people, err := c.people(ctx, actors)
	if err != nil {
		return err
	}
	p := auditPage{TenantID: tenant, Events: listed, People: people, Checkpoint: cp}
	if len(events) == 50 {
		p.NextAfter = strconv.FormatInt(events[len(events)-1].Position, 10)
	}
	return c.render(ec, http.StatusOK, "audit", "Audit trail", p)
}

// seqsOf returns the seq in the tenant's chain of each of events that the
// chainer linked, by position, in one query.
func (c *Console) seqsOf(ctx context.Context, tenant string, events []eventstore.Event) (map[int64]int64, error) {
	positions := make([]int64, len(events))
	for i, e := range events {
		positions[i] = e.Position
	}
	seqs := make(map[int64]int64, len(events))
	if len(positions) == 0 {
		return seqs, nil
	}
	rows, err := c.d.Pool.Query(ctx, `SELECT position, seq FROM audit_chain WHERE chain = $1 AND position = ANY($2::bigint[])`, tenant, positions)
	if err != nil {
		return nil, fmt.Errorf("read the seqs of tenant %s's events: %w", tenant, err)
	}
	defer rows.Close()
	for rows.Next() {
		var position, seq int64
		if err := rows.Scan(&position, &seq); err != nil {
			return nil, fmt.Errorf("read the seqs of tenant %s's events: %w", tenant, err)
		}
		seqs[position] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the seqs of tenant %s's events: %w", tenant, err)
	}
	return seqs, nil
}

// latestCheckpoint is the tenant's latest signed checkpoint as the page
// shows it, nil while none is signed. The console has no verifier key: it
// shows what the note says; auditors check its signature themselves.
func (c *Console) latestCheckpoint(ctx context.Context, tenant string) (*auditCheckpoint, error) {
	signed, err := c.history.LatestCheckpoint(ctx, tenant)
	if errors.Is(err, audit.ErrNoCheckpoint) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// A note is its text, a blank line, then its signature lines.
	text, _, _ := strings.Cut(string(signed.Note), "\n\n")
	cp, err := audit.ParseCheckpoint(text + "\n")
	if err != nil {
		return nil, fmt.Errorf("the latest checkpoint of tenant %s: %w", tenant, err)
	}
	return &auditCheckpoint{Origin: cp.Origin, Size: signed.Size, Root: base64.StdEncoding.EncodeToString(cp.Root[:]),
		Note: string(signed.Note)}, nil
}

// auditExport downloads the tenant's chained history as NDJSON, the same
// export as the API's, to verify offline with opsgate audit verify --file.
func (c *Console) auditExport(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	if err := c.d.Tenancy.Authorize(c.ctx(ec), actorOf(ec), tenant, domain.CapAuditRead); err != nil {
		return err
	}
	ec.Response().Header().Set("Content-Disposition", `attachment; filename="audit-`+tenant+`.ndjson"`)
	return api.StreamExport(ec.Response(), c.history.Lines(c.ctx(ec), tenant, 0))
}

// auditCheckpointNote downloads the tenant's latest signed checkpoint, the
// note as GET /api/v1/audit/checkpoint answers it, for opsgate audit
// verify --checkpoint and audit watch.
func (c *Console) auditCheckpointNote(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	ctx := c.ctx(ec)
	if err := c.d.Tenancy.Authorize(ctx, actorOf(ec), tenant, domain.CapAuditRead); err != nil {
		return err
	}
	cp, err := c.history.LatestCheckpoint(ctx, tenant)
	if err != nil {
		return err
	}
	download(ec, "checkpoint-"+tenant+"-"+strconv.FormatInt(cp.Size, 10)+".txt")
	return ec.Blob(http.StatusOK, "text/plain; charset=utf-8", cp.Note)
}

// auditProof downloads the proof that the event of ?seq is in the
// tenant's tree of the latest checkpoint, as GET /api/v1/audit/proof
// answers it, to check offline with opsgate audit verify-proof.
func (c *Console) auditProof(ec echo.Context) error {
	tenant := strings.ToUpper(ec.Param("tenantId"))
	ctx := c.ctx(ec)
	if err := c.d.Tenancy.Authorize(ctx, actorOf(ec), tenant, domain.CapAuditRead); err != nil {
		return err
	}
	seq, err := strconv.ParseInt(ec.QueryParam("seq"), 10, 64)
	if err != nil || seq < 1 {
		return domain.Invalid("seq", "must be the seq of an event in the tenant's chain: a whole number from 1")
	}
	p, err := c.history.Prove(ctx, tenant, seq, 0)
	if err != nil {
		return err
	}
	download(ec, "proof-"+tenant+"-"+strconv.FormatInt(seq, 10)+".json")
	return ec.JSON(http.StatusOK, p)
}

// download makes the answer a file to save as name.
func download(ec echo.Context, name string) {
	h := ec.Response().Header()
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

// ---- template helpers

var funcs = template.FuncMap{
	"opt": opt,
	"when": func(t any) string {
		switch t := t.(type) {
		case time.Time:
			return t.UTC().Format("2006-01-02 15:04:05")
		case *time.Time:
			if t == nil {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		}
		return ""
	},
	"iso": func(t any) string {
		switch t := t.(type) {
		case time.Time:
			return t.UTC().Format(time.RFC3339)
		case *time.Time:
			if t != nil {
				return t.UTC().Format(time.RFC3339)
			}
		}
		return ""
	},
	// statusMark is a status's symbol: tone is never shown by colour alone.
	"statusMark": func(s domain.RunStatus) string {
		return map[domain.RunStatus]string{domain.StatusQueued: "◷", domain.StatusRunning: "▶", domain.StatusSucceeded: "✓",
			domain.StatusFailed: "✕", domain.StatusCancelled: "⊘", domain.StatusBlocked: "!"}[s]
	},
	// deliveryMark is a webhook delivery's state's symbol, as statusMark
	// a run's.
	"deliveryMark": func(state string) string {
		return map[string]string{webhooks.StatePending: "◷", webhooks.StateDelivered: "✓", webhooks.StateFailed: "✕",
			webhooks.StateGaveUp: "⊘"}[state]
	},
	"deliveryError": deliveryError,
	// words is a value of the API in words ("gave_up": "gave up").
	"words": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"toneMark": func(t domain.Tone) string {
		return map[domain.Tone]string{domain.ToneSuccess: "✓", domain.ToneInfo: "ℹ", domain.ToneWarning: "!", domain.ToneDanger: "✕"}[t]
	},
	// href turns a next step's API link into the console page that shows it.
	"href": func(h *string) string {
		if h == nil {
			return ""
		}
		return consoleHref(*h)
	},
	"startLabel":   startLabel,
	"surfaceLabel": surfaceLabel,
	"surfaceNote":  surfaceNote,
	"reasonLabel":  reasonLabel,
	"outcomeLabel": outcomeLabel,
	"runOutcome":   runOutcome,
	"upper":        upperFirst,
	// opLabel is an operation type's label ("Inventory sync").
	"opLabel": func(t string) string {
		if op, ok := domain.LookupOperation(t); ok {
			return op.Label
		}
		return t
	},
	// cancelWords and cancelMark say what cancelling a selected run did.
	"cancelWords": func(result string) string {
		return map[string]string{"cancelled": "Cancelled", "ended": "Already ended", "forbidden": "Not allowed",
			"missing": "Not found"}[result]
	},
	"cancelMark": func(result string) string {
		return map[string]string{"cancelled": "⊘", "ended": "•", "forbidden": "✕", "missing": "?"}[result]
	},
	// ago is how long ago t was ("2 min ago"), as the page is rendered.
	"ago": func(t time.Time) string { return ago(t, time.Now()) },
	// since is when an active run began: its start, or its acceptance
	// while it waits.
	"since": func(r *domain.Run) time.Time {
		if r.StartedAt != nil {
			return *r.StartedAt
		}
		return r.CreatedAt
	},
	// availMark is the symbol of what a start button would get.
	"availMark": func(kind string) string {
		return map[string]string{"accepted": "✓", "deduped": "↻", "scope_busy": "◷", "blocked": "✕", "forbidden": "⊘"}[kind]
	},
	"startsOf": func(g startGroup, csrf string) any {
		return struct {
			Group startGroup
			CSRF  string
		}{g, csrf}
	},
	"list": func(b ...startButton) []startButton { return b },
	"startOf": func(b startButton, csrf string) any {
		return struct {
			Button startButton
			CSRF   string
		}{b, csrf}
	},
	"short": shortID,
	"json": func(raw json.RawMessage) string {
		var b bytes.Buffer
		if json.Indent(&b, raw, "", "  ") != nil {
			return string(raw)
		}
		return b.String()
	},
	"deref": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"statusText": http.StatusText,
	"eq2":        func(a, b string) bool { return a == b },
	"str":        func(v any) string { return fmt.Sprint(v) },
}

// consoleHref is the console page of an API link of a next step, "" if
// the console has none.
func consoleHref(h string) string {
	if rest, ok := strings.CutPrefix(h, "/api/v1/operations/"); ok {
		if id, ok := strings.CutSuffix(rest, "/rerun"); ok && !strings.Contains(id, "/") {
			// Running a run again is a form of the run's page.
			return Prefix + "/operations/" + id + "#rerun"
		}
		if !strings.Contains(rest, "/") {
			return Prefix + "/operations/" + rest
		}
	}
	if rest, ok := strings.CutPrefix(h, "/api/v1/provider-connections/"); ok {
		// The connection's card, where its check is one of the buttons.
		if id, ok := strings.CutSuffix(rest, "/check"); ok && !strings.Contains(id, "/") {
			return Prefix + "/connections/" + id
		}
		if !strings.Contains(rest, "/") {
			return Prefix + "/connections/" + rest
		}
	}
	if rest, ok := strings.CutPrefix(h, "/api/v1/tenants/"); ok {
		if id, ok := strings.CutSuffix(rest, "/provider-connections"); ok && !strings.Contains(id, "/") {
			return Prefix + "/tenants/" + id + "/connections"
		}
	}
	return ""
}

// opt is an optional string's value ("" for nil).
func opt(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
