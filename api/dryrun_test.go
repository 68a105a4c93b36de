package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/apptest"
)

// dryResult is a start's answer, a dry run's included.
type dryResult struct {
	Outcome   string             `json:"outcome"`
	Run       *apptest.Run       `json:"run"`
	Reason    *apptest.Reason    `json:"reason"`
	NextSteps []apptest.NextStep `json:"next_steps"`
	Message   apptest.Message    `json:"message"`
	DryRun    *bool              `json:"dry_run"`
}

// recorded counts what the fixture's tenants have recorded anywhere a
// start could write: events, runs, idempotency keys, notifications and
// changes.
func (f *fixture) recorded(t *testing.T) string {
	t.Helper()
	// Notifications and changes follow the commit: once the projections
	// and the change feed (a feed of its own) have caught up, so have they.
	for _, consumer := range []string{"operations", changes.ConsumerName} {
		if ok, err := f.Reader.CatchUp(f.Ctx, consumer); err != nil || !ok {
			t.Fatalf("%s did not catch up: %v", consumer, err)
		}
	}
	tenants := []string{f.tenantA, f.tenantB, f.tenantC}
	users := []string{f.owner.ID, f.operator.ID, f.auditor.ID, f.readonly.ID, f.outsider.ID}
	return fmt.Sprintf("events %d, runs %d, keys %d, notifications %d, changes %d",
		f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = ANY($1)`, tenants),
		f.Count(t, `SELECT count(*) FROM runs WHERE tenant_id = ANY($1)`, tenants),
		f.Count(t, `SELECT count(*) FROM idempotency_keys WHERE user_id = ANY($1)`, users),
		f.Count(t, `SELECT count(*) FROM projections.ops_notifications WHERE user_id = ANY($1)`, users),
		f.Count(t, `SELECT count(*) FROM changes WHERE tenant_id = ANY($1)`, tenants))
}

func stepsOf(steps []apptest.NextStep) string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Label+"/"+s.Action)
	}
	return strings.Join(out, ", ")
}

// TestDryRunAgreesWithTheStart: for each situation, a dry run answers what
// the start that follows it gets (status, outcome, reason, next steps,
// title, or the same problem), and records nothing anywhere, not even its
// idempotency key.
func TestDryRunAgreesWithTheStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	consent := f.newConnection(t, f.tenantA, f.owner.Token, conn{Consent: "missing"})
	creds := f.newConnection(t, f.tenantA, f.owner.Token, conn{Credentials: "invalid"})
	disabled := f.newConnection(t, f.tenantA, f.owner.Token, conn{Disabled: true})
	noExecutor := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "nobody"})
	draft := f.newRestoreRun(t, `[{"mailbox":"a"}]`, false)
	warned := f.newRestoreRun(t, `[{"overwrite":true}]`, true)
	for i, c := range []struct {
		name string
		path string
		body any
		tok  string
	}{
		{"accepted", "/api/v1/provider-connections/" + f.connA + "/inventory-sync", nil, ""},
		{"deduped", "/api/v1/provider-connections/" + f.connA + "/inventory-sync", nil, ""},
		{"scope busy", "/api/v1/provider-connections/" + f.connA + "/compliance-snapshot", nil, ""},
		{"consent missing", "/api/v1/provider-connections/" + consent + "/check", nil, ""},
		{"credentials invalid", "/api/v1/provider-connections/" + creds + "/inventory-sync", nil, ""},
		{"disabled", "/api/v1/provider-connections/" + disabled + "/inventory-sync", nil, ""},
		{"no executor", "/api/v1/provider-connections/" + noExecutor + "/inventory-sync", nil, ""},
		{"no connection", "/api/v1/tenants/" + f.tenantC + "/verify", nil, ""},
		{"tenant default busy", "/api/v1/tenants/" + f.tenantA + "/directory/groups/sync", nil, ""},
		{"restore unconfirmed", "/api/v1/tenants/" + f.tenantA + "/restore-runs/" + warned + "/execute", map[string]any{}, ""},
		{"restore warnings", "/api/v1/tenants/" + f.tenantA + "/restore-runs/" + warned + "/execute", map[string]any{"confirm": true}, ""},
		{"restore not previewed", "/api/v1/tenants/" + f.tenantA + "/restore-runs/" + draft + "/execute", map[string]any{"confirm": true}, ""},
		{"not a member", "/api/v1/provider-connections/" + f.connA + "/check", nil, f.outsider.Token},
		{"no capability", "/api/v1/provider-connections/" + f.connB + "/inventory-sync", nil, f.readonly.Token},
		{"readonly", "/api/v1/provider-connections/" + f.connA + "/inventory-sync", nil, f.readonly.Token},
	} {
		token := c.tok
		if token == "" {
			token = f.owner.Token
		}
		key := apptest.Header{Key: "Idempotency-Key", Value: fmt.Sprintf("dry-%d", i)}
		before := f.recorded(t)
		dry := f.Call(t, "POST", c.path+"?dry_run=true", token, c.body, key)
		if after := f.recorded(t); after != before {
			t.Errorf("%s: the dry run recorded something: %s, then %s", c.name, before, after)
		}
		real := f.Call(t, "POST", c.path, token, c.body, key)
		if dry.Status != real.Status || real.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("%s: dry run %d, start %d (replayed %q)", c.name, dry.Status, real.Status, real.Header.Get("Idempotent-Replayed"))
			continue
		}
		if real.Status >= 400 && strings.Contains(real.Header.Get("Content-Type"), "problem") {
			if string(dry.Body) != string(real.Body) {
				t.Errorf("%s: dry run %s, start %s", c.name, dry.Body, real.Body)
			}
			continue
		}
		var d, r dryResult
		dry.Decode(t, &d)
		real.Decode(t, &r)
		if d.DryRun == nil || !*d.DryRun || r.DryRun != nil {
			t.Errorf("%s: dry_run %v on the dry run, %v on the start", c.name, d.DryRun, r.DryRun)
		}
		if d.Outcome != r.Outcome || fmt.Sprint(d.Reason) != fmt.Sprint(r.Reason) || stepsOf(d.NextSteps) != stepsOf(r.NextSteps) || d.Message.Title != r.Message.Title {
			t.Errorf("%s: dry run %s\nstart %s", c.name, dry.Body, real.Body)
		}
		switch d.Outcome {
		case "accepted", "blocked":
			if d.Run != nil {
				t.Errorf("%s: a dry run answered a run that does not exist: %+v", c.name, d.Run)
			}
		default:
			if d.Run == nil || d.Run.ID != r.Run.ID {
				t.Errorf("%s: dry run's run %+v, the start's %s", c.name, d.Run, r.Run.ID)
			}
		}
	}
	f.Call(t, "POST", "/api/v1/provider-connections/"+f.connA+"/check?dry_run=yes", f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")

	// A rerun's dry run: the same path, the same answer, nothing recorded.
	fresh := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Rerun"})
	run := f.start(t, contractSurfaces[4], startArgs{conn: fresh}).ExpectStart(t, "accepted").Run.ID
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)
	before := f.recorded(t)
	dry := f.Call(t, "POST", "/api/v1/operations/"+run+"/rerun?dry_run=true", f.owner.Token, nil)
	if after := f.recorded(t); after != before || dry.Status != 202 {
		t.Errorf("a rerun's dry run answered %s and recorded %s, then %s", dry, before, after)
	}
	again := f.Call(t, "POST", "/api/v1/operations/"+run+"/rerun", f.owner.Token, nil).ExpectStart(t, "accepted").Run.ID
	f.Call(t, "POST", "/api/v1/operations/"+again+"/rerun?dry_run=true", f.owner.Token, nil).ExpectProblem(t, 409, "run_active")
}

// availability is a tenant's availability as answered.
type availability struct {
	TenantID string `json:"tenant_id"`
	Items    []struct {
		Surface            string                 `json:"surface"`
		Type               string                 `json:"type"`
		ProviderConnection *apptest.ConnectionRef `json:"provider_connection"`
		Permitted          bool                   `json:"permitted"`
		MissingCapability  *string                `json:"missing_capability"`
		Outcome            *string                `json:"outcome"`
		Reason             *apptest.Reason        `json:"reason"`
		Run                *apptest.Run           `json:"run"`
		NextSteps          []apptest.NextStep     `json:"next_steps"`
	} `json:"items"`
}

// TestAvailabilityIsEachDryRun: every button of the tenant, item by item,
// is what a dry run of that surface answers; a surface the caller may not
// press says which capability is missing; nothing is recorded.
func TestAvailabilityIsEachDryRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.newConnection(t, f.tenantA, f.owner.Token, conn{Consent: "missing", Name: "No consent"})
	f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "nobody", Name: "Nobody runs it"})
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	paths := map[string]string{"tenant_verification": "/verify", "directory_groups_sync": "/directory/groups/sync",
		"role_definitions_sync": "/directory/role-definitions/sync", "connection_check": "/check",
		"inventory_sync": "/inventory-sync", "compliance_snapshot": "/compliance-snapshot"}
	for _, u := range []user{f.owner, f.operator, f.readonly} {
		before := f.recorded(t)
		var a availability
		f.Must(t, 200, "GET", "/api/v1/tenants/"+f.tenantA+"/availability", u.Token, nil, &a)
		if after := f.recorded(t); after != before {
			t.Errorf("availability recorded something: %s, then %s", before, after)
		}
		if a.TenantID != f.tenantA || len(a.Items) != 3+3*3 {
			t.Fatalf("%s: %d items for 3 connections", u.Name, len(a.Items))
		}
		for _, item := range a.Items {
			path := "/api/v1/tenants/" + f.tenantA + paths[item.Surface]
			if strings.HasPrefix(item.Surface, "connection_") || item.Surface == "inventory_sync" || item.Surface == "compliance_snapshot" {
				path = "/api/v1/provider-connections/" + item.ProviderConnection.ID + paths[item.Surface]
			}
			dry := f.Call(t, "POST", path+"?dry_run=true", u.Token, nil)
			if dry.Status == http.StatusForbidden {
				if item.Permitted || item.MissingCapability == nil || item.Outcome != nil {
					t.Errorf("%s %s: the dry run is forbidden, availability says %+v", u.Name, item.Surface, item)
				}
				continue
			}
			var d dryResult
			dry.Decode(t, &d)
			if !item.Permitted || item.Outcome == nil || *item.Outcome != d.Outcome || fmt.Sprint(item.Reason) != fmt.Sprint(d.Reason) ||
				stepsOf(item.NextSteps) != stepsOf(d.NextSteps) || (item.Run == nil) != (d.Run == nil) {
				t.Errorf("%s %s on %v: availability %+v, dry run %s", u.Name, item.Surface, item.ProviderConnection, item, dry.Body)
			}
		}
	}
	f.Call(t, "GET", "/api/v1/tenants/"+f.tenantA+"/availability", f.outsider.Token, nil).ExpectProblem(t, 404, "not_found")
}

type batchAnswer struct {
	Items []struct {
		Status  int              `json:"status"`
		Result  *dryResult       `json:"result"`
		Problem *apptest.Problem `json:"problem"`
	} `json:"items"`
}

// TestBatchStartIsEachStartAlone: 500 starts over 100 scopes in one
// request answer what the same starts one by one answer, with one event
// each; bad items fail alone; a bad envelope records nothing.
func TestBatchStartIsEachStartAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := newFixture(t) // the same starts one by one, on a twin
	var conns, twins []string
	for i := range 100 {
		conns = append(conns, f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Graph %d", i)}))
		twins = append(twins, g.newConnection(t, g.tenantA, g.owner.Token, conn{Name: fmt.Sprintf("Graph %d", i)}))
	}
	surfaces := []string{"inventory_sync", "inventory_sync", "compliance_snapshot", "connection_check", "inventory_sync"}
	var items []map[string]any
	var single []string
	for i := range 500 {
		s := surfaces[i/100]
		items = append(items, map[string]any{"surface": s, "provider_connection_id": conns[i%100]})
		path := map[string]string{"inventory_sync": "/inventory-sync", "compliance_snapshot": "/compliance-snapshot", "connection_check": "/check"}[s]
		r := g.Call(t, "POST", "/api/v1/provider-connections/"+twins[i%100]+path, g.owner.Token, nil)
		var res dryResult
		r.Decode(t, &res)
		single = append(single, fmt.Sprintf("%d %s", r.Status, res.Outcome))
	}
	before := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA)
	var b batchAnswer
	f.Must(t, 200, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": items}, &b)
	if got := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA) - before; got != 500 {
		t.Errorf("the batch recorded %d events, want one per start", got)
	}
	for i, item := range b.Items {
		if item.Result == nil || fmt.Sprintf("%d %s", item.Status, item.Result.Outcome) != single[i] {
			t.Errorf("item %d: %+v, alone: %s", i, item, single[i])
		}
	}

	// Bad items fail alone; the good one beside them is decided.
	var mixed batchAnswer
	f.Must(t, 200, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": []any{
		map[string]any{"surface": "onboarding_verification", "tenant_id": f.tenantA},
		map[string]any{"surface": "inventory_sync"},
		map[string]any{"surface": "inventory_sync", "provider_connection_id": f.connB},
		map[string]any{"surface": "inventory_sync", "provider_connection_id": f.connA, "extra": true},
		map[string]any{"surface": "tenant_verification", "tenant_id": f.tenantC},
	}}, &mixed)
	want := []string{"422 validation_failed", "422 validation_failed", "404 not_found", "400 unknown_field", "422 blocked"}
	for i, item := range mixed.Items {
		got := fmt.Sprint(item.Status)
		if item.Problem != nil {
			got += " " + item.Problem.Code
		} else if item.Result != nil {
			got += " " + item.Result.Outcome
		}
		if got != want[i] {
			t.Errorf("mixed item %d: %s, want %s", i, got, want[i])
		}
	}
	before = f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA)
	for _, bad := range []string{`{}`, `{"items":[]}`, `[]`, `{"items":{}}`, `{"items":[],"x":1}`, `nope`} {
		f.Call(t, "POST", "/api/v1/starts/batch", f.owner.Token, bad).ExpectProblem(t, 422, "validation_failed")
	}
	many := make([]any, 501)
	for i := range many {
		many[i] = map[string]any{"surface": "inventory_sync", "provider_connection_id": f.connA}
	}
	f.Call(t, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": many}).ExpectProblem(t, 422, "validation_failed")
	if after := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA); after != before {
		t.Errorf("bad envelopes recorded %d events", after-before)
	}
	// A dry batch: the second start on a scope is deduped by the first,
	// and nothing is recorded.
	fresh := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Fresh"})
	before = f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA)
	var dry batchAnswer
	f.Must(t, 200, "POST", "/api/v1/starts/batch?dry_run=true", f.owner.Token, map[string]any{"items": []any{
		map[string]any{"surface": "inventory_sync", "provider_connection_id": fresh},
		map[string]any{"surface": "inventory_sync", "provider_connection_id": fresh},
		map[string]any{"surface": "compliance_snapshot", "provider_connection_id": fresh},
	}}, &dry)
	if len(dry.Items) != 3 || dry.Items[0].Status != 202 || dry.Items[1].Status != 200 || dry.Items[2].Status != 409 || !*dry.Items[0].Result.DryRun {
		t.Errorf("dry batch answered %+v", dry.Items)
	}
	if after := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantA); after != before {
		t.Errorf("a dry batch recorded %d events", after-before)
	}
}

// TestBulkCancel: by ids, each answered as if cancelled alone; by filter;
// more than 500 matching runs cancel nothing.
func TestBulkCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var queued []string
	for i := range 3 {
		c := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Graph %d", i)})
		queued = append(queued, f.start(t, contractSurfaces[5], startArgs{conn: c}).ExpectStart(t, "accepted").Run.ID)
	}
	theirs := f.start(t, contractSurfaces[5], startArgs{conn: f.connB, token: f.outsider.Token}).ExpectStart(t, "accepted").Run.ID
	noConsent := f.newConnection(t, f.tenantA, f.owner.Token, conn{Consent: "missing", Name: "No consent"})
	blocked := f.start(t, contractSurfaces[5], startArgs{conn: noConsent}).ExpectStart(t, "blocked").Run.ID
	var out struct {
		Items []struct {
			RunID   string           `json:"run_id"`
			Status  int              `json:"status"`
			Run     *apptest.Run     `json:"run"`
			Problem *apptest.Problem `json:"problem"`
		} `json:"items"`
	}
	f.Must(t, 200, "POST", "/api/v1/operations/cancel", f.operator.Token, map[string]any{"ids": []string{queued[0], theirs, blocked, "nope"}}, &out)
	want := []string{"200 cancelled", "404 not_found", "409 run_not_active", "400 invalid_id"}
	for i, item := range out.Items {
		got := fmt.Sprint(item.Status)
		if item.Problem != nil {
			got += " " + item.Problem.Code
		} else if item.Run != nil {
			got += " " + string(item.Run.Status)
		}
		if got != want[i] {
			t.Errorf("cancel item %d: %s, want %s", i, got, want[i])
		}
	}
	f.Must(t, 200, "POST", "/api/v1/operations/cancel", f.owner.Token, map[string]any{"filter": map[string]any{"tenant_id": f.tenantA, "type": "inventory.sync"}}, &out)
	if len(out.Items) != 2 || out.Items[0].Status != 200 || out.Items[1].Status != 200 {
		t.Errorf("cancel by filter: %+v", out.Items)
	}
	f.Call(t, "POST", "/api/v1/operations/cancel", f.owner.Token, map[string]any{"filter": map[string]any{"tenant_id": f.tenantB}}).ExpectProblem(t, 404, "not_found")
	for _, bad := range []any{map[string]any{}, map[string]any{"ids": []string{}}, map[string]any{"ids": []string{queued[1]}, "filter": map[string]any{"tenant_id": f.tenantA}},
		map[string]any{"filter": map[string]any{"tenant_id": f.tenantA, "status": "succeeded"}}} {
		f.Call(t, "POST", "/api/v1/operations/cancel", f.owner.Token, bad).ExpectProblem(t, 422, "validation_failed")
	}
	// Over 500 matching runs: nothing cancelled.
	var items []map[string]any
	for i := range 501 {
		c := f.newConnection(t, f.tenantC, f.owner.Token, conn{Name: fmt.Sprintf("Bulk %d", i)})
		items = append(items, map[string]any{"surface": "inventory_sync", "provider_connection_id": c})
	}
	var b batchAnswer
	f.Must(t, 200, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": items[:500]}, &b)
	f.Must(t, 200, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": items[500:]}, &b)
	before := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantC)
	f.Call(t, "POST", "/api/v1/operations/cancel", f.owner.Token, map[string]any{"filter": map[string]any{"tenant_id": f.tenantC}}).ExpectProblem(t, 422, "too_many_runs")
	if after := f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, f.tenantC); after != before {
		t.Errorf("too_many_runs cancelled %d runs", after-before)
	}
}
