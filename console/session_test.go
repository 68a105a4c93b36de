package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// client is a browser without a browser: cookies, no redirects followed.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func newClient(t *testing.T, base string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: base, http: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var hiddenField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in with token and returns the session's CSRF token.
func (c *client) signIn(token string) string {
	c.t.Helper()
	_, page := c.do("GET", "/console/sign-in", nil)
	m := hiddenField.FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("the sign-in page has no nonce: %s", page)
	}
	resp, _ := c.do("POST", "/console/sign-in", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/console/operations"}})
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in: %d", resp.StatusCode)
	}
	_, page = c.do("GET", "/console/operations", nil)
	if m = hiddenField.FindStringSubmatch(page); m == nil {
		c.t.Fatalf("the Operations page has no CSRF token: %s", page)
	}
	return m[1]
}

func TestSessionsAndForms(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	outsider := a.Member(t, "Otto", a.Tenant(t, ws.ID, "Fabrikam").ID, domain.RoleOwner)
	conn := a.Connection(t, owner.ID, tenant, "Graph", apptest.AsDefault, apptest.Latency(60_000)).ID // its run stays active: later starts are deduped

	c := newClient(t, a.URL)
	if resp, _ := c.do("GET", "/console/operations", nil); resp.StatusCode != http.StatusSeeOther ||
		!strings.HasPrefix(resp.Header.Get("Location"), "/console/sign-in?next=") {
		t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The sign-in form's nonce must match its cookie.
	c.do("GET", "/console/sign-in", nil)
	if resp, _ := c.do("POST", "/console/sign-in", url.Values{"csrf": {"forged"}, "token": {owner.Token}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in with a forged nonce: %d", resp.StatusCode)
	}
	_, page := c.do("GET", "/console/sign-in", nil)
	nonce := hiddenField.FindStringSubmatch(page)[1]
	if resp, page := c.do("POST", "/console/sign-in", url.Values{"csrf": {nonce}, "token": {"oga_not-a-token"}}); resp.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(page, "not valid") {
		t.Errorf("sign-in with a bad token: %d", resp.StatusCode)
	}
	_, page = c.do("GET", "/console/sign-in", nil)
	nonce = hiddenField.FindStringSubmatch(page)[1]
	resp, _ := c.do("POST", "/console/sign-in", url.Values{"csrf": {nonce}, "token": {owner.Token}, "next": {"//evil.example/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/operations" {
		t.Errorf("sign-in: %d to %s, want the Operations view (never another site)", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "opsgate_console" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.MaxAge <= 0 || session.Path != "/console" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, expiring, path /console", session)
	}
	var stored int
	if err := a.Pool.QueryRow(a.Ctx, `SELECT count(*) FROM console_sessions WHERE id_hash = sha256($1::bytea)`, []byte(session.Value)).Scan(&stored); err != nil || stored != 1 {
		t.Errorf("the session is stored by its hash: %d, %v", stored, err)
	}
	_, page = c.do("GET", "/console/operations", nil)
	csrf := hiddenField.FindStringSubmatch(page)[1]

	// Every state-changing form needs the session's CSRF token.
	start := url.Values{"surface": {"inventory_sync"}, "connection_id": {conn}}
	if resp, _ := c.do("POST", "/console/start", start); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a start without a CSRF token: %d", resp.StatusCode)
	}
	start.Set("csrf", csrf)
	resp, page = c.do("POST", "/console/start", start)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(page, `id="outcome">accepted<`) {
		t.Fatalf("a start: %d %s", resp.StatusCode, page)
	}
	run := regexp.MustCompile(`/console/operations/([0-9A-Z]{26})`).FindStringSubmatch(page)[1]
	if resp, page = c.do("POST", "/console/start", start); resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="outcome">deduped<`) {
		t.Errorf("the same start again: %d", resp.StatusCode)
	}

	// Actors are shown by name, escaped, with their id on hover: on the
	// run's page (who started it, who was answered deduped) and in the
	// Operations view; the surface only where it says more than the run's
	// label, and never by its code.
	bo := a.Member(t, "Bo <b>&", tenant, domain.RoleOperator)
	a.Expect(t, domain.OutcomeDeduped, apptest.ConnStart(bo.ID, domain.SurfaceInventorySync, conn))
	_, page = c.do("GET", "/console/operations/"+run, nil)
	ana := `<span class="person" title="` + owner.ID + `">Ana</span>`
	if !strings.Contains(page, "<dd>"+ana+"</dd>") ||
		!strings.Contains(page, `by <span class="person" title="`+bo.ID+`">Bo &lt;b&gt;&amp;</span></li>`) {
		t.Errorf("the run's page does not name Ana as its initiator and Bo as answered deduped:\n%s", page)
	}
	if _, page = c.do("GET", "/console/operations/rows", nil); !strings.Contains(page, "<small>"+ana+"</small>") {
		t.Errorf("the Operations rows do not name Ana:\n%s", page)
	}

	// A member of another tenant gets the page of a run that does not exist.
	o := newClient(t, a.URL)
	o.signIn(outsider.Token)
	hidden, hiddenPage := o.do("GET", "/console/operations/"+run, nil)
	missing, missingPage := o.do("GET", "/console/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV", nil)
	if hidden.StatusCode != http.StatusNotFound || missing.StatusCode != http.StatusNotFound || hiddenPage != missingPage {
		t.Errorf("another tenant's run: %d, a missing run: %d; pages equal: %v", hidden.StatusCode, missing.StatusCode, hiddenPage == missingPage)
	}
	if resp, _ := o.do("GET", "/console/tenants/"+tenant+"/connections", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another tenant's connections: %d", resp.StatusCode)
	}

	// The audit export downloads the chain, which verifies offline.
	a.Fed.Until(t, 30*time.Second, "the chain to link the tenant's events", func() bool {
		return a.Count(t, `SELECT count(*) FROM events e WHERE tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.position = e.position)`, tenant) == 0
	})
	resp, page = c.do("GET", "/console/tenants/"+tenant+"/audit/export", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("export: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if v, err := audit.VerifyFile(strings.NewReader(page)); err != nil || v.Events == 0 {
		t.Errorf("the console's export does not verify: %+v, %v", v, err)
	}
	if resp, _ := o.do("GET", "/console/tenants/"+tenant+"/audit/export", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another tenant's export: %d", resp.StatusCode)
	}

	// Signing out ends the session in the store, not only in the browser.
	if resp, _ := c.do("POST", "/console/sign-out", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %d", resp.StatusCode)
	}
	replay := newClient(t, a.URL)
	u, _ := url.Parse(a.URL + "/console")
	replay.http.Jar.SetCookies(u, []*http.Cookie{{Name: "opsgate_console", Value: session.Value, Path: "/console"}})
	if resp, _ := replay.do("GET", "/console/operations", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a signed-out session's cookie still works: %d", resp.StatusCode)
	}
}

// TestRestoreSafeguards: a restore runs only after a preview, confirmed,
// with its warnings acknowledged; each refusal is a page in the API's words.
func TestRestoreSafeguards(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	a.Connection(t, owner.ID, tenant, "Graph", apptest.AsDefault)
	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)

	if resp, _ := c.do("POST", "/console/restores", url.Values{"csrf": {csrf}, "tenant_id": {tenant}, "name": {"Mailbox"},
		"items": {`[{"name": "mailbox", "overwrite": true}]`}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("draft: %d", resp.StatusCode)
	}
	_, page := c.do("GET", "/console/tenants/"+tenant+"/restores", nil)
	m := regexp.MustCompile(`/console/restores/([0-9A-Z]{26})/execute`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the restores page has no execute form: %s", page)
	}
	execute := "/console/restores/" + m[1] + "/execute"
	expect := func(what string, form url.Values, status int, says string) {
		t.Helper()
		form.Set("csrf", csrf)
		resp, page := c.do("POST", execute, form)
		if resp.StatusCode != status || !strings.Contains(page, says) {
			t.Errorf("%s: %d, want %d saying %q:\n%s", what, resp.StatusCode, status, says, page)
		}
	}
	expect("not confirmed", url.Values{}, http.StatusUnprocessableEntity, "Confirmation required")
	expect("confirmed, never previewed", url.Values{"confirm": {"yes"}}, http.StatusUnprocessableEntity, `id="outcome">blocked<`)
	if resp, _ := c.do("POST", "/console/restores/"+m[1]+"/preview", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("preview: %d", resp.StatusCode)
	}
	if _, page = c.do("GET", "/console/tenants/"+tenant+"/restores", nil); !strings.Contains(page, "overwrites existing data") {
		t.Errorf("the preview's warning is not shown:\n%s", page)
	}
	expect("previewed, warnings not acknowledged", url.Values{"confirm": {"yes"}}, http.StatusUnprocessableEntity, "Warnings not acknowledged")
	expect("confirmed and acknowledged", url.Values{"confirm": {"yes"}, "acknowledge_warnings": {"yes"}}, http.StatusAccepted, `id="outcome">accepted<`)
}

// TestOnboardingPage opens a session, verifies access and bootstraps from
// the console, each start answered in the API's words.
func TestOnboardingPage(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	a.Connection(t, owner.ID, tenant, "Graph", apptest.AsDefault)
	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)

	if resp, _ := c.do("POST", "/console/onboarding", url.Values{"csrf": {csrf}, "tenant_id": {tenant}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("open a session: %d", resp.StatusCode)
	}
	_, page := c.do("GET", "/console/tenants/"+tenant+"/onboarding", nil)
	m := regexp.MustCompile(`/console/onboarding/([0-9A-Z]{26})/verify`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the onboarding page has no verify form: %s", page)
	}
	resp, page := c.do("POST", "/console/onboarding/"+m[1]+"/verify", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(page, `id="outcome">accepted<`) {
		t.Fatalf("verify: %d %s", resp.StatusCode, page)
	}
	verification := regexp.MustCompile(`/console/operations/([0-9A-Z]{26})`).FindStringSubmatch(page)[1]
	apptest.WaitFor(t, 30*time.Second, "the verification to succeed", func() bool { return a.RunStatus(t, verification) == domain.StatusSucceeded })
	resp, page = c.do("POST", "/console/onboarding/"+m[1]+"/bootstrap", url.Values{"csrf": {csrf}, "operations": {"inventory.sync", "compliance.snapshot"}})
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(page, "Inventory sync") {
		t.Fatalf("bootstrap: %d %s", resp.StatusCode, page)
	}
	if _, page = c.do("GET", "/console/tenants/"+tenant+"/onboarding", nil); !strings.Contains(page, "Compliance snapshot") || !strings.Contains(page, "Bootstrap: ") {
		t.Errorf("the session's bootstrap items are not shown: %s", page)
	}
	if resp, _ := c.do("POST", "/console/onboarding/"+m[1]+"/bootstrap", url.Values{"csrf": {csrf}, "operations": {"inventory.sync"}}); resp.StatusCode != http.StatusConflict {
		t.Errorf("a second bootstrap: %d, want 409", resp.StatusCode)
	}

	// A session on a connection without consent: its verify button says
	// before the click that the start would be blocked, why, and what to
	// do.
	noConsent := a.Connection(t, owner.ID, tenant, "Graph (no consent)", apptest.Consent(domain.ConsentMissing)).ID
	if resp, _ := c.do("POST", "/console/onboarding", url.Values{"csrf": {csrf}, "tenant_id": {tenant}, "connection_id": {noConsent}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("open a session on the connection without consent: %d", resp.StatusCode)
	}
	_, page = c.do("GET", "/console/tenants/"+tenant+"/onboarding", nil)
	if !strings.Contains(page, `class="start-blocked"`) ||
		!strings.Contains(pageText(page), "Verify access: Admin consent for the provider connection was never granted or has been revoked. Next: Grant admin consent") {
		t.Errorf("the blocked verification is not announced:\n%s", pageText(page))
	}
}

// TestDisabledUserIsSignedOut: a run the platform started for a user is
// shown as theirs "via" the integration; disabling the user ends their
// open session and stream at once and refuses their sign-in, and enabling
// them restores the session.
func TestDisabledUserIsSignedOut(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	ana := a.Member(t, "Ana", tenant, domain.RoleOwner)
	conn := a.Connection(t, ana.ID, tenant, "Graph", apptest.AsDefault, apptest.Latency(60_000)).ID
	var platform struct {
		ID    string
		Token struct{ Token string }
	}
	a.Must(t, 201, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": ws.ID, "name": "Laravel <platform>"}, &platform)
	run := a.Call(t, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", platform.Token.Token, nil,
		apptest.Header{Key: "Opsgate-On-Behalf-Of", Value: ana.ID}).ExpectStart(t, "accepted").Run.ID

	c := newClient(t, a.URL)
	_, page := c.do("GET", "/console/sign-in", nil)
	nonce := hiddenField.FindStringSubmatch(page)[1]
	if resp, _ := c.do("POST", "/console/sign-in", url.Values{"csrf": {nonce}, "token": {platform.Token.Token}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in with an integration's token: %d, want 401", resp.StatusCode)
	}
	c.signIn(ana.Token)
	by := `<span class="person" title="` + ana.ID + `">Ana</span> via <span class="person" title="integration:` + platform.ID + `">Laravel &lt;platform&gt;</span>`
	apptest.WaitFor(t, 30*time.Second, "the run's page to name Ana via the platform", func() bool {
		resp, page := c.do("GET", "/console/operations/"+run, nil)
		return resp.StatusCode == http.StatusOK && strings.Contains(page, "<dd>"+by+"</dd>") && strings.Contains(page, "asked by "+by)
	})
	if _, page := c.do("GET", "/console/operations/rows", nil); !strings.Contains(page, by) {
		t.Errorf("the Operations rows do not name Ana via the platform:\n%s", page)
	}

	// An open stream of the Operations view.
	req, err := http.NewRequest("GET", a.URL+"/console/operations/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("open the stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()

	a.Must(t, 200, "PATCH", "/api/v1/admin/users/"+ana.ID, apptest.AdminToken, map[string]any{"disabled": true}, nil)
	if resp, _ := c.do("GET", "/console/operations", nil); resp.StatusCode != http.StatusSeeOther ||
		!strings.HasPrefix(resp.Header.Get("Location"), "/console/sign-in") {
		t.Errorf("a disabled user's page: %d %s, want a redirect to sign in", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := c.do("GET", "/console/operations/rows", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a disabled user's rows: %d, want 401", resp.StatusCode)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("the stream ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a disabled user's stream is still open")
	}
	_, page = c.do("GET", "/console/sign-in", nil)
	nonce = hiddenField.FindStringSubmatch(page)[1]
	if resp, _ := c.do("POST", "/console/sign-in", url.Values{"csrf": {nonce}, "token": {ana.Token}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a disabled user signs in: %d, want 401", resp.StatusCode)
	}

	a.Must(t, 200, "PATCH", "/api/v1/admin/users/"+ana.ID, apptest.AdminToken, map[string]any{"disabled": false}, nil)
	if resp, _ := c.do("GET", "/console/operations", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("the enabled user's session: %d, want 200", resp.StatusCode)
	}
}
