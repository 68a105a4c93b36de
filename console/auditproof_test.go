package console_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// fetched is a file the page fetched with the session, as a link would
// download it.
type fetched struct {
	Status      int    `json:"status"`
	Type        string `json:"type"`
	Disposition string `json:"disposition"`
	Body        string `json:"body"`
}

// fetch gets path from the page, with the browser's session.
func (b *browser) fetch(path string) fetched {
	b.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {credentials: "same-origin"}).then(async r => ({status: r.status,
		type: r.headers.get("Content-Type") || "", disposition: r.headers.get("Content-Disposition") || "", body: await r.text()}))`, path)
	return get(b, "fetch "+path, chromedp.Evaluate[fetched](js, chromedp.EvalAwaitPromise))
}

// screenshotSized saves the page at width x height into
// OPSGATE_SCREENSHOTS, if set, as browser.screenshotAt does.
func (b *browser) screenshotSized(name string, width, height int64) {
	b.t.Helper()
	dir := os.Getenv("OPSGATE_SCREENSHOTS")
	if dir == "" {
		return
	}
	b.run("viewport", chromedp.EmulateViewport(width, height))
	png := get(b, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func mustUnmarshal(t *testing.T, raw string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		t.Fatalf("%v:\n%s", err, raw)
	}
}

// auditRow is an event row of the audit page: its seq, and its proof's
// link or what it says instead.
type auditRow struct {
	Position string `json:"position"`
	Seq      int64  `json:"seq"`
	Href     string `json:"href"`
	Text     string `json:"text"`
}

// TestAuditCheckpointAndProofs: an auditor's audit page shows the tenant's
// latest signed checkpoint (what it says, and the note itself, to
// download) and offers the proof of each event it covers as a download
// that checks offline against the deployment's verifier key; whoever may
// not see the audit page gets the same refusal for the checkpoint and the
// proofs; a bad seq is a 4xx page; a tenant with no checkpoint yet is told
// calmly that one is coming.
func TestAuditCheckpointAndProofs(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	auditor := a.Member(t, "Audrey", tenant, domain.RoleAuditor)
	readonly := a.Member(t, "Rae", tenant, domain.RoleReadonly)
	outsider := a.Member(t, "Otto", a.Tenant(t, ws.ID, "Fabrikam").ID, domain.RoleOwner)
	conn := a.Connection(t, owner.ID, tenant, "Graph (prod)", apptest.AsDefault).ID
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceInventorySync, conn)).Run.ID
	// The history stops growing once the run ended, so that the checkpoint
	// the page shows is the one its downloads carry.
	apptest.WaitFor(t, 30*time.Second, "the run to succeed", func() bool { return a.RunStatus(t, run) == domain.StatusSucceeded })

	var key struct {
		VerifierKey string `json:"verifier_key"`
	}
	a.Must(t, 200, "GET", "/api/v1/audit/key", "", nil, &key)
	verifier, err := audit.NewVerifier(key.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, exe, a.URL)
	b.signIn(auditor.Token)
	page := "/console/tenants/" + tenant + "/audit"
	var size int64
	apptest.WaitFor(t, 30*time.Second, "the audit page to show a checkpoint of the whole history", func() bool {
		events := a.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, tenant)
		b.run("open the audit page", chromedp.Navigate(a.URL+page), chromedp.WaitVisible(css(`#checkpoint`)))
		shown := get(b, "read the tree size", chromedp.Evaluate[string](`document.querySelector("#checkpoint-size")?.dataset.size ?? ""`))
		size, _ = strconv.ParseInt(shown, 10, 64)
		return size > 0 && size == int64(events)
	})

	// What the page says of the checkpoint is what its note says, and the
	// note downloads as the deployment signed it.
	origin, root, note := b.text(`#checkpoint-origin`), b.text(`#checkpoint-root`),
		get(b, "read the note", chromedp.Evaluate[string](`document.querySelector("#checkpoint-note").textContent`))
	if origin != "opsgate/"+tenant || !strings.Contains(b.text(`#checkpoint-size`), strconv.FormatInt(size, 10)+" event") {
		t.Errorf("the checkpoint reads origin %q, size %q", origin, b.text(`#checkpoint-size`))
	}
	link := get(b, "read the checkpoint's link", chromedp.AttributeValue(css(`#checkpoint a[href$="/audit/checkpoint"]`), "href")).Value
	got := b.fetch(link)
	wantName := fmt.Sprintf(`attachment; filename="checkpoint-%s-%d.txt"`, tenant, size)
	if got.Status != http.StatusOK || !strings.HasPrefix(got.Type, "text/plain") || got.Disposition != wantName || got.Body != note {
		t.Fatalf("the checkpoint's download: %d %s %q, the page's note too: %v\n%s", got.Status, got.Type, got.Disposition, got.Body == note, got.Body)
	}
	cp, err := audit.OpenCheckpoint([]byte(got.Body), verifier)
	if err != nil || cp.Origin != origin || cp.Size != size {
		t.Fatalf("the downloaded checkpoint opens as %+v, %v; the page says %s of size %d", cp, err, origin, size)
	}
	if cp.Text() != strings.SplitN(note, "\n\n", 2)[0]+"\n" || !strings.Contains(cp.Text(), "\n"+root+"\n") {
		t.Errorf("the page shows root %q and note\n%s\nbut the checkpoint is\n%s", root, note, cp.Text())
	}
	if help := b.text(`#checkpoint`); !strings.Contains(help, "opsgate audit watch") || !strings.Contains(help, "/api/v1/audit/key") {
		t.Errorf("the checkpoint section does not say how to check it:\n%s", help)
	}

	// Each event the checkpoint covers offers its proof; the others say
	// they are not signed yet.
	rows := get(b, "read the events", chromedp.Evaluate[[]auditRow](`Array.from(document.querySelectorAll("table.events tbody tr[data-seq]")).map(tr => ({
		position: tr.id.replace("event-", ""), seq: Number(tr.dataset.seq),
		href: tr.querySelector("td.proof a")?.getAttribute("href") ?? "", text: tr.querySelector("td.proof").textContent.trim()}))`))
	var covered []auditRow
	for _, r := range rows {
		want := fmt.Sprintf("/console/tenants/%s/audit/proof?seq=%d", tenant, r.Seq)
		switch {
		case r.Seq <= size && (r.Href != want || r.Text != "Proof"):
			t.Errorf("event %s (seq %d) in the checkpoint of %d offers %q %q, want its proof", r.Position, r.Seq, size, r.Href, r.Text)
		case r.Seq > size && (r.Href != "" || r.Text != "not signed yet"):
			t.Errorf("event %s (seq %d) beyond the checkpoint of %d offers %q %q", r.Position, r.Seq, size, r.Href, r.Text)
		case r.Seq <= size:
			covered = append(covered, r)
		}
	}
	if len(covered) == 0 || covered[0].Seq != 1 {
		t.Fatalf("the page offers no proof of the first event: %+v", rows)
	}

	// The proofs of the first and the last event covered check offline,
	// against the verifier key, as the events of their rows.
	for _, r := range []auditRow{covered[0], covered[len(covered)-1]} {
		got := b.fetch(r.Href)
		if got.Status != http.StatusOK || !strings.HasPrefix(got.Type, "application/json") ||
			got.Disposition != fmt.Sprintf(`attachment; filename="proof-%s-%d.json"`, tenant, r.Seq) {
			t.Fatalf("the proof of seq %d: %d %s %q\n%s", r.Seq, got.Status, got.Type, got.Disposition, got.Body)
		}
		proven, err := audit.VerifyProof([]byte(got.Body), verifier)
		if err != nil || proven != cp {
			t.Fatalf("the proof of seq %d does not check: %v (checkpoint %+v, want %+v)\n%s", r.Seq, err, proven, cp, got.Body)
		}
		var p audit.Proof
		var event struct {
			Seq      int64 `json:"seq"`
			Position int64 `json:"position"`
		}
		mustUnmarshal(t, got.Body, &p)
		mustUnmarshal(t, string(p.Event), &event)
		if event.Seq != r.Seq || strconv.FormatInt(event.Position, 10) != r.Position || p.TreeSize != size {
			t.Errorf("the proof of the row of seq %d, position %s proves seq %d, position %d in a tree of %d",
				r.Seq, r.Position, event.Seq, event.Position, p.TreeSize)
		}
	}

	// A bad seq is a page of the console with a 4xx, never a 5xx.
	for _, seq := range []string{"", "abc", "0", "-3", "1.5", "99999999999999999999", strconv.FormatInt(size+1000, 10)} {
		got := b.fetch(page + "/proof?seq=" + seq)
		if got.Status < 400 || got.Status >= 500 || !strings.HasPrefix(got.Type, "text/html") || got.Disposition != "" ||
			!strings.Contains(got.Body, `data-status="`+strconv.Itoa(got.Status)+`"`) {
			t.Errorf("seq %q: %d %s %q, want a 4xx page\n%s", seq, got.Status, got.Type, got.Disposition, got.Body)
		}
	}
	resp := get(b, "open a proof beyond the tree", chromedp.NavigateResponse(a.URL+page+"/proof?seq="+strconv.FormatInt(size+1000, 10)))
	if resp.Status != http.StatusNotFound || !strings.Contains(b.text(`main h1`), "Not in the tree") {
		t.Errorf("a proof beyond the tree: %d %q", resp.Status, b.text(`main h1`))
	}

	// The page at a wide and a narrow screen: the note scrolls or wraps
	// inside its box, and nothing is wider than the screen.
	b.run("the audit page", chromedp.Navigate(a.URL+page), chromedp.WaitVisible(css(`#checkpoint-note`)))
	b.screenshotSized("console-audit-wide", 1280, 800)
	for _, width := range []int64{1280, 390} {
		b.run("viewport", chromedp.EmulateViewport(width, 844))
		if wide := get(b, "measure the page", chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`)); wide > 0 {
			t.Errorf("at %d px the audit page is %d px wider than the screen", width, wide)
		}
	}
	b.screenshotSized("console-audit-narrow", 390, 844)

	// To a readonly member and to a member of another tenant, the
	// checkpoint and the proofs are refused as the audit page is, whatever
	// the seq.
	for _, who := range []struct{ name, token string }{{"a readonly member", readonly.Token}, {"another tenant's owner", outsider.Token}} {
		o := newClient(t, a.URL)
		o.signIn(who.token)
		refused, refusal := o.do("GET", page, nil)
		if refused.StatusCode != http.StatusForbidden && refused.StatusCode != http.StatusNotFound {
			t.Fatalf("%s opens the audit page: %d", who.name, refused.StatusCode)
		}
		for _, path := range []string{page + "/checkpoint", page + "/proof?seq=1", page + "/proof?seq=abc", page + "/proof?seq=" + strconv.FormatInt(size+1000, 10)} {
			if resp, body := o.do("GET", path, nil); resp.StatusCode != refused.StatusCode || body != refusal {
				t.Errorf("%s: %s answers %d, the audit page %d; pages equal: %v\n%s", who.name, path, resp.StatusCode, refused.StatusCode, body == refusal, body)
			}
		}
	}

	// A tenant without a signed checkpoint yet (here: of a deployment that
	// signs none) is told, calmly, that one is coming; its checkpoint is a
	// not-found page, and its events offer no proof.
	unsigned := apptest.Start(t, apptest.Configure(func(c *config.Config) { c.AuditSigningKeyFile = "" }))
	quiet := unsigned.Tenant(t, unsigned.Workspace(t, "Tailspin").ID, "Wingtip").ID
	quietAuditor := unsigned.Member(t, "Quinn", quiet, domain.RoleAuditor)
	apptest.WaitFor(t, 30*time.Second, "the chain to link the tenant's events", func() bool {
		return unsigned.Count(t, `SELECT count(*) FROM audit_chain WHERE chain = $1`, quiet) > 0
	})
	q := newClient(t, unsigned.URL)
	q.signIn(quietAuditor.Token)
	// The page reads the events below the store's reading horizon, which
	// another transaction in flight may hold back a moment after the chain
	// linked them.
	var shown *http.Response
	var body string
	apptest.WaitFor(t, 30*time.Second, "the audit page to list the tenant's events", func() bool {
		shown, body = q.do("GET", "/console/tenants/"+quiet+"/audit", nil)
		return strings.Contains(body, `data-seq="1"`)
	})
	section := body[strings.Index(body, `<section class="card checkpoint"`):]
	section = section[:strings.Index(section, "</section>")]
	if shown.StatusCode != http.StatusOK || !strings.Contains(section, `id="checkpoint-none"`) ||
		!strings.Contains(section, "one is signed within seconds of new events") {
		t.Errorf("without a checkpoint the audit page answers %d and says:\n%s", shown.StatusCode, section)
	}
	for _, alarm := range []string{"notice", "tone-danger", "tone-warning", "error"} {
		if strings.Contains(section, alarm) {
			t.Errorf("the section without a checkpoint is styled %q:\n%s", alarm, section)
		}
	}
	if !strings.Contains(body, `data-seq="1"`) || strings.Contains(body, "/audit/proof?seq=") || !strings.Contains(body, "not signed yet") {
		t.Errorf("without a checkpoint the events offer proofs, or do not say they are not signed yet:\n%s", body)
	}
	if resp, body := q.do("GET", "/console/tenants/"+quiet+"/audit/checkpoint", nil); resp.StatusCode != http.StatusNotFound ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the checkpoint of a tenant without one: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, _ := q.do("GET", "/console/tenants/"+quiet+"/audit/proof?seq=1", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a proof without a checkpoint: %d, want 404", resp.StatusCode)
	}
}
