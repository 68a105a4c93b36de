package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/executorclient"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// registerExecutor registers an executor of providers (types nil: all).
func (f *fixture) registerExecutor(t *testing.T, name string, providers []string, types []string) apptest.Executor {
	t.Helper()
	ex := f.registerIdle(t, name, providers, types)
	f.callIn(t, ex)
	return ex
}

// registerIdle registers an executor that has not called in yet (not live).
func (f *fixture) registerIdle(t *testing.T, name string, providers []string, types []string) apptest.Executor {
	t.Helper()
	body := map[string]any{"name": name, "providers": providers, "operation_types": types}
	var ex apptest.Executor
	f.Must(t, 201, "POST", "/api/v1/admin/executors", apptest.AdminToken, body, &ex)
	if !strings.HasPrefix(ex.Token, "oge_") || ex.ID == "" {
		t.Fatalf("registered executor %+v: want an id and an oge_ token", ex)
	}
	return ex
}

// callIn has ex call an executor endpoint without taking work (a
// heartbeat of no run: 404), which makes it live for the preflight.
func (f *fixture) callIn(t *testing.T, ex apptest.Executor) {
	t.Helper()
	f.Call(t, "POST", "/api/v1/executor/runs/"+randomID()+"/heartbeat", ex.Token, map[string]any{"epoch": 1}).ExpectProblem(t, 404, "not_found")
}

