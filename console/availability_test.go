package console_test

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// forbiddenWords are what an operator's page shows only for support,
// inside a details element: reason codes, surface codes, operation type
// codes, outcome codes, HTTP statuses, and tones as words.
func forbiddenWords() []*regexp.Regexp {
	var codes []string
	for _, c := range domain.ReasonCodes() {
		codes = append(codes, string(c))
	}
	for _, s := range domain.Surfaces() {
		codes = append(codes, s.Name)
	}
	codes = append(codes, domain.RerunSurfaceName, string(domain.OutcomeScopeBusy))
	for _, op := range domain.Operations() {
		codes = append(codes, op.Type, op.Canonical)
	}
	var res []*regexp.Regexp
	for _, c := range codes {
		res = append(res, regexp.MustCompile(`(^|[^\w.])`+regexp.QuoteMeta(c)+`($|[^\w])`))
	}
	// A status by its number, or its text where that is not also a word
	// of the presenter's ("Accepted").
	for _, status := range []int{200, 202, 400, 403, 404, 409, 422} {
		res = append(res, regexp.MustCompile(`\b`+strconv.Itoa(status)+`\b`))
	}
	res = append(res, regexp.MustCompile(`Unprocessable Entity|Bad Request`))
	return append(res, regexp.MustCompile(`(?i)\btone\b`), regexp.MustCompile(`(?i)\b(danger|warning|success|info)\b`))
}

// codesShown lists the forbidden words in text, what an operator sees.
func codesShown(text string) []string {
	var found []string
	for _, re := range forbiddenWords() {
		if m := re.FindString(text); m != "" {
			found = append(found, strings.TrimSpace(m))
		}
	}
	return found
}

var (
	detailsBlock = regexp.MustCompile(`(?s)<details.*?</details>|<script.*?</script>|<noscript>.*?</noscript>|<title>.*?</title>`)
	blockTag     = regexp.MustCompile(`(?i)</?(p|div|li|ul|ol|tr|td|th|dt|dd|dl|h[1-6]|br|section|table|thead|tbody|option|form|label|nav|header|main)\b[^>]*>`)
	anyTag       = regexp.MustCompile(`(?s)<[^>]*>`)
	spaces       = regexp.MustCompile(`\s+`)
)

// pageText is the text of an HTML page outside its details elements,
// roughly as a browser shows it (the browser test reads the real thing).
func pageText(page string) string {
	text := anyTag.ReplaceAllString(blockTag.ReplaceAllString(detailsBlock.ReplaceAllString(page, " "), " "), "")
	return strings.TrimSpace(spaces.ReplaceAllString(html.UnescapeString(text), " "))
}

// noCodes fails the test if page shows a code outside its details.
func noCodes(t *testing.T, what, page string) {
	t.Helper()
	if found := codesShown(pageText(page)); len(found) > 0 {
		t.Errorf("%s shows %q outside its details for support:\n%s", what, found, pageText(page))
	}
}

// startForm finds the start form of surface on the card of id
// (connection-<id> or tenant-operations) and returns its outcome.
func startForm(t *testing.T, page, card, surface string) string {
	t.Helper()
	at := strings.Index(page, `id="`+card+`"`)
	if at < 0 {
		t.Fatalf("no card %s:\n%s", card, page)
	}
	section := page[at:]
	section = section[:strings.Index(section, "</section>")]
	m := regexp.MustCompile(`<form method="post" action="/console/start" data-surface="` + surface + `" data-outcome="([a-z_]*)"`).FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("card %s has no %s button:\n%s", card, surface, section)
	}
	return m[1]
}

// card is the HTML of a card of the connections page.
func card(page, id string) string {
	at := strings.Index(page, `id="`+id+`"`)
	if at < 0 {
		return ""
	}
	s := page[at:]
	return s[:strings.Index(s, "</section>")]
}

