package console_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/webhooks"
)

// chromium finds the browser: OPSGATE_CHROMIUM, or Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OPSGATE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("browser tests skipped: Chromium is not installed (Debian: apt-get install -y chromium, or set OPSGATE_CHROMIUM)")
	return ""
}

// browser is one headless Chromium profile (its own cookies) on the app.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newBrowser(t *testing.T, exe, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 800))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base}
}

func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action that answers a value.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return strings.TrimSpace(get(b, "read "+sel, chromedp.Text(css(sel))))
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

func (b *browser) signIn(token string) {
	b.t.Helper()
	b.run("sign in",
		chromedp.Navigate(b.base+"/console/operations"),
		chromedp.WaitVisible(css(`#token`)),
		chromedp.SendKeys(css(`#token`), token),
		chromedp.Submit(css(`#token`)),
		chromedp.WaitVisible(css(`table.runs`)),
	)
}

// press presses the start button of surface on connection conn and
// returns the outcome the page shows and its title.
func (b *browser) press(tenant, conn, surface string) (outcome, title string) {
	b.t.Helper()
	sel := fmt.Sprintf(`#connection-%s form:has(input[name=surface][value=%q]) button`, conn, surface)
	b.run("press "+surface,
		chromedp.Navigate(b.base+"/console/tenants/"+tenant+"/connections"),
		chromedp.WaitVisible(css(sel)),
		chromedp.Click(css(sel)),
		chromedp.WaitVisible(css(`#outcome-title`)),
	)
	return b.outcome(), b.text(`#outcome-title`)
}

// outcome is the outcome of the start the page shows (its code is for
// support: an attribute, and a details element's text).
func (b *browser) outcome() string {
	b.t.Helper()
	return get(b, "read the outcome", chromedp.AttributeValue(css(`section[data-outcome]`), "data-outcome")).Value
}

// runOfOutcome is the id of the run the outcome page shows.
func (b *browser) runOfOutcome() string {
	b.t.Helper()
	return get(b, "read the run", chromedp.AttributeValue(css(`section[data-run]`), "data-run")).Value
}

// visibleText is the text the page shows an operator, without what its
// details elements hold (for support).
func (b *browser) visibleText() string {
	b.t.Helper()
	return get(b, "read the visible text", chromedp.Evaluate[string](`(() => {
		const details = Array.from(document.querySelectorAll("details"));
		const shown = details.map(d => d.style.display);
		details.forEach(d => { d.style.display = "none"; });
		const text = document.body.innerText;
		details.forEach((d, i) => { d.style.display = shown[i]; });
		return text;
	})()`))
}

// speaksPlainly fails the test if the page shows an operator a reason
// code, a surface or operation code, an HTTP status or a tone as a word
// outside its details for support.
func (b *browser) speaksPlainly(what string) {
	b.t.Helper()
	text := b.visibleText()
	if found := codesShown(text); len(found) > 0 {
		b.t.Errorf("%s shows %q outside its details for support:\n%s", what, found, text)
	}
}

