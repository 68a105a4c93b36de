package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// limits is a start body's limits.
func limits(queueTTL, maxDuration int) map[string]any {
	l := map[string]any{}
	if queueTTL > 0 {
		l["queue_ttl_s"] = queueTTL
	}
	if maxDuration > 0 {
		l["max_duration_s"] = maxDuration
	}
	return map[string]any{"limits": l}
}

// operation reads run id.
func (f *fixture) operation(t *testing.T, id string) apptest.Run {
	t.Helper()
	var run apptest.Run
	f.Must(t, 200, "GET", "/api/v1/operations/"+id, f.owner.Token, nil, &run)
	return run
}

// TestQueueTTL: a run no executor claims by its claim_by (here a second
// after acceptance) ends failed / execution.not_picked_up, which frees its
// scope: the next start on it is accepted. A run claimed before its
// claim_by is not ended by it, and gets its finish_by at the claim.
func TestQueueTTL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	inventory := contractSurfaces[5]

	res := f.start(t, inventory, startArgs{conn: acme, body: limits(1, 0)}).ExpectStart(t, "accepted")
	d := res.Run.Deadlines
	if d == nil || d.FinishBy != nil || d.ClaimBy.Sub(res.Run.CreatedAt) < 500*time.Millisecond || d.ClaimBy.Sub(res.Run.CreatedAt) > 5*time.Second {
		t.Fatalf("deadlines %+v of a run created at %s with a 1 s queue TTL", d, res.Run.CreatedAt)
	}
	f.Reaped.Until(t, 30*time.Second, "the run to end not picked up", func() bool {
		return f.operation(t, res.Run.ID).Status == "failed"
	})
	run := f.operation(t, res.Run.ID)
	if run.Reason == nil || run.Reason.Code != "execution.not_picked_up" || run.Reason.Class != "execution_unavailable" || run.StartedAt != nil {
		t.Fatalf("the run that was not picked up: %+v", run)
	}
	var detail struct {
		NextSteps []apptest.NextStep `json:"next_steps"`
	}
	f.Must(t, 200, "GET", "/api/v1/operations/"+res.Run.ID, f.owner.Token, nil, &detail)
	if len(detail.NextSteps) == 0 || !strings.Contains(detail.NextSteps[0].Label, `"acme"`) {
		t.Errorf("next steps %+v do not name the provider whose executors did not pick it up", detail.NextSteps)
	}

	// The scope is free; this run is claimed before its claim_by.
	next := f.start(t, inventory, startArgs{conn: acme, body: limits(2, 3600)}).ExpectStart(t, "accepted").Run
	got := f.claim(t, ex, 1, 0)
	if len(got) != 1 || got[0].Run.ID != next.ID {
		t.Fatalf("claimed %+v, want %s", got, next.ID)
	}
	claimBy := next.Deadlines.ClaimBy
	f.Reaped.Until(t, 30*time.Second, "a reaper pass well after claim_by", func() bool {
		// The executor keeps its lease meanwhile.
		f.Must(t, 200, "POST", "/api/v1/executor/runs/"+next.ID+"/heartbeat", ex.Token, map[string]any{"epoch": got[0].Lease.Epoch}, nil)
		return time.Now().After(claimBy.Add(time.Second))
	})
	if run := f.operation(t, next.ID); run.Status != "running" || run.Deadlines == nil || run.Deadlines.FinishBy == nil ||
		run.Deadlines.FinishBy.Sub(*run.StartedAt) < 59*time.Minute {
		t.Fatalf("a run claimed before its claim_by: %+v (deadlines %+v)", run, run.Deadlines)
	}
}

// TestMaxDuration: a run whose executor heartbeats but never completes ends
// failed / execution.timed_out past its finish_by, and its next heartbeat
// (and completion) is answered 409 lease_lost saying it timed out.
func TestMaxDuration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme, body: limits(0, 1)}).ExpectStart(t, "accepted").Run
	claims := f.claim(t, ex, 1, 0)
	if len(claims) != 1 || claims[0].Run.ID != run.ID {
		t.Fatalf("claimed %+v", claims)
	}
	epoch := claims[0].Lease.Epoch
	beat := func() apptest.Reply {
		return f.Call(t, "POST", "/api/v1/executor/runs/"+run.ID+"/heartbeat", ex.Token, map[string]any{"epoch": epoch})
	}
	var last apptest.Reply
	f.Reaped.Until(t, 30*time.Second, "the heartbeat to be refused", func() bool {
		last = beat()
		return last.Status != 200
	})
	if p := last.ExpectProblem(t, 409, "lease_lost"); !strings.Contains(p.Detail, "timed out") {
		t.Errorf("heartbeat after the deadline: %q does not say it timed out", p.Detail)
	}
	if p := f.complete(t, ex, run.ID, map[string]any{"epoch": epoch, "status": "succeeded"}).ExpectProblem(t, 409, "lease_lost"); !strings.Contains(p.Detail, "timed out") {
		t.Errorf("completion after the deadline: %q does not say it timed out", p.Detail)
	}
	got := f.operation(t, run.ID)
	if got.Status != "failed" || got.Reason == nil || got.Reason.Code != "execution.timed_out" || got.Reason.Class != "execution_interrupted" {
		t.Fatalf("the run that outran its deadline: %+v", got)
	}
	f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted") // the scope is free
}

