package api_test

import (
	"testing"
	"time"
)

// TestExplainLifecycle: the explanation of a run lists every step of its
// lifecycle after the decision (claimed, then succeeded, failed or
// cancelled; or cancelled while queued), each with the run's status after
// it, and every answer is one the OpenAPI document describes (the kit
// checks each exchange against it).
func TestExplainLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "jobs", []string{"acme"}, nil)
	inventory := contractSurfaces[5]
	type step struct{ typ, status string }
	// start queues a run on the connection (free again after the previous
	// run ended) and, if claim, has the executor claim it.
	start := func(claim bool) string {
		t.Helper()
		run := f.start(t, inventory, startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
		if claim {
			if got := f.claim(t, ex, 1, 0); len(got) != 1 || got[0].Run.ID != run {
				t.Fatalf("claimed %+v, want run %s", got, run)
			}
		}
		return run
	}
	type explained struct {
		name, run string
		want      []step
	}
	var cases []explained
	run := start(true)
	f.complete(t, ex, run, map[string]any{"epoch": 1, "status": "succeeded", "summary": map[string]any{"groups": 3}}).ExpectStatus(t, 200)
	cases = append(cases, explained{"succeeded", run, []step{{"RunStarted", "running"}, {"RunSucceeded", "succeeded"}}})
	run = start(true)
	f.complete(t, ex, run, map[string]any{"epoch": 1, "status": "failed", "reason_code": "provider.unavailable"}).ExpectStatus(t, 200)
	cases = append(cases, explained{"failed", run, []step{{"RunStarted", "running"}, {"RunFailed", "failed"}}})
	run = start(true)
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)
	cases = append(cases, explained{"cancelled while running", run, []step{{"RunStarted", "running"}, {"RunCancelled", "cancelled"}}})
	run = start(false)
	f.Must(t, 200, "POST", "/api/v1/operations/"+run+"/cancel", f.owner.Token, nil, nil)
	cases = append(cases, explained{"cancelled while queued", run, []step{{"RunCancelled", "cancelled"}}})

	for _, c := range cases {
		var x struct {
			Lifecycle []struct {
				Type     string    `json:"type"`
				Status   string    `json:"status"`
				At       time.Time `json:"at"`
				Position int64     `json:"position"`
				EventID  string    `json:"event_id"`
			} `json:"lifecycle"`
		}
		f.Must(t, 200, "GET", "/api/v1/operations/"+c.run+"/explain", f.auditor.Token, nil, &x)
		if len(x.Lifecycle) != len(c.want) {
			t.Errorf("%s: lifecycle %+v, want %v", c.name, x.Lifecycle, c.want)
			continue
		}
		for i, s := range x.Lifecycle {
			if s.Type != c.want[i].typ || s.Status != c.want[i].status || s.At.IsZero() || s.Position <= 0 || s.EventID == "" {
				t.Errorf("%s: step %d %+v, want %v with its time, position and event", c.name, i, s, c.want[i])
			}
			if i > 0 && s.Position <= x.Lifecycle[i-1].Position {
				t.Errorf("%s: step %d at position %d, after %d", c.name, i, s.Position, x.Lifecycle[i-1].Position)
			}
		}
	}
}