// TestConnectionsSayWhatEachStartWouldGet: each start button of the
// connections page says before the click what it would get, decided as a
// dry run that records nothing: a normal button; the run it would be
// deduped with or meet on a busy connection; greyed with the reason and
// its next step when blocked (and still pressable: the blocked start is
// recorded); none for a member who may not start.
func TestConnectionsSayWhatEachStartWouldGet(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	readonly := a.Member(t, "Rae", tenant, domain.RoleReadonly)
	busy := a.Connection(t, owner.ID, tenant, "Graph (prod)", apptest.AsDefault, apptest.Latency(60_000)).ID
	free := a.Connection(t, owner.ID, tenant, "Graph (lab)").ID
	noConsent := a.Connection(t, owner.ID, tenant, "Graph (no consent)", apptest.Consent(domain.ConsentMissing)).ID
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceInventorySync, busy)).Run.ID
	apptest.WaitFor(t, 30*time.Second, "the worker to start the run", func() bool { return a.RunStatus(t, run) == domain.StatusRunning })

	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)
	events := a.Count(t, `SELECT count(*) FROM events`)
	resp, page := c.do("GET", "/console/tenants/"+tenant+"/connections", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("connections: %d", resp.StatusCode)
	}
	if n := a.Count(t, `SELECT count(*) FROM events`); n != events {
		t.Errorf("showing the page recorded %d events", n-events)
	}
	for _, want := range []struct{ card, surface, outcome string }{
		{"connection-" + busy, "inventory_sync", "deduped"},
		{"connection-" + busy, "compliance_snapshot", "scope_busy"},
		{"connection-" + busy, "connection_check", "scope_busy"},
		{"tenant-operations", "tenant_verification", "scope_busy"},
		{"tenant-operations", "directory_groups_sync", "scope_busy"},
		{"connection-" + free, "inventory_sync", "accepted"},
		{"connection-" + free, "connection_check", "accepted"},
		{"connection-" + noConsent, "inventory_sync", "blocked"},
		{"connection-" + noConsent, "compliance_snapshot", "blocked"},
	} {
		if got := startForm(t, page, want.card, want.surface); got != want.outcome {
			t.Errorf("%s on %s would get %q, want %q", want.surface, want.card, got, want.outcome)
		}
	}
	busyCard := card(page, "connection-"+busy)
	if !strings.Contains(busyCard, `Already running: <a href="/console/operations/`+run+`">Inventory sync</a>`) ||
		!strings.Contains(busyCard, `Busy: <a href="/console/operations/`+run+`">Inventory sync</a> is running (started`) {
		t.Errorf("the busy connection's buttons do not name the run they would meet:\n%s", busyCard)
	}
	blocked := card(page, "connection-"+noConsent)
	if strings.Count(blocked, "Admin consent for the provider connection was never granted") != 1 ||
		!strings.Contains(blocked, `Next: <a href="/console/connections/`+noConsent+`">Grant admin consent for the provider connection</a>`) ||
		strings.Count(blocked, `class="start-blocked" aria-describedby="avail-`+noConsent+`"`) != 3 {
		t.Errorf("the connection without consent does not say once why its three greyed buttons are blocked and what to do:\n%s", blocked)
	}
	if freeCard := card(page, "connection-"+free); strings.Contains(freeCard, `class="availability`) || strings.Count(freeCard, `class="start-accepted"`) != 3 {
		t.Errorf("a ready connection's buttons are not plain:\n%s", freeCard)
	}
	noCodes(t, "the connections page", page)

	// A greyed button is still pressed: the blocked start is recorded.
	resp, page = c.do("POST", "/console/start", url.Values{"csrf": {csrf}, "surface": {"inventory_sync"}, "connection_id": {noConsent}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(page, `id="outcome">blocked<`) {
		t.Fatalf("pressing the greyed button: %d\n%s", resp.StatusCode, page)
	}
	if run := regexp.MustCompile(`data-run="([0-9A-Z]{26})"`).FindStringSubmatch(page)[1]; a.RunStatus(t, run) != domain.StatusBlocked {
		t.Errorf("the blocked start's run %s is %s", run, a.RunStatus(t, run))
	}

	// A member who may start nothing sees no buttons, and is told why.
	r := newClient(t, a.URL)
	r.signIn(readonly.Token)
	if _, page = r.do("GET", "/console/tenants/"+tenant+"/connections", nil); strings.Contains(page, `action="/console/start"`) ||
		!strings.Contains(page, "not start operations") {
		t.Errorf("a readonly member's connections page:\n%s", page)
	}
}

// TestOperatorsWording: the outcome page, a run's page and the
// Operations view show the presenter's title, body and next steps, reasons
// and surfaces by their labels, and keep codes and HTTP statuses for
// support inside a details element; a run's page offers no "View the run".
func TestOperatorsWording(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	a.Connection(t, owner.ID, tenant, "Graph (prod)", apptest.AsDefault)
	noConsent := a.Connection(t, owner.ID, tenant, "Graph (no consent)", apptest.Consent(domain.ConsentMissing)).ID
	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)

	resp, page := c.do("POST", "/console/start", url.Values{"csrf": {csrf}, "surface": {"inventory_sync"}, "connection_id": {noConsent}})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("a blocked start: %d", resp.StatusCode)
	}
	text := pageText(page)
	if strings.Count(text, "Admin consent for the provider connection was never granted") != 1 {
		t.Errorf("the outcome page does not say the reason once:\n%s", text)
	}
	for _, want := range []string{"Inventory sync blocked", "Next steps", "Grant admin consent for the provider connection", "Run the connection check again"} {
		if !strings.Contains(text, want) {
			t.Errorf("the outcome page does not say %q:\n%s", want, text)
		}
	}
	if !strings.Contains(page, "<summary>Details for support</summary>") || !strings.Contains(page, "<dd>422 Unprocessable Entity</dd>") ||
		!strings.Contains(page, "<code>provider_connection.consent_missing</code>") {
		t.Errorf("the outcome page's details for support lack the status or the reason's code:\n%s", page)
	}
	noCodes(t, "the outcome page", page)
	run := regexp.MustCompile(`data-run="([0-9A-Z]{26})"`).FindStringSubmatch(page)[1]

	_, page = c.do("GET", "/console/operations/"+run, nil)
	noCodes(t, "the blocked run's page", page)
	if text := pageText(page); !strings.Contains(text, "Consent missing") || !strings.Contains(text, "Grant admin consent") {
		t.Errorf("the blocked run's page does not name its reason and next step:\n%s", text)
	}
	_, page = c.do("GET", "/console/operations?tenant_id="+tenant, nil)
	noCodes(t, "the Operations view", page)
	if !strings.Contains(page, ">Blocked: consent missing</span>") {
		t.Errorf("the Operations view's outcome is not in words:\n%s", page)
	}

	// A run that succeeded: its page has no next step to view itself.
	ok := a.Expect(t, domain.OutcomeAccepted, apptest.TenantStart(owner.ID, domain.SurfaceTenantVerification, tenant, "")).Run.ID
	apptest.WaitFor(t, 30*time.Second, "the verification to succeed", func() bool { return a.RunStatus(t, ok) == domain.StatusSucceeded })
	_, page = c.do("GET", "/console/operations/"+ok, nil)
	if strings.Contains(page, "View the run") || strings.Contains(page, "Follow the run") {
		t.Errorf("a run's page offers to view the run:\n%s", page)
	}
	if !strings.Contains(page, `<span class="person" title="`+owner.ID+`">Ana</span> · Verify tenant</dd>`) {
		t.Errorf("the run's page does not say it was started with Verify tenant:\n%s", page)
	}
	noCodes(t, "the succeeded run's page", page)
	_, page = c.do("GET", "/console/operations/rows?tenant_id="+tenant, nil)
	noCodes(t, "the Operations rows", page)
}