// post sends a form post from the page with fetch and returns the status.
func (b *browser) post(path, body string) int {
	b.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q, credentials: "same-origin"}).then(r => r.status)`, path, body)
	return get(b, "post "+path, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

// screenshot saves the page at 1280x800 into OPSGATE_SCREENSHOTS, if set.
func (b *browser) screenshot(name string) { b.screenshotAt(name, 1280) }

// screenshotAt saves the page at width x 800.
func (b *browser) screenshotAt(name string, width int64) {
	dir := os.Getenv("OPSGATE_SCREENSHOTS")
	if dir == "" {
		return
	}
	b.run("viewport", chromedp.EmulateViewport(width, 800))
	png := get(b, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func TestConsoleInABrowser(t *testing.T) {
	exe := chromium(t)
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	other := a.Tenant(t, ws.ID, "Fabrikam").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	readonly := a.Member(t, "Rae", tenant, domain.RoleReadonly)
	outsider := a.Member(t, "Otto", other, domain.RoleOwner)
	fast := a.Connection(t, owner.ID, tenant, "Graph (prod)", apptest.AsDefault, apptest.Latency(4000)).ID
	slow := a.Connection(t, owner.ID, tenant, "Graph (slow)", apptest.Latency(60_000)).ID
	noConsent := a.Connection(t, owner.ID, tenant, "Graph (no consent)", apptest.Consent(domain.ConsentMissing)).ID
	// The workspace's webhook endpoints, from the start, so that the test's
	// changes are delivered: the platform's answers 200; the incident bot's
	// answers 503 (and holds a message sent again until the test lets it
	// go), so its blocked starts are tried again, then given up.
	letGo := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(letGo) }) }
	rc := newReceiver(t, func(path string, n int) int {
		if path != "/incidents" {
			return http.StatusOK
		}
		if n > 4 {
			<-letGo
		}
		return http.StatusServiceUnavailable
	})
	t.Cleanup(release)
	incidents := newEndpoint(t, a, ws.ID, rc.URL+"/incidents", map[string]any{"types": []string{"run.blocked"}, "description": "Incident bot (staging)"})
	platformHook := newEndpoint(t, a, ws.ID, rc.URL+"/opsgate/webhooks", map[string]any{"description": "Laravel platform: outcomes for the operators' inbox"})

	b := newBrowser(t, exe, a.URL)
	b.signIn(owner.Token)
	b.screenshot("operations-empty")

	// The four outcomes, with the API's words. The slow connection's run
	// stays active for a minute, so the duplicate and the other operation
	// meet it whatever the machine's speed.
	outcome, title := b.press(tenant, slow, "inventory_sync")
	if outcome != "accepted" || !strings.HasSuffix(title, "Inventory sync accepted") {
		t.Fatalf("first start: %q %q", outcome, title)
	}
	slowRun := b.runOfOutcome()
	b.speaksPlainly("the accepted start's page")
	b.screenshot("outcome-accepted")
	if outcome, title = b.press(tenant, slow, "inventory_sync"); outcome != "deduped" || !strings.Contains(title, "deduped") {
		t.Errorf("the same start again: %q %q", outcome, title)
	}
	if outcome, title = b.press(tenant, slow, "compliance_snapshot"); outcome != "scope_busy" || !strings.Contains(title, "scope busy") {
		t.Errorf("another operation meanwhile: %q %q", outcome, title)
	}
	if outcome, title = b.press(tenant, noConsent, "inventory_sync"); outcome != "blocked" || !strings.Contains(title, "blocked") {
		t.Errorf("a start without consent: %q %q", outcome, title)
	}
	if steps := b.text(`ul.steps`); !strings.Contains(strings.ToLower(steps), "consent") {
		t.Errorf("the blocked start's next steps %q name no consent", steps)
	}
	b.speaksPlainly("the blocked start's page")
	b.screenshot("outcome-blocked")
	b.run("open the details for support", chromedp.Click(css(`details.support summary`)), chromedp.WaitVisible(css(`#outcome`)))
	if got := b.text(`details.support`); !strings.Contains(got, "422 Unprocessable Entity") || !strings.Contains(got, "provider_connection.consent_missing") {
		t.Errorf("the details for support read %q", got)
	}

	// Before the click, each button says what it would get: the slow
	// connection's inventory sync is already running, its other
	// operations would meet it, and every start on the connection without
	// consent is greyed with the reason and its next step, yet pressable.
	apptest.WaitFor(t, 30*time.Second, "the worker to start the slow run", func() bool { return a.RunStatus(t, slowRun) == domain.StatusRunning })
	b.run("connections", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/connections"), chromedp.WaitVisible(css(`#connection-`+noConsent)))
	for sel, want := range map[string]string{
		`#connection-` + slow + ` li[data-surface="inventory_sync"] .availability`:      "Already running: Inventory sync",
		`#connection-` + slow + ` li[data-surface="compliance_snapshot"] .availability`: "Busy: Inventory sync is running (started",
		`#avail-` + noConsent: "Admin consent for the provider connection was never granted or has been revoked. Next: Grant admin consent for the provider connection.",
	} {
		if got := b.text(sel); !strings.Contains(got, want) {
			t.Errorf("%s says %q, want %q", sel, got, want)
		}
	}
	greyed := `#connection-` + noConsent + ` form[data-surface="compliance_snapshot"] button`
	if look := get(b, "read the greyed button's look", chromedp.Evaluate[string](`(() => {
		const s = getComputedStyle(document.querySelector('`+greyed+`'));
		return s.borderStyle + " " + s.color;
	})()`)); !strings.HasPrefix(look, "dashed") {
		t.Errorf("the blocked button is not greyed: %s", look)
	}
	b.speaksPlainly("the connections page")
	get(b, "scroll to the slow connection", chromedp.Evaluate[bool](`document.querySelector("#connection-`+slow+`").scrollIntoView() === undefined`))
	b.screenshot("availability")
	b.run("narrow", chromedp.EmulateViewport(420, 800))
	get(b, "scroll to the connection without consent", chromedp.Evaluate[bool](`document.querySelector("#connection-`+noConsent+` .actions").scrollIntoView({block: "center"}) === undefined`))
	b.screenshotAt("availability-narrow", 420)
	b.run("wide", chromedp.EmulateViewport(1280, 800))
	b.run("press the greyed button", chromedp.Click(css(greyed)), chromedp.WaitVisible(css(`#outcome-title`)))
	if outcome := b.outcome(); outcome != "blocked" {
		t.Errorf("the greyed button was answered %q", outcome)
	}
	if blocked := b.runOfOutcome(); a.RunStatus(t, blocked) != domain.StatusBlocked {
		t.Errorf("the greyed button's start was not recorded as blocked")
	}

	// The platform starts a run for Ana through its integration: the
	// Operations view names her "via" it.
	var platform struct {
		ID    string
		Token struct{ Token string }
	}
	a.Must(t, 201, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": ws.ID, "name": "Laravel platform"}, &platform)
	viaPlatform := a.Connection(t, owner.ID, tenant, "Graph (platform)").ID
	platformRun := a.Call(t, "POST", "/api/v1/provider-connections/"+viaPlatform+"/check", platform.Token.Token, nil,
		apptest.Header{Key: "Opsgate-On-Behalf-Of", Value: owner.ID}).ExpectStart(t, "accepted").Run.ID

	// An operator watching Operations sees a run started elsewhere (a
	// second browser) appear while queued or running, then succeed, without
	// a reload. The fast connection's run takes 4 s, time enough to see it
	// active.
	b.run("open Operations", chromedp.Navigate(a.URL+"/console/operations?tenant_id="+tenant), chromedp.WaitVisible(css(`table.runs`)))
	get(b, "mark the page", chromedp.Evaluate[bool](`window.notReloaded = true`))
	pb := newBrowser(t, exe, a.URL)
	pb.signIn(owner.Token)
	if outcome, _ = pb.press(tenant, fast, "inventory_sync"); outcome != "accepted" {
		t.Fatalf("fast start: %q", outcome)
	}
	accepted := pb.runOfOutcome()
	row := `tr#run-` + accepted
	b.run("the run appears, active", chromedp.WaitVisible(css(row+`[data-status="queued"], `+row+`[data-status="running"]`)))
	b.run("wait for the run to succeed", chromedp.WaitVisible(css(row+`[data-status="succeeded"]`)))
	if !get(b, "check no reload", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Error("the page was reloaded")
	}
	if got := b.text(`tr#run-` + platformRun + ` td:nth-child(6)`); got != "Ana via Laravel platform" {
		t.Errorf("the platform's run reads as started by %q", got)
	}
	b.speaksPlainly("the Operations view")
	b.screenshot("operations")
	b.screenshotAt("operations-narrow", 420)

	// A run's page while the run is queued changes by itself, without a
	// reload, as an executor claims the run and completes it.
	ex := executorOf(t, a, "acme")
	acme := a.Connection(t, owner.ID, tenant, "Acme jobs", apptest.Provider("acme")).ID
	queued := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceInventorySync, acme)).Run.ID
	b.run("open the queued run", chromedp.Navigate(a.URL+"/console/operations/"+queued), chromedp.WaitVisible(css(`#run[data-status="queued"]`)))
	get(b, "mark the page", chromedp.Evaluate[bool](`window.notReloaded = true`))
	b.speaksPlainly("the queued run's page")
	b.screenshot("run-live")
	epoch := claimRun(t, a, ex, queued)
	b.run("the run is running", chromedp.WaitVisible(css(`#run[data-status="running"]`)))
	a.Must(t, 200, "POST", "/api/v1/executor/runs/"+queued+"/complete", ex.Token, map[string]any{"epoch": epoch, "status": "succeeded"}, nil)
	b.run("the run succeeded", chromedp.WaitVisible(css(`#run[data-status="succeeded"]`)))
	if got := b.text(`#run-title`); !strings.Contains(got, "Inventory sync succeeded") {
		t.Errorf("the ended run's page says %q", got)
	}
	if got := b.text(`#live-status`); !strings.Contains(got, "ended (succeeded)") {
		t.Errorf("the live status says %q once the run ended", got)
	}
	if !get(b, "check no reload", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Error("the run's page was reloaded")
	}

	// Cancel selected: two queued runs are ticked in the Operations view,
	// stay ticked while a new row arrives live, and are cancelled together.
	executorOf(t, a, "beta") // live, and claims nothing more: the runs stay queued
	var selected []string
	for _, name := range []string{"Beta jobs (east)", "Beta jobs (west)"} {
		conn := a.Connection(t, owner.ID, tenant, name, apptest.Provider("beta")).ID
		selected = append(selected, a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceComplianceSnapshot, conn)).Run.ID)
	}
	box := func(id string) string { return `tr#run-` + id + ` input[name=ids]` }
	b.run("tick two queued runs", chromedp.Navigate(a.URL+"/console/operations?tenant_id="+tenant),
		chromedp.WaitVisible(css(box(selected[0]))), chromedp.WaitVisible(css(box(selected[1]))),
		chromedp.Click(css(box(selected[0]))), chromedp.Click(css(box(selected[1]))))
	if got := b.text(`#selected-count`); got != "2 runs selected." {
		t.Errorf("the selection reads %q", got)
	}
	later := a.Expect(t, domain.OutcomeBlocked, apptest.ConnStart(owner.ID, domain.SurfaceConnectionCheck, noConsent)).Run.ID
	b.run("a new row arrives", chromedp.WaitVisible(css(`tr#run-`+later)))
	if ticked := get(b, "count the ticked runs", chromedp.Evaluate[int](`document.querySelectorAll("input[name=ids]:checked").length`)); ticked != 2 {
		t.Errorf("after a live update %d runs are still ticked, want 2", ticked)
	}
	b.screenshot("operations-cancel")
	b.run("cancel selected", chromedp.Click(css(`#cancel-selected button`)), chromedp.WaitVisible(css(`#cancel-summary`)))
	if got := b.text(`#cancel-summary`); got != "2 of 2 selected runs were cancelled." {
		t.Errorf("cancel selected says %q", got)
	}
	for _, id := range selected {
		if got := b.text(`#cancelled-` + id); !strings.Contains(got, "Cancelled Compliance snapshot on Beta jobs") {
			t.Errorf("run %s reads %q", id, got)
		}
		if status := a.RunStatus(t, id); status != domain.StatusCancelled {
			t.Errorf("run %s is %s after cancel selected", id, status)
		}
	}
	b.speaksPlainly("the cancel summary")
	b.screenshot("cancel-selected")

	// Run detail, then cancel the slow run, which is still running.
	b.run("open the run", chromedp.Navigate(a.URL+"/console/operations/"+accepted), chromedp.WaitVisible(css(`#run-title`)))
	if got := b.text(`#run-title`); !strings.Contains(got, "Inventory sync succeeded") {
		t.Errorf("run title %q", got)
	}
	if got := b.text(`#run section.message`); strings.Contains(got, "View the run") || strings.Contains(got, "Follow the run") {
		t.Errorf("the run's page offers itself as a next step: %q", got)
	}
	b.speaksPlainly("the run's page")
	b.screenshot("run")
	b.run("cancel", chromedp.Navigate(a.URL+"/console/operations/"+slowRun),
		chromedp.WaitVisible(css(`form[action$="/cancel"] button`)),
		chromedp.Click(css(`form[action$="/cancel"] button`)),
		chromedp.WaitNotPresent(css(`form[action$="/cancel"]`)))
	if got := b.text(`#run-title`); !strings.Contains(got, "cancelled") {
		t.Errorf("after cancel the run says %q", got)
	}
	// A run that ended shows its deadlines and runs again from its page,
	// answered in the presenter's words.
	if got := b.text(`section.grid`); !strings.Contains(got, "Claim by") || !strings.Contains(got, "Finish by") {
		t.Errorf("the run's page does not show its deadlines: %q", got)
	}
	b.screenshot("run-again")
	b.run("run again", chromedp.Click(css(`form#rerun button`)), chromedp.WaitVisible(css(`#outcome-title`)))
	if outcome, title := b.outcome(), b.text(`#outcome-title`); outcome != "accepted" || !strings.Contains(title, "Inventory sync accepted") {
		t.Errorf("run again: %q, %q", outcome, title)
	}
	again := b.runOfOutcome()
	b.run("open the rerun", chromedp.Navigate(a.URL+"/console/operations/"+again), chromedp.WaitVisible(css(`#run-title`)))
	if got := b.text(`section.grid`); !strings.Contains(got, slowRun) {
		t.Errorf("the rerun's page does not name the run it runs again: %q", got)
	}
	b.run("connections", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/connections"), chromedp.WaitVisible(css(`.connection`)))
	b.speaksPlainly("the connections page")
	b.screenshot("connections")
	b.run("audit", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/audit"), chromedp.WaitVisible(css(`table.events`)))
	b.screenshot("audit")
	if _, err := a.Restores.Create(a.Ctx, apptest.As(owner.ID), tenant, "Mailbox restore", []byte(`[{"name": "mailbox", "overwrite": true}]`)); err != nil {
		t.Fatal(err)
	}
	b.run("restores", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/restores"), chromedp.WaitVisible(css(`form.execute`)),
		chromedp.Click(css(`form[action$="/preview"] button`)), chromedp.WaitVisible(css(`ul.warnings`)))
	b.screenshot("restores")
	if _, err := a.Onboarding.Create(a.Ctx, apptest.As(owner.ID), tenant, ""); err != nil {
		t.Fatal(err)
	}
	b.run("onboarding", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/onboarding"), chromedp.WaitVisible(css(`form[action$="/bootstrap"]`)))
	b.screenshot("onboarding")

	// The owner's webhooks page, from the navigation: the endpoints, their
	// deliveries, and a message sent again from its form.
	deliveries(t, a, incidents.ID, "the blocked start to be given up", func(list []webhooks.Delivery) bool {
		return len(list) > 0 && list[0].State == webhooks.StateGaveUp
	})
	deliveries(t, a, platformHook.ID, "the platform's deliveries to be sent", func(list []webhooks.Delivery) bool {
		for _, d := range list {
			if d.State != webhooks.StateDelivered {
				return false
			}
		}
		return len(list) > 0
	})
	webhooksPage := `a[href="/console/workspaces/` + ws.ID + `/webhooks"]`
	b.run("webhooks", chromedp.Click(css(`nav `+webhooksPage)), chromedp.WaitVisible(css(`#endpoint-`+platformHook.ID)))
	if got := b.text(`#endpoint-` + incidents.ID + ` tbody tr:first-child`); !strings.Contains(got, "gave up") || !strings.Contains(got, "503 Service Unavailable") {
		t.Errorf("the incident bot's latest delivery reads %q", got)
	}
	b.run("send again", chromedp.Click(css(`#endpoint-`+incidents.ID+` tbody tr:first-child button`)),
		chromedp.WaitVisible(css(`#endpoint-`+incidents.ID+` .notice`)))
	if got := b.text(`#endpoint-` + incidents.ID + ` tr.replayed`); !strings.Contains(got, "pending") || !strings.Contains(got, "5") {
		t.Errorf("the attempt sent again reads %q", got)
	}
	get(b, "scroll to the top", chromedp.Evaluate[bool](`window.scrollTo(0, 0) === undefined`))
	b.screenshot("webhooks")
	b.run("narrow", chromedp.EmulateViewport(420, 800))
	get(b, "scroll to the deliveries", chromedp.Evaluate[bool](`document.querySelector("#endpoint-`+incidents.ID+` .notice").scrollIntoView() === undefined`))
	b.screenshotAt("webhooks-narrow", 420)
	release()

	// A form post without the session's CSRF token is refused.
	if status := b.post("/console/start", "surface=inventory_sync&connection_id="+fast); status != 403 {
		t.Errorf("a start without a CSRF token answered %d", status)
	}

	// A non-member gets the same not-found page as for a run that does
	// not exist.
	ob := newBrowser(t, exe, a.URL)
	ob.signIn(outsider.Token)
	ob.run("a run of another tenant", chromedp.Navigate(a.URL+"/console/operations/"+accepted))
	hidden := get(ob, "read the page", chromedp.OuterHTML(css(`main`)))
	ob.run("a run that does not exist", chromedp.Navigate(a.URL+"/console/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV"))
	missing := get(ob, "read the page", chromedp.OuterHTML(css(`main`)))
	if hidden != missing || !strings.Contains(hidden, "Not found") {
		t.Errorf("non-member page differs from not-found:\n%s\n%s", hidden, missing)
	}

	// A readonly member sees no start buttons, and a forged start is 403.
	rb := newBrowser(t, exe, a.URL)
	rb.signIn(readonly.Token)
	rb.run("readonly connections", chromedp.Navigate(a.URL+"/console/tenants/"+tenant+"/connections"), chromedp.WaitVisible(css(`.connection`)))
	if buttons := get(rb, "count start buttons", chromedp.Evaluate[int](`document.querySelectorAll('form[action="/console/start"]').length`)); buttons != 0 {
		t.Errorf("a readonly member sees %d start buttons", buttons)
	}
	csrf := get(rb, "read csrf", chromedp.AttributeValue(css(`form.signout input[name=csrf]`), "value")).Value
	if status := rb.post("/console/start", "csrf="+csrf+"&surface=inventory_sync&connection_id="+fast); status != 403 {
		t.Errorf("a readonly member's forged start answered %d", status)
	}

	// Signing out ends the session.
	b.run("sign out", chromedp.Navigate(a.URL+"/console/operations"), chromedp.WaitVisible(css(`form.signout button`)),
		chromedp.Click(css(`form.signout button`)), chromedp.WaitVisible(css(`#token`)))
	b.screenshot("sign-in")
}