// claim claims up to max runs as ex, waiting up to waitMS.
func (f *fixture) claim(t *testing.T, ex apptest.Executor, max, waitMS int) []apptest.ExecutorClaim {
	t.Helper()
	var out struct{ Items []apptest.ExecutorClaim }
	f.Must(t, 200, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": max, "wait_ms": waitMS}, &out)
	return out.Items
}

func (f *fixture) complete(t *testing.T, ex apptest.Executor, runID string, body map[string]any) apptest.Reply {
	t.Helper()
	return f.Call(t, "POST", "/api/v1/executor/runs/"+runID+"/complete", ex.Token, body)
}

func (f *fixture) heartbeat(t *testing.T, ex apptest.Executor, runID string, epoch int64) apptest.Reply {
	t.Helper()
	return f.Call(t, "POST", "/api/v1/executor/runs/"+runID+"/heartbeat", ex.Token, map[string]any{"epoch": epoch})
}

// TestExecutorRegistry: executors are registered, listed with
// last_seen_at and revoked by the admin; their tokens work on the executor
// endpoints only, and no other token works there.
func TestExecutorRegistry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.Call(t, "POST", "/api/v1/admin/executors", f.owner.Token, map[string]any{"name": "x", "providers": []string{"acme"}}).ExpectProblem(t, 401, "unauthorized")
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
	}{
		"no name":         {`{"providers":["acme"]}`, 422, "validation_failed"},
		"no providers":    {`{"name":"x","providers":[]}`, 422, "validation_failed"},
		"unknown type":    {`{"name":"x","providers":["acme"],"operation_types":["no.such"]}`, 422, "validation_failed"},
		"no types":        {`{"name":"x","providers":["acme"],"operation_types":[]}`, 422, "validation_failed"},
		"unknown field":   {`{"name":"x","providers":["acme"],"token":"oge_mine"}`, 400, "unknown_field"},
		"providers typed": {`{"name":"x","providers":"acme"}`, 400, "invalid_field_type"},
	} {
		f.Call(t, "POST", "/api/v1/admin/executors", apptest.AdminToken, tc.body).ExpectProblem(t, tc.status, tc.code)
		_ = name
	}

	ex := f.registerIdle(t, "PHP jobs", []string{"acme"}, nil)
	var list struct{ Items []apptest.Executor }
	f.Must(t, 200, "GET", "/api/v1/admin/executors", apptest.AdminToken, nil, &list)
	if len(list.Items) != 1 || list.Items[0].ID != ex.ID || list.Items[0].Token != "" || list.Items[0].LastSeenAt != nil || list.Items[0].OperationTypes != nil ||
		list.Items[0].Live {
		t.Fatalf("listed %+v, want the new executor, never seen (not live), all types, without its token", list.Items)
	}
	// Tokens work where they belong only.
	f.Call(t, "GET", "/api/v1/operations?tenant_id="+f.tenantA, ex.Token, nil).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "GET", "/api/v1/admin/executors", ex.Token, nil).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "POST", "/api/v1/executor/claims", f.owner.Token, `{}`).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "POST", "/api/v1/executor/claims", apptest.AdminToken, `{}`).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "POST", "/api/v1/executor/claims", "", `{}`).ExpectProblem(t, 401, "unauthorized")
	if got := f.claim(t, ex, 1, 0); len(got) != 0 {
		t.Fatalf("claimed %d runs with nothing queued", len(got))
	}
	f.Must(t, 200, "GET", "/api/v1/admin/executors", apptest.AdminToken, nil, &list)
	if list.Items[0].LastSeenAt == nil || !list.Items[0].Live {
		t.Errorf("last_seen_at not set, or not live, after the executor's claim: %+v", list.Items[0])
	}

	f.Must(t, 204, "DELETE", "/api/v1/admin/executors/"+ex.ID, apptest.AdminToken, nil, nil)
	f.Call(t, "POST", "/api/v1/executor/claims", ex.Token, `{}`).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "DELETE", "/api/v1/admin/executors/"+ex.ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	for _, typ := range []string{"ExecutorRegistered", "ExecutorRevoked"} {
		var n int
		if err := f.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE event_type = $1 AND stream_id = $2`, typ, "executor-"+ex.ID).Scan(&n); err != nil || n != 1 {
			t.Errorf("%d %s events (%v), want 1", n, typ, err)
		}
	}
}

// TestNoExecutorBlocks: a start whose provider nothing executes is blocked
// provider.no_executor, naming the provider, and queues nothing; an
// executor registered for the provider (and the operation's type) lets the
// next start be accepted.
func TestNoExecutorBlocks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	inventory, compliance := contractSurfaces[5], contractSurfaces[6]

	res := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	if res.Reason.Code != "provider.no_executor" || res.Reason.Class != "execution_unavailable" {
		t.Fatalf("reason %+v, want provider.no_executor (execution_unavailable)", res.Reason)
	}
	if len(res.NextSteps) == 0 || !strings.Contains(res.NextSteps[0].Label, `"acme"`) {
		t.Errorf("next steps %+v do not name the provider", res.NextSteps)
	}
	var queued int
	if err := f.Pool.QueryRow(context.Background(), `SELECT count(*) FROM runs WHERE status = 'queued'`).Scan(&queued); err != nil || queued != 0 {
		t.Fatalf("%d runs queued (%v), want none", queued, err)
	}

	f.registerExecutor(t, "compliance only", []string{"acme"}, []string{"compliance.snapshot"})
	f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	run := f.start(t, compliance, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.registerExecutor(t, "everything", []string{"acme", "other"}, nil)
	f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "scope_busy") // the compliance run holds the scope
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)
	f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted")
}

// TestExecutorRunsARun: a run is claimed (running, with its connection and
// a lease), heartbeated and completed with a summary; a repeated completion
// is answered again without a new event; a different one, or a heartbeat
// afterwards, is told lease_lost.
func TestExecutorRunsARun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "go jobs", []string{"acme"}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run

	claims := f.claim(t, ex, 5, 0)
	if len(claims) != 1 {
		t.Fatalf("claimed %d runs, want 1", len(claims))
	}
	c := claims[0]
	if c.Run.ID != run.ID || c.Run.Status != "running" || c.Run.StartedAt == nil || c.Connection.ID != acme ||
		c.Connection.Provider != "acme" || c.Lease.Epoch != 1 || c.Lease.HeartbeatIntervalMs <= 0 || c.Connection.Settings == nil {
		t.Fatalf("claim %+v", c)
	}
	if again := f.claim(t, ex, 5, 0); len(again) != 0 {
		t.Fatalf("the run was claimed twice")
	}
	f.heartbeat(t, ex, run.ID, 1).ExpectStatus(t, 200)
	f.heartbeat(t, ex, run.ID, 2).ExpectProblem(t, 409, "lease_lost")

	done := map[string]any{"epoch": 1, "status": "succeeded", "summary": map[string]any{"groups": 3}}
	var ended apptest.Run
	f.complete(t, ex, run.ID, done).Decode(t, &ended)
	if ended.Status != "succeeded" || ended.FinishedAt == nil {
		t.Fatalf("completed run %+v", ended)
	}
	events := f.Count(t, `SELECT count(*) FROM events`)
	f.complete(t, ex, run.ID, done).ExpectStatus(t, 200)
	if n := f.Count(t, `SELECT count(*) FROM events`); n != events {
		t.Errorf("the repeated completion recorded %d events", n-events)
	}
	f.complete(t, ex, run.ID, map[string]any{"epoch": 1, "status": "failed", "reason_code": "provider.unavailable"}).ExpectProblem(t, 409, "lease_lost")
	p := f.heartbeat(t, ex, run.ID, 1).ExpectProblem(t, 409, "lease_lost")
	if !strings.Contains(p.Detail, "completed") {
		t.Errorf("lease_lost detail %q does not say the run was completed", p.Detail)
	}

	var detail struct {
		Status  string         `json:"status"`
		Summary map[string]any `json:"summary"`
	}
	f.waitRun(t, run.ID)
	apptest.WaitFor(t, 10*time.Second, "the run detail to show the summary", func() bool {
		f.Must(t, 200, "GET", "/api/v1/operations/"+run.ID, f.owner.Token, nil, &detail)
		return detail.Status == "succeeded"
	})
	if detail.Summary["groups"] != float64(3) {
		t.Errorf("run detail summary %v", detail.Summary)
	}
	var actor, holder string
	err := f.Pool.QueryRow(context.Background(), `SELECT metadata->>'actor', payload->>'worker_id' FROM events
		WHERE event_type = 'RunStarted' AND payload->>'run_id' = $1`, run.ID).Scan(&actor, &holder)
	if err != nil || actor != "executor:"+ex.ID || holder != "executor:"+ex.ID {
		t.Errorf("RunStarted recorded actor %q, holder %q (%v); want the executor", actor, holder, err)
	}
}

// TestExecutorBadInput: malformed or invalid claims, heartbeats and
// completions answer a 4xx problem, record nothing and leave the lease
// as it was.
func TestExecutorBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	if len(f.claim(t, ex, 1, 0)) != 1 {
		t.Fatal("nothing claimed")
	}
	var lease time.Time
	leaseOf := func() time.Time {
		var at time.Time
		if err := f.Pool.QueryRow(context.Background(), `SELECT lease_expires_at FROM runs WHERE id = $1`, run).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	lease = leaseOf()
	complete := "/api/v1/executor/runs/" + run + "/complete"
	big := `{"epoch":1,"status":"succeeded","summary":{"x":"` + strings.Repeat("a", 17<<10) + `"}}`
	for _, tc := range []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"max 0", "/api/v1/executor/claims", `{"max":0}`, 422, "validation_failed"},
		{"max 101", "/api/v1/executor/claims", `{"max":101}`, 422, "validation_failed"},
		{"wait negative", "/api/v1/executor/claims", `{"wait_ms":-1}`, 422, "validation_failed"},
		{"wait too long", "/api/v1/executor/claims", `{"wait_ms":30001}`, 422, "validation_failed"},
		{"claim unknown field", "/api/v1/executor/claims", `{"max":1,"lease":5}`, 400, "unknown_field"},
		{"claim malformed", "/api/v1/executor/claims", `{"max":`, 400, "malformed_json"},
		{"heartbeat without epoch", "/api/v1/executor/runs/" + run + "/heartbeat", `{}`, 422, "validation_failed"},
		{"heartbeat epoch typed", "/api/v1/executor/runs/" + run + "/heartbeat", `{"epoch":"1"}`, 400, "invalid_field_type"},
		{"heartbeat bad id", "/api/v1/executor/runs/nope/heartbeat", `{"epoch":1}`, 400, "invalid_id"},
		{"unknown status", complete, `{"epoch":1,"status":"done"}`, 422, "validation_failed"},
		{"failed without reason", complete, `{"epoch":1,"status":"failed"}`, 422, "validation_failed"},
		{"unknown reason", complete, `{"epoch":1,"status":"failed","reason_code":"provider.on_fire"}`, 422, "validation_failed"},
		{"preflight reason", complete, `{"epoch":1,"status":"failed","reason_code":"provider_connection.consent_missing"}`, 422, "validation_failed"},
		{"reaper's reason", complete, `{"epoch":1,"status":"failed","reason_code":"execution.lost"}`, 422, "validation_failed"},
		{"succeeded with a reason", complete, `{"epoch":1,"status":"succeeded","reason_code":"provider.unavailable"}`, 422, "validation_failed"},
		{"summary not an object", complete, `{"epoch":1,"status":"succeeded","summary":[1,2]}`, 422, "validation_failed"},
		{"summary too large", complete, big, 422, "validation_failed"},
		{"bad observation", complete, `{"epoch":1,"status":"succeeded","observations":{"consent":"missing"}}`, 422, "validation_failed"},
		{"unknown observation", complete, `{"epoch":1,"status":"succeeded","observations":{"mood":"good"}}`, 400, "unknown_field"},
		{"completion unknown field", complete, `{"epoch":1,"status":"succeeded","result":{}}`, 400, "unknown_field"},
		{"completion malformed", complete, `{"epoch":1,`, 400, "malformed_json"},
		{"unknown run", "/api/v1/executor/runs/" + randomID() + "/complete", `{"epoch":1,"status":"succeeded"}`, 404, "not_found"},
	} {
		events := f.Count(t, `SELECT count(*) FROM events`)
		f.Call(t, "POST", tc.path, ex.Token, tc.body).ExpectProblem(t, tc.status, tc.code)
		if n := f.Count(t, `SELECT count(*) FROM events`); n != events {
			t.Errorf("%s recorded %d events", tc.name, n-events)
		}
	}
	if got := leaseOf(); !got.Equal(lease) {
		t.Errorf("bad input moved the lease from %v to %v", lease, got)
	}
	f.complete(t, ex, run, map[string]any{"epoch": 1, "status": "succeeded"}).ExpectStatus(t, 200)
}

// TestExecutorLeaseLost: a cancelled run and a reaped one (its executor
// stopped heartbeating) refuse the executor's heartbeat and completion
// with lease_lost saying why, and free their scope; revoking an executor
// ends the runs it holds at once.
func TestExecutorLeaseLost(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: true}), apptest.Configure(func(c *config.Config) {
		c.Lease, c.Heartbeat = 400*time.Millisecond, 100*time.Millisecond
	}))
	f := newFixtureOn(t, s)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	inventory := contractSurfaces[5]

	run := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.claim(t, ex, 1, 0)
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)
	if p := f.heartbeat(t, ex, run, 1).ExpectProblem(t, 409, "lease_lost"); !strings.Contains(p.Detail, "cancelled") {
		t.Errorf("detail %q does not say cancelled", p.Detail)
	}
	f.complete(t, ex, run, map[string]any{"epoch": 1, "status": "succeeded"}).ExpectProblem(t, 409, "lease_lost")

	run = f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.claim(t, ex, 1, 0) // and never heartbeats
	f.Reaped.Until(t, 30*time.Second, "the reaper to end the run", func() bool {
		var status string
		_ = f.Pool.QueryRow(context.Background(), `SELECT status FROM runs WHERE id = $1`, run).Scan(&status)
		return status == "failed"
	})
	if p := f.complete(t, ex, run, map[string]any{"epoch": 1, "status": "succeeded"}).ExpectProblem(t, 409, "lease_lost"); !strings.Contains(p.Detail, "lost") {
		t.Errorf("detail %q does not say the run was ended as lost", p.Detail)
	}

	run = f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.claim(t, ex, 1, 0)
	f.Must(t, 204, "DELETE", "/api/v1/admin/executors/"+ex.ID, apptest.AdminToken, nil, nil)
	var status, reason string
	err := f.Pool.QueryRow(context.Background(), `SELECT r.status, e.payload->'reason'->>'code' FROM runs r JOIN events e
		ON e.event_type = 'RunFailed' AND e.payload->>'run_id' = r.id WHERE r.id = $1`, run).Scan(&status, &reason)
	if err != nil || status != "failed" || reason != "execution.lost" {
		t.Errorf("the revoked executor's run is %s/%s (%v), want failed/execution.lost at once", status, reason, err)
	}

	// Both lost runs are counted against the executor that held them, and
	// none against the built-in worker.
	lost := func(executor string) float64 {
		for _, m := range parseMetrics(t, string(f.Call(t, "GET", "/metrics", "", nil).Body)) {
			if m.name == "opsgate_runs_lost_total" && m.labels["executor"] == executor {
				return m.value
			}
		}
		return -1
	}
	apptest.WaitFor(t, 30*time.Second, "the runs lost to show on /metrics", func() bool { return lost(ex.ID) == 2 })
	if n := lost("builtin"); n != 0 {
		t.Errorf("runs lost by the built-in worker: %v, want 0 (a series at zero)", n)
	}
}

// TestLongPoll: with nothing queued a claim waits wait_ms and answers an
// empty list; a run accepted while an executor waits is handed to it.
func TestLongPoll(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)

	began := time.Now()
	if got := f.claim(t, ex, 1, 300); len(got) != 0 {
		t.Fatalf("claimed %d runs with nothing queued", len(got))
	}
	if waited := time.Since(began); waited < 300*time.Millisecond {
		t.Errorf("an empty long poll answered after %v, before its wait_ms", waited)
	}

	got := make(chan []apptest.ExecutorClaim, 1)
	go func() { got <- f.claim(t, ex, 1, 30_000) }()
	// Whether the claim looked before or after the acceptance, it is handed
	// the run: at once, or woken by the acceptance (the claim does not poll).
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	select {
	case claims := <-got:
		if len(claims) != 1 || claims[0].Run.ID != run {
			t.Fatalf("the waiting executor got %+v, want run %s", claims, run)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the waiting executor was not handed the run accepted meanwhile")
	}
}

// TestReadinessLearnedFromExecution: what runs find out about their
// connection is recorded on it and blocks the next start with the matching
// preflight reason; a succeeded check verifies the connection; operators'
// changes afterwards are named as theirs.
func TestReadinessLearnedFromExecution(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	inventory, check := contractSurfaces[5], contractSurfaces[4]
	type connectionJSON struct {
		Consent            string     `json:"consent"`
		Credentials        string     `json:"credentials"`
		ReadinessChangedAt *time.Time `json:"readiness_changed_at"`
		ReadinessChangedBy *struct {
			Kind string `json:"kind"`
			ID   string `json:"id"`
		} `json:"readiness_changed_by"`
		LastVerifiedAt *time.Time `json:"last_verified_at"`
	}
	connection := func() connectionJSON {
		var c connectionJSON
		f.Must(t, 200, "GET", "/api/v1/provider-connections/"+acme, f.owner.Token, nil, &c)
		return c
	}
	runOnce := func(sc surfaceCase, body map[string]any) string {
		t.Helper()
		run := f.start(t, sc, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
		claims := f.claim(t, ex, 1, 0)
		if len(claims) != 1 || claims[0].Run.ID != run {
			t.Fatalf("claimed %+v, want run %s", claims, run)
		}
		body["epoch"] = claims[0].Lease.Epoch
		f.complete(t, ex, run, body).ExpectStatus(t, 200)
		return run
	}
	hasCheckStep := func(res apptest.StartResult) bool {
		for _, s := range res.NextSteps {
			if s.Action == "run_connection_check" && s.Href != nil && strings.HasSuffix(*s.Href, "/provider-connections/"+acme+"/check") {
				return true
			}
		}
		return false
	}

	revoking := runOnce(inventory, map[string]any{"status": "failed", "reason_code": "provider.consent_revoked"})
	if c := connection(); c.Consent != "revoked" || c.ReadinessChangedBy == nil || c.ReadinessChangedBy.Kind != "run" || c.ReadinessChangedBy.ID != revoking || c.ReadinessChangedAt == nil {
		t.Fatalf("after consent_revoked: %+v", c)
	}
	res := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	if res.Reason.Code != "provider_connection.consent_missing" || !hasCheckStep(res) {
		t.Errorf("next start: %+v, want consent_missing with a step to run the check again", res)
	}
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+acme, f.owner.Token, map[string]any{"consent": "granted"}, nil)
	if c := connection(); c.ReadinessChangedBy == nil || c.ReadinessChangedBy.Kind != "operator" || c.ReadinessChangedBy.ID != f.owner.ID {
		t.Fatalf("after the operator's PATCH: %+v", c)
	}

	runOnce(check, map[string]any{"status": "failed", "reason_code": "provider.credentials_rejected"})
	if c := connection(); c.Credentials != "invalid" {
		t.Fatalf("after credentials_rejected: %+v", c)
	}
	res = f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	if res.Reason.Code != "provider_connection.credentials_invalid" || !hasCheckStep(res) {
		t.Errorf("next start: %+v, want credentials_invalid with a step to run the check again", res)
	}

	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+acme, f.owner.Token, map[string]any{"credentials": "valid"}, nil)
	verifying := runOnce(check, map[string]any{"status": "succeeded"})
	if c := connection(); c.LastVerifiedAt == nil || c.Consent != "granted" || c.Credentials != "valid" {
		t.Fatalf("after a succeeded check: %+v", c)
	}
	var detail struct {
		ConnectionChanges *struct {
			VerifiedAt *time.Time `json:"verified_at"`
		} `json:"connection_changes"`
	}
	f.waitRun(t, verifying)
	apptest.WaitFor(t, 10*time.Second, "the check's detail to show what it changed", func() bool {
		f.Must(t, 200, "GET", "/api/v1/operations/"+verifying, f.owner.Token, nil, &detail)
		return detail.ConnectionChanges != nil
	})
	if detail.ConnectionChanges.VerifiedAt == nil {
		t.Errorf("the check's detail shows %+v, want verified_at", detail.ConnectionChanges)
	}

	runOnce(inventory, map[string]any{"status": "succeeded", "observations": map[string]any{"credentials": "invalid"}})
	if c := connection(); c.Credentials != "invalid" {
		t.Fatalf("after an explicit observation: %+v", c)
	}
	f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
}

// TestExecutorsInTwoProcesses: 8 executors, 4 on each of two api processes
// sharing one database, run 500 runs on 100 connections (5 rounds of a
// start on every connection): every run is claimed exactly once and
// succeeds, none is lost, and no scope ever has two active runs.
func TestExecutorsInTwoProcesses(t *testing.T) {
	t.Parallel()
	one := apptest.Start(t, apptest.Roles(app.Roles{API: true}))
	two := apptest.Start(t, apptest.OnDatabase(one.DatabaseURL), apptest.Roles(app.Roles{API: true}))
	f := newFixtureOn(t, one)
	const connections, rounds = 100, 5
	conns := make([]string, connections)
	for i := range conns {
		conns[i] = f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme", Name: fmt.Sprintf("Acme %d", i)})
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 8 {
		ex := f.registerExecutor(t, fmt.Sprintf("executor %d", i), []string{"acme"}, nil)
		base := one.URL
		if i%2 == 1 {
			base = two.URL
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runExecutor(ctx, base, ex.Token); err != nil {
				t.Errorf("executor %d: %v", i, err)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	var runs []string
	for round := range rounds {
		for _, c := range conns {
			runs = append(runs, f.start(t, contractSurfaces[5], startArgs{conn: c}).ExpectStart(t, "accepted").Run.ID)
		}
		apptest.WaitFor(t, 60*time.Second, fmt.Sprintf("round %d to finish", round), func() bool {
			var active int
			_ = f.Pool.QueryRow(context.Background(), `SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`).Scan(&active)
			return active == 0
		})
	}
	var succeeded, started, ended int
	err := f.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM runs WHERE status = 'succeeded' AND id = ANY($1)),
		(SELECT count(*) FROM events WHERE event_type = 'RunStarted'),
		(SELECT count(*) FROM events WHERE event_type IN ('RunSucceeded', 'RunFailed', 'RunCancelled'))`, runs).Scan(&succeeded, &started, &ended)
	if err != nil {
		t.Fatal(err)
	}
	if succeeded != len(runs) || started != len(runs) || ended != len(runs) {
		t.Errorf("%d runs: %d succeeded, %d RunStarted, %d ends; want each exactly once", len(runs), succeeded, started, ended)
	}
	if twice := neverTwoActive(t, f, conns); twice > 0 {
		t.Errorf("%d starts were accepted while another run held their scope", twice)
	}
}

// neverTwoActive folds every connection's scope stream and counts the
// acceptances made while another run was active.
func neverTwoActive(t *testing.T, f *fixture, conns []string) int {
	t.Helper()
	rows, err := f.Pool.Query(context.Background(), `SELECT stream_id, event_type, payload->>'run_id' FROM events
		WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version`, scopesOf(conns))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	active := map[string]string{}
	twice := 0
	for rows.Next() {
		var stream, typ, run string
		if err := rows.Scan(&stream, &typ, &run); err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "StartAccepted":
			if active[stream] != "" {
				twice++
			}
			active[stream] = run
		case "RunSucceeded", "RunFailed", "RunCancelled":
			if active[stream] == run {
				active[stream] = ""
			}
		}
	}
	return twice
}