// TestLimitsBadInput: limits out of range, of the wrong type or with
// unknown fields are 422 invalid_limits on every start endpoint, and
// record nothing.
func TestLimitsBadInput(t *testing.T) {
	f := newExclusiveFixture(t)
	bad := []any{
		map[string]any{"queue_ttl_s": 0}, map[string]any{"queue_ttl_s": 86401}, map[string]any{"max_duration_s": -5},
		map[string]any{"queue_ttl_s": "60"}, map[string]any{"max_duration_s": 1.5}, map[string]any{"ttl": 60},
		[]int{60}, "60", true,
	}
	var session struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenantA+"/onboarding-sessions", f.owner.Token, nil, &session)
	blocked := f.start(t, contractSurfaces[5], startArgs{conn: f.newConnection(t, f.tenantA, f.owner.Token, conn{Consent: "missing"})}).ExpectStart(t, "blocked").Run.ID
	paths := map[string]map[string]any{
		"/api/v1/tenants/" + f.tenantA + "/verify":                          {},
		"/api/v1/provider-connections/" + f.connA + "/inventory-sync":       {},
		"/api/v1/onboarding-sessions/" + session.ID + "/verify":             {},
		"/api/v1/onboarding-sessions/" + session.ID + "/bootstrap":          {"operations": []string{"inventory.sync"}},
		"/api/v1/operations/" + blocked + "/rerun":                          {},
		"/api/v1/tenants/" + f.tenantA + "/directory/groups/sync":           {"provider_connection_id": f.connA},
		"/api/v1/tenants/" + f.tenantA + "/directory/role-definitions/sync": {},
		"/api/v1/provider-connections/" + f.connA + "/compliance-snapshot":  {},
		"/api/v1/provider-connections/" + f.connA + "/check":                {},
	}
	f.unchanged(t, "starts with bad limits", func() {
		for path, base := range paths {
			for _, l := range bad {
				body := map[string]any{"limits": l}
				for k, v := range base {
					body[k] = v
				}
				f.Call(t, "POST", path, f.owner.Token, body).ExpectProblem(t, 422, "invalid_limits")
			}
		}
	})
	// Well-formed limits are taken.
	f.Call(t, "POST", "/api/v1/provider-connections/"+f.connA+"/inventory-sync", f.owner.Token, limits(60, 120)).ExpectStart(t, "accepted")
}

// TestExecutorLiveness: a registered executor that never called in does
// not count for the preflight (blocked, saying none ever called in); one
// call makes it live; silence past OPSGATE_EXECUTOR_LIVENESS blocks again,
// saying when it was last seen; the executors list shows live.
func TestExecutorLiveness(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: true}),
		apptest.Configure(func(c *config.Config) { c.ExecutorLiveness = time.Second }))
	f := newFixtureOn(t, s)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerIdle(t, "jobs", []string{"acme"}, nil)
	inventory := contractSurfaces[5]

	res := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	if res.Reason.Code != "provider.no_executor" || !strings.Contains(res.Reason.Message, `No executor of provider "acme" has ever called in`) {
		t.Fatalf("a registered executor that never called in: %+v", res.Reason)
	}
	f.callIn(t, ex)
	run := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)

	var list struct{ Items []apptest.Executor }
	apptest.WaitFor(t, 30*time.Second, "the executor's liveness to lapse", func() bool {
		f.Must(t, 200, "GET", "/api/v1/admin/executors", apptest.AdminToken, nil, &list)
		return !list.Items[0].Live
	})
	res = f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "blocked")
	seen := list.Items[0].LastSeenAt.UTC().Format(time.RFC3339)
	if res.Reason.Code != "provider.no_executor" || !strings.Contains(res.Reason.Message, `An executor of provider "acme" was last seen at `+seen) {
		t.Fatalf("an executor silent past the window: %+v, want last seen at %s", res.Reason, seen)
	}
}

