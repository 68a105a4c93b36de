package api_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// TestRateLimits: each token has a bucket of its own (an integration one
// per user it acts for); past it a request is refused 429 rate_limited
// with Retry-After, recording nothing; every answer says the policy and
// what is left; an executor's heartbeats are never refused.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	// A second process with a rate so low that no request comes back
	// during the test: only the burst of 4 goes. The fixture is made
	// through the first, which has no limit.
	f := newFixture(t)
	lim := apptest.Start(t, apptest.OnDatabase(f.DatabaseURL), apptest.Roles(app.Roles{API: true}),
		apptest.Configure(func(c *config.Config) { c.RateLimit, c.RateBurst = 0.01, 4 }))
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	claims := f.claim(t, ex, 1, 0)
	if len(claims) != 1 {
		t.Fatalf("claimed %d", len(claims))
	}
	r := lim.Call(t, "GET", "/api/v1/operations/"+run, f.owner.Token, nil)
	if r.Status != 200 || r.Header.Get("RateLimit-Policy") != `"default";q=4;w=400` || !strings.HasPrefix(r.Header.Get("RateLimit"), `"default";r=3;`) {
		t.Errorf("answered %d with RateLimit-Policy %q, RateLimit %q", r.Status, r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"))
	}
	for range 3 {
		lim.Call(t, "GET", "/api/v1/operations/"+run, f.owner.Token, nil).ExpectStatus(t, 200)
	}
	before := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA)
	refused := lim.Call(t, "POST", "/api/v1/provider-connections/"+f.connA+"/inventory-sync", f.owner.Token, nil)
	refused.ExpectProblem(t, 429, "rate_limited")
	if after := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA); after != before {
		t.Errorf("a refused start recorded %d events", after-before)
	}
	if n, err := strconv.Atoi(refused.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q", refused.Header.Get("Retry-After"))
	}
	// Other tokens are not held back by the owner's.
	lim.Call(t, "GET", "/api/v1/operations/"+run, f.operator.Token, nil).ExpectStatus(t, 200)
	// An integration: one bucket per user it acts for.
	platform := f.newIntegration(t, f.workspace, "Platform")
	for range 4 {
		lim.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(f.auditor)).ExpectStatus(t, 200)
	}
	lim.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(f.auditor)).ExpectProblem(t, 429, "rate_limited")
	lim.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(f.readonly)).ExpectStatus(t, 200)
	// The executor's heartbeats and completion are never refused, however
	// many; its claims are limited like any request.
	epoch := claims[0].Lease.Epoch
	for range 10 {
		lim.Call(t, "POST", "/api/v1/executor/runs/"+run+"/heartbeat", ex.Token, map[string]any{"epoch": epoch}).ExpectStatus(t, 200)
	}
	lim.Call(t, "POST", "/api/v1/executor/runs/"+run+"/complete", ex.Token, map[string]any{"epoch": epoch, "status": "succeeded"}).ExpectStatus(t, 200)
	for range 4 {
		lim.Call(t, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1}).ExpectStatus(t, 200)
	}
	lim.Call(t, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1}).ExpectProblem(t, 429, "rate_limited")
	// The admin token too.
	for range 4 {
		lim.Call(t, "GET", "/api/v1/admin/executors", apptest.AdminToken, nil).ExpectStatus(t, 200)
	}
	lim.Call(t, "GET", "/api/v1/admin/executors", apptest.AdminToken, nil).ExpectProblem(t, 429, "rate_limited")
}
