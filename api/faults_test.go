package api_test

import (
	"strings"
	"testing"

	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

// TestReadWithProjectorStopped: with no projector running, the
// read-your-writes wait times out; a run the event store knows is then
// answered from the store, never 404, and an unknown one stays 404.
func TestReadWithProjectorStopped(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, privateServer(t, false))
	res := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "deduped")
	f.start(t, contractSurfaces[6], startArgs{conn: f.connA}).ExpectStart(t, "scope_busy")

	var got struct {
		apptest.Run
		Message        apptest.Message `json:"message"`
		DedupedCount   int             `json:"deduped_count"`
		ScopeBusyCount int             `json:"scope_busy_count"`
	}
	f.Must(t, 200, "GET", "/api/v1/operations/"+res.Run.ID, f.owner.Token, nil, &got)
	if got.ID != res.Run.ID || got.Status != "queued" || got.ProviderConnection == nil || got.ProviderConnection.ID != f.connA {
		t.Errorf("run from the store: %+v, want the queued run %s pinned to %s", got.Run, res.Run.ID, f.connA)
	}
	if got.DedupedCount != 1 || got.ScopeBusyCount != 1 {
		t.Errorf("counts from the store: deduped %d, scope busy %d; want 1 and 1", got.DedupedCount, got.ScopeBusyCount)
	}
	if got.Message.Title != "Inventory sync queued" {
		t.Errorf("message %+v", got.Message)
	}
	// A non-member still gets the same 404 as for a run that does not exist.
	f.Call(t, "GET", "/api/v1/operations/"+res.Run.ID, f.outsider.Token, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/operations/"+randomID(), f.owner.Token, nil).ExpectProblem(t, 404, "not_found")
}

// TestDatabaseUnavailable: while the server cannot reach the database,
// starts and reads answer 503 database_unavailable with Retry-After (not
// 500), /readyz says not ready, and the outage is logged once, not once
// per request; once it is back, starts are accepted again.
func TestDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	proxy, proxied := apptest.Proxy(t, "")
	// Every connection of the server goes through the proxy.
	s := apptest.Start(t, apptest.OnDatabase(proxied), apptest.Roles(app.Roles{API: true, Projector: true}))
	f := newFixtureOn(t, s)
	f.Send(t, "GET", "/readyz", "", nil).ExpectStatus(t, 200)

	proxy.Cut()
	for range 3 {
		r := f.Send(t, "POST", "/api/v1/provider-connections/"+f.connA+"/inventory-sync", f.owner.Token, nil)
		r.ExpectProblem(t, 503, "database_unavailable")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", r)
		}
		f.Send(t, "GET", "/api/v1/operations?tenant_id="+f.tenantA, f.owner.Token, nil).ExpectProblem(t, 503, "database_unavailable")
		f.Send(t, "GET", "/api/v1/provider-connections/"+f.connA, f.owner.Token, nil).ExpectProblem(t, 503, "database_unavailable")
	}
	ready := f.Send(t, "GET", "/readyz", "", nil)
	ready.ExpectProblem(t, 503, "not_ready")
	if n := strings.Count(s.Logs.String(), "database unavailable"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, s.Logs.With("database unavailable"))
	}
	if lines := s.Logs.With("level=ERROR"); strings.Contains(lines, "request failed") {
		t.Errorf("requests were logged as failures during the outage:\n%s", lines)
	}

	proxy.Restore()
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	f.Send(t, "GET", "/readyz", "", nil).ExpectStatus(t, 200)
}