func scopesOf(conns []string) []string {
	out := make([]string, len(conns))
	for i, c := range conns {
		out[i] = "scope-connection-" + c
	}
	return out
}

// runExecutor runs the reference client against base until ctx ends,
// succeeding every run at once.
func runExecutor(ctx context.Context, base, token string) error {
	r := &executorclient.Runner{
		Client: executorclient.New(base, token), Concurrency: 4, Wait: time.Second,
		Handler: func(context.Context, executorclient.Claim) executorclient.Result {
			return executorclient.Succeeded(map[string]any{"ok": true})
		},
	}
	return r.Run(ctx)
}

// TestDroppedLongPollIsNoError: an executor that drops its long poll (it
// stops) is logged as the caller having gone away, never as a failed
// request of ours.
func TestDroppedLongPollIsNoError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex := f.registerExecutor(t, "dropper", []string{"nobody-" + randomID()}, nil)
	ctx, cancel := context.WithTimeout(f.Ctx, 300*time.Millisecond)
	defer cancel()
	id := "dropped-" + randomID()
	req, err := http.NewRequestWithContext(ctx, "POST", f.URL+"/api/v1/executor/claims", strings.NewReader(`{"max":1,"wait_ms":20000}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ex.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the long poll answered %d before the caller dropped it", resp.StatusCode)
	}
	apptest.WaitFor(t, 10*time.Second, "the dropped poll's log line", func() bool {
		return strings.Contains(f.Logs.With(id), "status=499")
	})
	if lines := f.Logs.With(id); strings.Contains(lines, "level=ERROR") || strings.Contains(lines, "status=500") {
		t.Errorf("a dropped long poll logged as an error:\n%s", lines)
	}
}
