package console_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// executorOf registers an executor of provider and makes it live (a claim
// that takes nothing), so that starts on provider's connections are
// accepted and wait, queued, for the test to claim them.
func executorOf(t *testing.T, a *apptest.App, provider string) apptest.Executor {
	t.Helper()
	var ex apptest.Executor
	a.Must(t, 201, "POST", "/api/v1/admin/executors", apptest.AdminToken, map[string]any{"name": "jobs", "providers": []string{provider}}, &ex)
	a.Must(t, 200, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1, "wait_ms": 0}, nil)
	return ex
}

// claimRun claims run as ex and returns the lease's epoch.
func claimRun(t *testing.T, a *apptest.App, ex apptest.Executor, run string) int64 {
	t.Helper()
	var claims struct{ Items []apptest.ExecutorClaim }
	apptest.WaitFor(t, 30*time.Second, "the executor to claim the run", func() bool {
		a.Must(t, 200, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1, "wait_ms": 0}, &claims)
		return len(claims.Items) == 1
	})
	if got := claims.Items[0].Run.ID; got != run {
		t.Fatalf("the executor claimed %s, want %s", got, run)
	}
	return int64(claims.Items[0].Lease.Epoch)
}

// waited is the answer of a wait on a run's page and how long it took.
type waited struct {
	status int
	body   string
	took   time.Duration
}

// waitOn asks, in the background, for the run's page to wait on the run
// while its status is status.
func waitOn(c *client, run, status string) <-chan waited {
	done := make(chan waited, 1)
	go func() {
		start := time.Now()
		resp, err := c.http.Get(c.base + "/console/operations/" + run + "/wait?status=" + status + "&wait_ms=25000")
		if err != nil {
			done <- waited{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- waited{status: resp.StatusCode, body: string(b), took: time.Since(start)}
	}()
	return done
}

// TestRunPageWaitsForTheRun: a run's page, while the run is queued or
// running, waits on it (a long poll woken by the change feed) and is
// answered the run anew as soon as its status changes; a run the user may
// not see answers the same not-found page as one that does not exist.
func TestRunPageWaitsForTheRun(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	outsider := a.Member(t, "Otto", a.Tenant(t, ws.ID, "Fabrikam").ID, domain.RoleOwner)
	ex := executorOf(t, a, "acme")
	conn := a.Connection(t, owner.ID, tenant, "Acme", apptest.Provider("acme")).ID
	run := a.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner.ID, domain.SurfaceInventorySync, conn)).Run.ID

	c := newClient(t, a.URL)
	c.signIn(owner.Token)
	wait := "/console/operations/" + run + "/wait"
	if resp, page := c.do("GET", "/console/operations/"+run, nil); resp.StatusCode != http.StatusOK ||
		!strings.Contains(page, `data-wait="`+wait+`"`) || !strings.Contains(page, `<div id="run" data-status="queued">`) {
		t.Fatalf("the queued run's page does not wait on it: %d\n%s", resp.StatusCode, page)
	}
	// Nothing changed: the wait ends empty (here at once, wait_ms=0).
	if resp, page := c.do("GET", wait+"?status=queued&wait_ms=0", nil); resp.StatusCode != http.StatusNoContent || page != "" {
		t.Errorf("an unchanged run's wait: %d %q, want 204", resp.StatusCode, page)
	}
	if resp, _ := c.do("GET", wait+"?status=lost", nil); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("a wait on an unknown status: %d, want 422", resp.StatusCode)
	}

	// Claimed: the page waiting on the queued run is answered the running run.
	got := waitOn(c, run, "queued")
	epoch := claimRun(t, a, ex, run)
	w := <-got
	if w.status != http.StatusOK || !strings.Contains(w.body, `<div id="run" data-status="running">`) || strings.Contains(w.body, "<html") {
		t.Fatalf("the wait on the queued run: %d after %v\n%s", w.status, w.took, w.body)
	}
	if w.took > 20*time.Second {
		t.Errorf("the wait on the queued run took %v: answered at its end, not at the claim", w.took)
	}

	// Ended: the page waiting on the running run is answered its outcome.
	got = waitOn(c, run, "running")
	a.Must(t, 200, "POST", "/api/v1/executor/runs/"+run+"/complete", ex.Token, map[string]any{"epoch": epoch, "status": "succeeded"}, nil)
	w = <-got
	if w.status != http.StatusOK || !strings.Contains(w.body, `<div id="run" data-status="succeeded">`) ||
		!strings.Contains(w.body, "Inventory sync succeeded") || !strings.Contains(w.body, `form method="post" action="/console/operations/`+run+`/rerun"`) {
		t.Fatalf("the wait on the running run: %d after %v\n%s", w.status, w.took, w.body)
	}
	if w.took > 20*time.Second {
		t.Errorf("the wait on the running run took %v: answered at its end, not at the completion", w.took)
	}
	// A run that ended answers at once, whatever the page shows; its page
	// waits no more.
	for _, q := range []string{"", "?status=succeeded&wait_ms=25000"} {
		start := time.Now()
		if resp, page := c.do("GET", wait+q, nil); resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-status="succeeded"`) ||
			time.Since(start) > 20*time.Second {
			t.Errorf("a wait%s on the ended run: %d after %v", q, resp.StatusCode, time.Since(start))
		}
	}
	if _, page := c.do("GET", "/console/operations/"+run, nil); strings.Contains(page, "data-wait") {
		t.Errorf("the ended run's page still waits on it:\n%s", page)
	}

	// Another tenant's run, and no run at all, are the same not-found page.
	o := newClient(t, a.URL)
	o.signIn(outsider.Token)
	hidden, hiddenPage := o.do("GET", wait+"?status=queued", nil)
	missing, missingPage := o.do("GET", "/console/operations/01ARZ3NDEKTSV4RRFFQ69G5FAV", nil)
	if hidden.StatusCode != http.StatusNotFound || missing.StatusCode != http.StatusNotFound || hiddenPage != missingPage {
		t.Errorf("a wait on another tenant's run: %d, a missing run: %d; pages equal: %v\n%s", hidden.StatusCode, missing.StatusCode,
			hiddenPage == missingPage, hiddenPage)
	}
	// Signed out, a wait is answered 401, not sent to the sign-in page.
	if resp, _ := newClient(t, a.URL).do("GET", wait, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a signed-out wait: %d, want 401", resp.StatusCode)
	}
}