// TestRerun: a run that ended is started again through the gate, as the
// same operation on the same connection, with surface rerun and rerun_of;
// a blocked run is blocked again for the same reason; a restore needs its
// safeguards again; an active run is 409 run_active; authorization is a
// start's (404 for runs of other tenants, byte-identical to an unknown id;
// 403 without the operation's capability); Idempotency-Key replays.
func TestRerun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	inventory := contractSurfaces[5]
	rerun := func(id, token string, body any, headers ...apptest.Header) apptest.Reply {
		return f.Call(t, "POST", "/api/v1/operations/"+id+"/rerun", token, body, headers...)
	}
	check := func(name string, res apptest.StartResult, original apptest.Run) {
		t.Helper()
		r := res.Run
		if r.RerunOf == nil || *r.RerunOf != original.ID || r.Surface != "rerun" || r.Type != original.Type || r.ID == original.ID ||
			r.ProviderConnection == nil || r.ProviderConnection.ID != original.ProviderConnection.ID || r.InitiatorID != f.operator.ID {
			t.Errorf("%s: rerun %+v of %+v", name, r, original)
		}
	}

	// Failed.
	failed := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run
	if got := f.claim(t, ex, 1, 0); len(got) != 1 {
		t.Fatalf("claimed %d runs", len(got))
	}
	// Active: 409, for someone allowed; a readonly member is refused first.
	rerun(failed.ID, f.operator.Token, nil).ExpectProblem(t, 409, "run_active")
	rerun(failed.ID, f.readonly.Token, nil).ExpectProblem(t, 403, "forbidden")
	f.complete(t, ex, failed.ID, map[string]any{"epoch": 1, "status": "failed", "reason_code": "provider.unavailable"}).ExpectStatus(t, 200)
	again := rerun(failed.ID, f.operator.Token, nil).ExpectStart(t, "accepted")
	check("failed", again, *failed)
	var detail apptest.Run
	f.Must(t, 200, "GET", "/api/v1/operations/"+again.Run.ID, f.operator.Token, nil, &detail)
	if detail.RerunOf == nil || *detail.RerunOf != failed.ID || detail.Deadlines == nil {
		t.Errorf("the rerun's detail: %+v", detail)
	}

	// Cancelled (the rerun above, cancelled while queued).
	f.Must(t, 200, "POST", "/api/v1/operations/"+again.Run.ID+"/cancel", f.owner.Token, nil, nil)
	cancelled := f.operation(t, again.Run.ID)
	second := rerun(cancelled.ID, f.operator.Token, nil).ExpectStart(t, "accepted")
	check("cancelled", second, cancelled)
	// A rerun while the same operation is active is deduped onto it.
	if res := rerun(failed.ID, f.operator.Token, nil).ExpectStart(t, "deduped"); res.Run.ID != second.Run.ID {
		t.Errorf("a second rerun: %+v, want deduped onto the first rerun", res.Run)
	}
	f.Must(t, 200, "POST", "/api/v1/operations/"+second.Run.ID+"/cancel", f.owner.Token, nil, nil)

	// Blocked: blocked again, same reason.
	noConsent := f.newConnection(t, f.tenantA, f.owner.Token, conn{Consent: "missing"})
	blocked := f.start(t, inventory, startArgs{conn: noConsent}).ExpectStart(t, "blocked")
	res := rerun(blocked.Run.ID, f.operator.Token, nil).ExpectStart(t, "blocked")
	if res.Reason == nil || res.Reason.Code != blocked.Reason.Code {
		t.Errorf("rerun of a blocked run: %+v, want blocked for %s again", res.Reason, blocked.Reason.Code)
	}
	check("blocked", res, *blocked.Run)

	// Succeeded, with an Idempotency-Key.
	ok := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	succeeded := f.start(t, inventory, startArgs{conn: ok}).ExpectStart(t, "accepted").Run
	claims := f.claim(t, ex, 1, 0)
	if len(claims) != 1 || claims[0].Run.ID != succeeded.ID {
		t.Fatalf("claimed %+v", claims)
	}
	f.complete(t, ex, succeeded.ID, map[string]any{"epoch": claims[0].Lease.Epoch, "status": "succeeded"}).ExpectStatus(t, 200)
	key := apptest.Header{Key: "Idempotency-Key", Value: "rerun-" + randomID()}
	first := rerun(succeeded.ID, f.operator.Token, map[string]any{}, key)
	first.ExpectStart(t, "accepted")
	replay := rerun(succeeded.ID, f.operator.Token, map[string]any{}, key)
	if replay.Status != 202 || replay.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replay.Body, first.Body) {
		t.Errorf("the rerun's replay: %s", replay)
	}

	// A restore needs its safeguards again.
	restoreRun := f.newRestoreRun(t, `[{"name":"mailbox"}]`, true)
	restore := f.start(t, contractSurfaces[3], startArgs{conn: f.connA, restoreRun: restoreRun}).ExpectStart(t, "accepted").Run
	f.Must(t, 200, "POST", "/api/v1/operations/"+restore.ID+"/cancel", f.owner.Token, nil, nil)
	rerun(restore.ID, f.owner.Token, nil).ExpectProblem(t, 422, "confirmation_required")
	if res := rerun(restore.ID, f.owner.Token, map[string]any{"confirm": true}).ExpectStart(t, "accepted"); res.Run.Target == nil || *res.Run.Target != restoreRun {
		t.Errorf("the restore's rerun: %+v", res.Run)
	}
	rerun(restore.ID, f.operator.Token, map[string]any{"confirm": true}).ExpectProblem(t, 403, "forbidden")

	// Not visible, or unknown: the same 404.
	hidden := rerun(failed.ID, f.outsider.Token, nil)
	unknown := rerun(randomID(), f.outsider.Token, nil)
	hidden.ExpectProblem(t, http.StatusNotFound, "not_found")
	unknown.ExpectProblem(t, http.StatusNotFound, "not_found")
	if !bytes.Equal(hidden.Body, unknown.Body) {
		t.Errorf("a run of another tenant answers differently from an unknown id:\n%s\n%s", hidden, unknown)
	}
}