// TestCancelSelected: the Operations view's "Cancel selected" cancels
// each selected run through the gate as the signed-in user, as if alone,
// and says what became of each: cancelled, already ended, not allowed,
// not found.
func TestCancelSelected(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	readonly := a.Member(t, "Rae", tenant, domain.RoleReadonly)
	other := a.Tenant(t, ws.ID, "Fabrikam").ID
	otto := a.Member(t, "Otto", other, domain.RoleOwner)
	executorOf(t, a, "acme") // live, and claims nothing: the runs stay queued
	queued := func(owner, tenant, name string) string {
		conn := a.Connection(t, owner, tenant, name, apptest.Provider("acme")).ID
		return a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn)).Run.ID
	}
	first, second, third := queued(owner.ID, tenant, "Acme 1"), queued(owner.ID, tenant, "Acme 2"), queued(owner.ID, tenant, "Acme 3")
	elsewhere := queued(otto.ID, other, "Acme (Fabrikam)")
	if _, err := a.Gate.CancelRun(a.Ctx, apptest.As(owner.ID), third); err != nil {
		t.Fatal(err)
	}

	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)
	var page string
	apptest.WaitFor(t, 30*time.Second, "the queued runs to be listed", func() bool {
		_, page = c.do("GET", "/console/operations?tenant_id="+tenant, nil)
		return strings.Contains(page, `value="`+first+`" form="cancel-selected"`) && strings.Contains(page, `value="`+second+`" form="cancel-selected"`) &&
			strings.Contains(page, `id="run-`+third+`" data-status="cancelled"`)
	})
	if !strings.Contains(page, `<form method="post" action="/console/operations/cancel" id="cancel-selected"`) ||
		strings.Contains(page, `value="`+third+`" form="cancel-selected"`) {
		t.Errorf("the Operations view's checkboxes: only the queued and running runs may be selected:\n%s", page)
	}

	form := url.Values{"ids": {first, second, third, elsewhere}, "back": {"tenant_id=" + tenant}}
	if resp, _ := c.do("POST", "/console/operations/cancel", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cancel selected without the CSRF token: %d", resp.StatusCode)
	}
	form.Set("csrf", csrf)
	resp, page := c.do("POST", "/console/operations/cancel", form)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel selected: %d\n%s", resp.StatusCode, page)
	}
	for id, want := range map[string]string{first: "cancelled", second: "cancelled", third: "ended", elsewhere: "missing"} {
		if !strings.Contains(page, `id="cancelled-`+id+`" data-result="`+want+`"`) {
			t.Errorf("run %s is not said to be %s:\n%s", id, want, page)
		}
	}
	if !strings.Contains(pageText(page), "2 of 4 selected runs were cancelled; 1 had already ended; 1 could not be found.") ||
		!strings.Contains(page, `href="/console/operations?tenant_id=`+tenant+`"`) {
		t.Errorf("the summary:\n%s", pageText(page))
	}
	for _, id := range []string{first, second} {
		if got := a.RunStatus(t, id); got != domain.StatusCancelled {
			t.Errorf("run %s is %s after cancel selected", id, got)
		}
	}
	if got := a.RunStatus(t, elsewhere); got != domain.StatusQueued {
		t.Errorf("another tenant's run is %s", got)
	}
	form.Del("ids")
	if resp, _ := c.do("POST", "/console/operations/cancel", form); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("cancel selected with nothing selected: %d", resp.StatusCode)
	}

	// A member who may not cancel has no form, and a forged one is refused
	// run by run.
	r := newClient(t, a.URL)
	rcsrf := r.signIn(readonly.Token)
	fourth := queued(owner.ID, tenant, "Acme 4")
	if _, page = r.do("GET", "/console/operations", nil); strings.Contains(page, `id="cancel-selected"`) {
		t.Errorf("a readonly member sees the cancel form")
	}
	resp, page = r.do("POST", "/console/operations/cancel", url.Values{"csrf": {rcsrf}, "ids": {fourth}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="cancelled-`+fourth+`" data-result="forbidden"`) {
		t.Errorf("a readonly member's cancel: %d\n%s", resp.StatusCode, page)
	}
	if got := a.RunStatus(t, fourth); got != domain.StatusQueued {
		t.Errorf("a readonly member's cancel left the run %s", got)
	}
}
