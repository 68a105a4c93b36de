package console_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/webhooks"
)

// receiver is a webhook endpoint on loopback: it answers each message
// with answer(path, n), n being how many times it got that message
// (webhook-id) on that path, from 1; nil answers 200.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    map[string]int // path + webhook-id -> messages
	answer func(path string, n int) int
}

func newReceiver(t *testing.T, answer func(path string, n int) int) *receiver {
	t.Helper()
	rc := &receiver{got: map[string]int{}, answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.got[r.URL.Path+" "+r.Header.Get("webhook-id")]++
		n := rc.got[r.URL.Path+" "+r.Header.Get("webhook-id")]
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(r.URL.Path, n)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// endpoint is a webhook endpoint as the admin API creates it.
type endpoint struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// newEndpoint creates an endpoint of workspace through the admin API.
func newEndpoint(t *testing.T, a *apptest.App, workspace, url string, body map[string]any) endpoint {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["workspace_id"], body["url"] = workspace, url
	var e endpoint
	a.Must(t, 201, "POST", "/api/v1/admin/webhooks", apptest.AdminToken, body, &e)
	return e
}

// deliveries waits until cond holds of the deliveries to endpoint, newest
// first, and returns them.
func deliveries(t *testing.T, a *apptest.App, endpoint, what string, cond func([]webhooks.Delivery) bool) []webhooks.Delivery {
	t.Helper()
	var list []webhooks.Delivery
	apptest.WaitFor(t, 30*time.Second, what, func() bool {
		var err error
		if list, _, err = a.Webhooks.Deliveries(a.Ctx, endpoint, "", "", 100); err != nil {
			t.Fatalf("deliveries of %s: %v", endpoint, err)
		}
		return cond(list)
	})
	return list
}

// TestWebhooksPage: an owner sees the workspace's webhook endpoints and
// their latest deliveries, never a secret or a payload, and sends a
// delivery again, which queues a new attempt; to an operator, and to an
// owner of another workspace, the page and its forms do not exist.
func TestWebhooksPage(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	operator := a.Member(t, "Opal", tenant, domain.RoleOperator)
	elsewhere := a.Workspace(t, "Tailspin")
	stranger := a.Member(t, "Otto", a.Tenant(t, elsewhere.ID, "Wingtip").ID, domain.RoleOwner)

	// The receiver holds a message sent again until the test lets it go,
	// so that its new attempt is seen pending.
	release := make(chan struct{})
	rc := newReceiver(t, func(_ string, n int) int {
		if n > 1 {
			<-release
		}
		return http.StatusOK
	})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	hook := newEndpoint(t, a, ws.ID, rc.URL+"/hooks", map[string]any{"description": "Laravel <platform>"})
	theirs := newEndpoint(t, a, elsewhere.ID, rc.URL+"/theirs", nil)
	a.Must(t, 202, "POST", "/api/v1/admin/webhooks/"+theirs.ID+"/ping", apptest.AdminToken, nil, nil)

	conn := a.Connection(t, owner.ID, tenant, "Graph", apptest.AsDefault).ID
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceInventorySync, conn)).Run.ID
	var accepted webhooks.Delivery
	deliveries(t, a, hook.ID, "the run's changes to be delivered", func(list []webhooks.Delivery) bool {
		done := map[string]bool{}
		for _, d := range list {
			if d.State == webhooks.StateDelivered {
				done[d.Type] = true
			}
			if d.Type == "run.accepted" {
				accepted = d
			}
		}
		return done["run.accepted"] && done["run.started"] && done["run.succeeded"]
	})
	if accepted.ChangeID == nil || accepted.Attempt != 1 {
		t.Fatalf("the acceptance's delivery is %+v, want a first attempt with its change", accepted)
	}
	theirDelivery := deliveries(t, a, theirs.ID, "the other workspace's ping", func(list []webhooks.Delivery) bool { return len(list) > 0 })[0]

	c := newClient(t, a.URL)
	csrf := c.signIn(owner.Token)
	page := "/console/workspaces/" + ws.ID + "/webhooks"
	if _, nav := c.do("GET", "/console/operations", nil); !strings.Contains(nav, `href="`+page+`"`) {
		t.Errorf("the owner's navigation has no link to the webhooks page:\n%s", nav)
	}
	resp, body := c.do("GET", page, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the owner's webhooks page: %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{rc.URL + "/hooks", "Laravel &lt;platform&gt;", "every type of change", `<span class="badge">enabled</span>`,
		`id="delivery-` + accepted.ID + `" data-state="delivered"`, "run.accepted", "200 OK", *accepted.ChangeID,
		`action="/console/webhooks/` + hook.ID + `/deliveries/` + accepted.ID + `/replay"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the webhooks page does not show %q:\n%s", want, body)
		}
	}
	// No secret, no payload (the run is in the changes' data), nothing of
	// another workspace.
	for _, leak := range []string{"whsec_", hook.Secret, run, theirs.ID, "/theirs"} {
		if strings.Contains(body, leak) {
			t.Errorf("the webhooks page shows %q:\n%s", leak, body)
		}
	}

	// To an operator, and to an owner of another workspace, the page is
	// the page of a workspace that does not exist.
	unknown := "/console/workspaces/01ARZ3NDEKTSV4RRFFQ69G5FAV/webhooks"
	for _, who := range []struct {
		name, token string
	}{{"an operator", operator.Token}, {"another workspace's owner", stranger.Token}} {
		o := newClient(t, a.URL)
		o.signIn(who.token)
		hidden, hiddenPage := o.do("GET", page, nil)
		missing, missingPage := o.do("GET", unknown, nil)
		if hidden.StatusCode != http.StatusNotFound || missing.StatusCode != http.StatusNotFound || hiddenPage != missingPage {
			t.Errorf("%s: the page %d, an unknown workspace's %d; pages equal: %v\n%s", who.name, hidden.StatusCode, missing.StatusCode,
				hiddenPage == missingPage, hiddenPage)
		}
		if who.token == operator.Token && strings.Contains(hiddenPage, "/webhooks") {
			t.Errorf("an operator's navigation links to webhooks:\n%s", hiddenPage)
		}
	}

	// Send again: refused without the session's CSRF token, and to anyone
	// who may not see the endpoint as if it did not exist.
	replay := "/console/webhooks/" + hook.ID + "/deliveries/" + accepted.ID + "/replay"
	if resp, _ := c.do("POST", replay, url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("send again without a CSRF token: %d, want 403", resp.StatusCode)
	}
	o := newClient(t, a.URL)
	ocsrf := o.signIn(operator.Token)
	if resp, _ := o.do("POST", replay, url.Values{"csrf": {ocsrf}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an operator sends again: %d, want 404", resp.StatusCode)
	}
	for what, path := range map[string]string{
		"another workspace's delivery":      "/console/webhooks/" + theirs.ID + "/deliveries/" + theirDelivery.ID + "/replay",
		"another endpoint's delivery":       "/console/webhooks/" + hook.ID + "/deliveries/" + theirDelivery.ID + "/replay",
		"a delivery that does not exist":    "/console/webhooks/" + hook.ID + "/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV/replay",
		"an endpoint that does not exist":   "/console/webhooks/01ARZ3NDEKTSV4RRFFQ69G5FAV/deliveries/" + accepted.ID + "/replay",
		"a delivery under another endpoint": "/console/webhooks/" + theirs.ID + "/deliveries/" + accepted.ID + "/replay",
	} {
		if resp, _ := c.do("POST", path, url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusNotFound {
			t.Errorf("send again %s: %d, want 404", what, resp.StatusCode)
		}
	}

	// The owner sends the acceptance again: a new attempt of the same
	// message, pending (the receiver holds it), named on the page.
	resp, _ = c.do("POST", replay, url.Values{"csrf": {csrf}})
	back := regexp.MustCompile(`^` + regexp.QuoteMeta(page) + `\?replayed=([0-9A-Z]{26})#endpoint-` + hook.ID + `$`).FindStringSubmatch(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || back == nil {
		t.Fatalf("send again: %d to %q, want a redirect to the endpoint's card", resp.StatusCode, resp.Header.Get("Location"))
	}
	list, _, err := a.Webhooks.Deliveries(a.Ctx, hook.ID, "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var again webhooks.Delivery
	for _, d := range list {
		if d.ID == back[1] {
			again = d
		}
	}
	if again.ID != back[1] || again.State != webhooks.StatePending || again.ChangeID == nil || *again.ChangeID != *accepted.ChangeID ||
		again.Attempt != accepted.Attempt+1 || again.Type != "run.accepted" {
		t.Fatalf("the newest delivery after send again is %+v, want a pending attempt %d of %s", again, accepted.Attempt+1, *accepted.ChangeID)
	}
	_, body = c.do("GET", strings.TrimPrefix(resp.Header.Get("Location"), a.URL), nil)
	if !strings.Contains(body, `<tr id="delivery-`+again.ID+`" data-state="pending" class="replayed">`) ||
		!strings.Contains(body, "Sending again: attempt 2 of this run.accepted message") {
		t.Errorf("the page does not name the attempt sent again:\n%s", body)
	}
	letGo()
	deliveries(t, a, hook.ID, "the attempt sent again to be delivered", func(list []webhooks.Delivery) bool {
		for _, d := range list {
			if d.ID == again.ID {
				return d.State == webhooks.StateDelivered
			}
		}
		return false
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if n := rc.got["/hooks "+*accepted.ChangeID]; n != 2 {
		t.Errorf("the receiver got the acceptance %d times, want twice", n)
	}
}
