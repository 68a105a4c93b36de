package onboarding_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/opsgate/opsgate/internal/apptest"
)

var fourOps = []string{"inventory.sync", "compliance.snapshot", "entra_group_sync", "directory_role_definitions.sync"}

// checkCompleted checks a completed bootstrap of ops: every item succeeded
// in order with its run, the session is completed, and every run is
// succeeded in monitoring, each started after the previous one finished.
func checkCompleted(t *testing.T, f *fixture, s apptest.Session, conn string, ops []string) []apptest.Run {
	t.Helper()
	b := s.Steps.Bootstrap
	if s.Status != "completed" || b.Status != "completed" || len(b.Pending) != 0 || len(b.Items) != len(ops) {
		t.Fatalf("session not completed: %s", s)
	}
	if b.InitiatorID == nil || *b.InitiatorID != f.owner.ID {
		t.Errorf("initiator %s, want the owner %s", strp(b.InitiatorID), f.owner.ID)
	}
	runs := make([]apptest.Run, len(ops))
	for i, it := range b.Items {
		if it.Index != i || it.Type != ops[i] || it.Status != "succeeded" || it.RunID == nil ||
			it.LastRunStatus == nil || *it.LastRunStatus != "succeeded" || it.LastOutcome == nil || *it.LastOutcome != "accepted" {
			t.Fatalf("item %d: %+v", i, it)
		}
		if n := len(it.Attempts); n == 0 || it.Attempts[n-1].RunID != *it.RunID {
			t.Fatalf("item %d: last attempt is not its run: %+v", i, it)
		}
		r := f.waitOperation(t, *it.RunID, "succeeded", 30*time.Second)
		if r.Type != ops[i] || r.Surface != "onboarding_bootstrap" || r.InitiatorID != f.owner.ID ||
			r.ProviderConnection == nil || r.ProviderConnection.ID != conn || r.StartedAt == nil || r.FinishedAt == nil {
			t.Fatalf("item %d: run %+v", i, r)
		}
		runs[i] = r
		t.Logf("item %d %s: created %s, started +%s, finished +%s", i, r.Type, r.CreatedAt.Format("15:04:05.000"),
			r.StartedAt.Sub(r.CreatedAt), r.FinishedAt.Sub(r.CreatedAt))
	}
	for i := 1; i < len(runs); i++ {
		if !runs[i].CreatedAt.After(runs[i-1].CreatedAt) || runs[i].StartedAt.Before(*runs[i-1].FinishedAt) {
			t.Errorf("run %d (created %s, started %s) overlaps run %d (created %s, finished %s)", i,
				runs[i].CreatedAt, runs[i].StartedAt, i-1, runs[i-1].CreatedAt, runs[i-1].FinishedAt)
		}
	}
	return runs
}

// 1. A bootstrap of four operations runs to completion one at a time.
func TestBootstrapRunsOneAtATime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 100, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)
	watch := f.watchScope(t, scope)

	res := f.bootstrap(t, sid, f.owner.Token, fourOps...).ExpectStart(t, "accepted")
	if res.Run.Type != fourOps[0] || res.Run.ProviderConnection == nil || res.Run.ProviderConnection.ID != conn {
		t.Fatalf("first run: %+v", res.Run)
	}
	s := f.session(t, sid)
	b := s.Steps.Bootstrap
	if s.Status != "bootstrapping" || b.Status != "running" || len(b.Items) != 4 ||
		b.Items[0].Status != "admitted" || strp(b.Items[0].RunID) != res.Run.ID || len(b.Pending) != 3 {
		t.Fatalf("after bootstrap: %s", s)
	}
	for _, it := range b.Items[1:] {
		if it.Status != "pending" || it.RunID != nil || len(it.Attempts) != 0 {
			t.Fatalf("follow-up item started early: %+v", it)
		}
	}

	// Poll while it runs: never two active, on the session or the scope.
	polls := 0
	seenAdmitted := map[int]bool{}
	eventually(t, 30*time.Second, "bootstrap completed", func() (bool, string) {
		polls++
		s = f.session(t, sid)
		if n := s.Admitted(); n > 1 {
			t.Fatalf("%d items admitted at once: %s", n, s)
		}
		for i, it := range s.Steps.Bootstrap.Items {
			if it.Status == "admitted" {
				seenAdmitted[i] = true
			}
		}
		if n := f.activeOn(t, scope); n > 1 {
			t.Fatalf("%d runs active on %s at once", n, scope)
		}
		return s.Status == "completed", s.String()
	})
	if most := watch(); most > 1 {
		t.Fatalf("the watcher saw %d runs active on the scope at once", most)
	}
	t.Logf("%d polls; items seen admitted: %v", polls, seenAdmitted)
	checkCompleted(t, f, s, conn, fourOps)
	if st := f.runStatuses(t, scope); len(st) != 4 {
		t.Fatalf("runs on the scope: %v, want the 4 bootstrap runs", st)
	}
}

// 2. A bootstrap interrupted by a failure stays pending with the outcome
// shown, and continue resumes it.
func TestBootstrapFailureThenContinue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 10, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)
	f.simulate(t, conn, 10, "provider.unavailable")

	first := f.bootstrap(t, sid, f.owner.Token, fourOps...).ExpectStart(t, "accepted")
	s := f.waitSession(t, sid, 30*time.Second, "item 1 failed", func(s apptest.Session) bool {
		return s.Status == "attention_needed"
	})
	b := s.Steps.Bootstrap
	it := b.Items[0]
	if b.Status != "waiting" || it.Status != "pending" || strp(it.RunID) != first.Run.ID ||
		strp(it.LastRunStatus) != "failed" || it.LastReason == nil || it.LastReason.Code != "provider.unavailable" ||
		it.LastReason.Class != "provider_unavailable" || len(b.Pending) != 4 {
		t.Fatalf("after the failure: %s", s)
	}
	for _, it := range b.Items[1:] {
		if it.Status != "pending" || it.RunID != nil || len(it.Attempts) != 0 {
			t.Fatalf("item %d was started after a failure: %+v", it.Index, it)
		}
	}
	r := f.waitOperation(t, first.Run.ID, "failed", 30*time.Second)
	if r.Reason == nil || r.Reason.Code != "provider.unavailable" {
		t.Fatalf("failed run: %+v", r)
	}
	// No run was queued for the pending items.
	if st := f.runStatuses(t, scope); len(st) != 1 || st[first.Run.ID] != "failed" {
		t.Fatalf("runs on the scope: %v, want only the failed one", st)
	}

	f.simulate(t, conn, 10, nil)
	watch := f.watchScope(t, scope)
	again := f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	if again.Run.Type != fourOps[0] || again.Run.ID == first.Run.ID {
		t.Fatalf("continue retried %+v, want a new run of %s", again.Run, fourOps[0])
	}
	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool {
		if s.Admitted() > 1 {
			t.Fatalf("two items admitted: %s", s)
		}
		return s.Status == "completed"
	})
	if most := watch(); most > 1 {
		t.Fatalf("%d runs active at once", most)
	}
	checkCompleted(t, f, s, conn, fourOps)
	if got := s.Steps.Bootstrap.Items[0].Attempts; len(got) != 2 || got[0].RunID != first.Run.ID || got[1].RunID != again.Run.ID {
		t.Fatalf("item 1 attempts: %+v", got)
	}
}

// 3. Bootstrap meets a busy scope: nothing hidden is queued, and continue
// admits once the scope is free.
func TestBootstrapScopeBusy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 3000, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)

	inv := f.h.Call(t, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", f.owner.Token, nil).ExpectStart(t, "accepted")
	res := f.bootstrap(t, sid, f.owner.Token, "compliance.snapshot", "inventory.sync").ExpectStart(t, "scope_busy")
	if res.Run.ID != inv.Run.ID {
		t.Fatalf("scope_busy points at %s, want the inventory sync %s", res.Run.ID, inv.Run.ID)
	}
	s := f.session(t, sid)
	b := s.Steps.Bootstrap
	it := b.Items[0]
	if s.Status != "attention_needed" || b.Status != "waiting" || len(b.Items) != 2 || it.Status != "pending" ||
		strp(it.LastOutcome) != "scope_busy" || it.RunID != nil || len(it.Attempts) != 1 || it.Attempts[0].RunID != inv.Run.ID ||
		b.Items[1].Status != "pending" || len(b.Items[1].Attempts) != 0 {
		t.Fatalf("after scope_busy: %s", s)
	}
	// No hidden queued work: only the inventory sync holds the scope.
	st := f.runStatuses(t, scope)
	if len(st) != 1 || f.activeOn(t, scope) != 1 || (st[inv.Run.ID] != "queued" && st[inv.Run.ID] != "running") {
		t.Fatalf("runs on the scope: %v, want only the active inventory sync", st)
	}
	// The answer is on the audit trail: the session's attempt with its outcome.
	found := false
	for _, e := range f.h.AuditTrail(t, f.tenant, f.owner.Token) {
		var d struct {
			Outcome string `json:"outcome"`
			RunID   string `json:"run_id"`
		}
		_ = json.Unmarshal(e.Data, &d)
		if e.Type == "BootstrapItemAttempted" && e.Stream == "onboarding-"+sid && d.Outcome == "scope_busy" && d.RunID == inv.Run.ID {
			found = true
		}
	}
	if !found {
		t.Fatalf("the audit trail does not show the scope_busy attempt")
	}

	f.waitOperation(t, inv.Run.ID, "succeeded", 30*time.Second)
	eventually(t, 30*time.Second, "scope free", func() (bool, string) { return f.activeOn(t, scope) == 0, "" })
	// A busy start is not retried by itself: it waits for continue.
	if s := f.session(t, sid); s.Status != "attention_needed" || s.Steps.Bootstrap.Items[0].RunID != nil {
		t.Fatalf("bootstrap moved without continue: %s", s)
	}
	f.simulate(t, conn, 20, nil)
	again := f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	if again.Run.Type != "compliance.snapshot" {
		t.Fatalf("continue started %s, want compliance.snapshot", again.Run.Type)
	}
	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	checkCompleted(t, f, s, conn, []string{"compliance.snapshot", "inventory.sync"})
}

// 4. A blocked bootstrap: a durable blocked run, the item pending, nothing queued.
func TestBootstrapBlocked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "missing", 10, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)

	res := f.bootstrap(t, sid, f.owner.Token, "inventory.sync", "compliance.snapshot").ExpectStart(t, "blocked")
	if res.Reason.Code != "provider_connection.consent_missing" || res.Reason.Class != "provider_consent" || res.Run.Status != "blocked" {
		t.Fatalf("blocked: %+v", res)
	}
	s := f.session(t, sid)
	it := s.Steps.Bootstrap.Items[0]
	if s.Status != "attention_needed" || it.Status != "pending" || strp(it.LastOutcome) != "blocked" ||
		it.LastReason == nil || it.LastReason.Code != "provider_connection.consent_missing" || it.RunID != nil ||
		len(it.Attempts) != 1 || it.Attempts[0].RunID != res.Run.ID {
		t.Fatalf("after blocked: %s", s)
	}
	if st := f.runStatuses(t, scope); len(st) != 1 || st[res.Run.ID] != "blocked" || f.activeOn(t, scope) != 0 {
		t.Fatalf("runs on the scope: %v, want only the blocked run", st)
	}
	if r := f.operation(t, res.Run.ID); r.Status != "blocked" || r.Reason == nil || r.Reason.Code != "provider_connection.consent_missing" {
		t.Fatalf("blocked run in monitoring: %+v", r)
	}

	// Continue while consent is still missing: blocked again, still nothing queued.
	again := f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "blocked")
	if again.Run.ID == res.Run.ID || f.activeOn(t, scope) != 0 {
		t.Fatalf("second blocked start: %+v", again)
	}
	// Once consent is granted, continue admits and the bootstrap completes.
	f.h.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+conn, f.owner.Token, map[string]any{"consent": "granted"}, nil)
	f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	checkCompleted(t, f, s, conn, []string{"inventory.sync", "compliance.snapshot"})
}

// 5. A server restart in the middle of a bootstrap: the drained process
// and the new one on the same database complete it.
func TestBootstrapSurvivesRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 300, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)
	watch := f.watchScope(t, scope)

	f.bootstrap(t, sid, f.owner.Token, fourOps...).ExpectStart(t, "accepted")
	s := f.waitSession(t, sid, 30*time.Second, "item 2 admitted", func(s apptest.Session) bool {
		return s.Steps.Bootstrap.Items[1].Status == "admitted"
	})
	t.Logf("stopping with item 2's run %s %s", strp(s.Steps.Bootstrap.Items[1].RunID), f.runStatus(t, *s.Steps.Bootstrap.Items[1].RunID))
	f.restart(t, harnessOptions{Grace: 5 * time.Second})

	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed after the restart", func(s apptest.Session) bool {
		if s.Admitted() > 1 {
			t.Fatalf("two items admitted: %s", s)
		}
		return s.Status == "completed"
	})
	if most := watch(); most > 1 {
		t.Fatalf("%d runs active at once", most)
	}
	checkCompleted(t, f, s, conn, fourOps)
	for id, st := range f.runStatuses(t, scope) {
		if st != "succeeded" {
			t.Errorf("run %s is %s", id, st)
		}
	}
}

// 5b. A crash (no drain) in the middle of a bootstrap: the running run is
// ended execution.lost by the next process, the item waits with that
// reason shown, and continue completes the bootstrap.
func TestBootstrapAfterCrash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 0})
	conn := f.connection(t, "Graph", "granted", 2000, true)
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)

	f.bootstrap(t, sid, f.owner.Token, "inventory.sync", "compliance.snapshot", "entra_group_sync").ExpectStart(t, "accepted")
	s := f.waitSession(t, sid, 30*time.Second, "item 2 admitted", func(s apptest.Session) bool {
		return s.Steps.Bootstrap.Items[1].Status == "admitted"
	})
	victim, victimIdx := *s.Steps.Bootstrap.Items[1].RunID, 1
	eventually(t, 30*time.Second, "item 2 running", func() (bool, string) {
		st := f.runStatus(t, victim)
		return st == "running", st
	})
	f.h.Stop() // abandons the running operation to its lease
	if st := f.runStatus(t, victim); st != "running" {
		t.Fatalf("victim run %s is %s after the crash, want running", victim, st)
	}
	f.restart(t, harnessOptions{Grace: 0})

	s = f.waitSession(t, sid, 30*time.Second, "the lost run recorded", func(s apptest.Session) bool {
		return s.Status == "attention_needed"
	})
	it := s.Steps.Bootstrap.Items[victimIdx]
	if it.Status != "pending" || strp(it.LastRunStatus) != "failed" || it.LastReason == nil || it.LastReason.Code != "execution.lost" {
		t.Fatalf("after the crash: %s", s)
	}
	if f.activeOn(t, scope) != 0 {
		t.Fatalf("a run holds the scope after the lost one: %v", f.runStatuses(t, scope))
	}
	f.simulate(t, conn, 10, nil)
	f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	checkCompleted(t, f, s, conn, []string{"inventory.sync", "compliance.snapshot", "entra_group_sync"})
}

// 7. Validation and conflicts answer problems and record nothing.
func TestBootstrapValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 60000, true) // the first run is cancelled
	scope := connectionScope(conn)
	sid := f.newSession(t, conn)
	path := "/api/v1/onboarding-sessions/" + sid + "/bootstrap"

	unchanged := func(t *testing.T, name string, before int, fn func()) {
		t.Helper()
		fn()
		if after := len(f.h.AuditTrail(t, f.tenant, f.owner.Token)); after != before {
			t.Fatalf("%s: audit events %d -> %d, want nothing recorded", name, before, after)
		}
	}
	before := len(f.h.AuditTrail(t, f.tenant, f.owner.Token))
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"unknown type", map[string]any{"operations": []string{"inventory.sync", "tenant.destroy"}}, 400, "unknown_operation_type"},
		{"empty", map[string]any{"operations": []string{}}, 422, "validation_failed"},
		{"missing", map[string]any{}, 422, "validation_failed"},
		{"restore needs a target", map[string]any{"operations": []string{"restore.execute"}}, 422, "validation_failed"},
		{"duplicate", map[string]any{"operations": []string{"inventory.sync", "compliance.snapshot", "inventory.sync"}}, 422, "validation_failed"},
		{"duplicate by canonical name", map[string]any{"operations": []string{"entra_group_sync", "directory.groups.sync"}}, 422, "validation_failed"},
		{"unknown field", map[string]any{"operations": []string{"inventory.sync"}, "force": true}, 400, "unknown_field"},
	}
	for _, c := range cases {
		unchanged(t, c.name, before, func() {
			f.h.Call(t, "POST", path, f.owner.Token, c.body).ExpectProblem(t, c.status, c.code)
		})
	}
	unchanged(t, "continue before bootstrap", before, func() {
		f.continueBootstrap(t, sid, f.owner.Token).ExpectProblem(t, 409, "nothing_to_continue")
	})
	if s := f.session(t, sid); s.Status != "open" || len(s.Steps.Bootstrap.Items) != 0 {
		t.Fatalf("invalid bootstraps changed the session: %s", s)
	}
	if st := f.runStatuses(t, scope); len(st) != 0 {
		t.Fatalf("invalid bootstraps made runs: %v", st)
	}

	first := f.bootstrap(t, sid, f.owner.Token, "inventory.sync", "compliance.snapshot").ExpectStart(t, "accepted")
	eventually(t, 30*time.Second, "first item running", func() (bool, string) {
		st := f.runStatus(t, first.Run.ID)
		return st == "running", st
	})
	before = len(f.h.AuditTrail(t, f.tenant, f.owner.Token))
	unchanged(t, "second bootstrap, same first operation", before, func() {
		f.bootstrap(t, sid, f.owner.Token, "inventory.sync", "compliance.snapshot").ExpectProblem(t, 409, "bootstrap_already_requested")
	})
	unchanged(t, "second bootstrap, other operation", before, func() {
		f.bootstrap(t, sid, f.owner.Token, "compliance.snapshot").ExpectProblem(t, 409, "bootstrap_already_requested")
	})
	unchanged(t, "continue while running", before, func() {
		f.continueBootstrap(t, sid, f.owner.Token).ExpectProblem(t, 409, "bootstrap_in_progress")
	})
	if st := f.runStatuses(t, scope); len(st) != 1 {
		t.Fatalf("conflicting requests made runs: %v", st)
	}

	// Cancel the long first run: the item waits, cancelled, for continue.
	f.simulate(t, conn, 10, nil)
	f.h.Must(t, 200, "POST", "/api/v1/operations/"+first.Run.ID+"/cancel", f.owner.Token, nil, nil)
	s := f.waitSession(t, sid, 30*time.Second, "cancel recorded", func(s apptest.Session) bool { return s.Status == "attention_needed" })
	if it := s.Steps.Bootstrap.Items[0]; it.Status != "pending" || strp(it.LastRunStatus) != "cancelled" || s.Steps.Bootstrap.Items[1].RunID != nil {
		t.Fatalf("after cancel: %s", s)
	}
	f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	s = f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	checkCompleted(t, f, s, conn, []string{"inventory.sync", "compliance.snapshot"})

	eventually(t, 30*time.Second, "scope free", func() (bool, string) { return f.activeOn(t, scope) == 0, "" })
	before = len(f.h.AuditTrail(t, f.tenant, f.owner.Token))
	unchanged(t, "continue when completed", before, func() {
		f.continueBootstrap(t, sid, f.owner.Token).ExpectProblem(t, 409, "nothing_to_continue")
	})
	unchanged(t, "bootstrap when completed", before, func() {
		f.bootstrap(t, sid, f.owner.Token, "entra_group_sync").ExpectProblem(t, 409, "bootstrap_already_requested")
	})
}

// TestBootstrapLimits: a bootstrap's limits are the deadlines of every
// item it admits, the first one and those the process manager starts
// later, and the session shows them.
func TestBootstrapLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 10, true)
	sid := f.newSession(t, conn)
	ops := []string{"inventory.sync", "compliance.snapshot"}
	f.h.Call(t, "POST", "/api/v1/onboarding-sessions/"+sid+"/bootstrap", f.owner.Token,
		map[string]any{"operations": ops, "limits": map[string]any{"queue_ttl_s": 600, "max_duration_s": 900}}).ExpectStart(t, "accepted")
	s := f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	for i, r := range checkCompleted(t, f, s, conn, ops) {
		d := r.Deadlines
		if d == nil || d.FinishBy == nil {
			t.Fatalf("item %d: run without deadlines: %+v", i, r)
		}
		if ttl := d.ClaimBy.Sub(r.CreatedAt); ttl < 599*time.Second || ttl > 601*time.Second {
			t.Errorf("item %d: claim_by %s after creation, want the bootstrap's 600 s", i, ttl)
		}
		if max := d.FinishBy.Sub(*r.StartedAt); max < 899*time.Second || max > 901*time.Second {
			t.Errorf("item %d: finish_by %s after the claim, want the bootstrap's 900 s", i, max)
		}
	}
	var raw struct {
		Steps struct {
			Bootstrap struct {
				Limits map[string]int `json:"limits"`
			} `json:"bootstrap"`
		} `json:"steps"`
	}
	f.h.Must(t, 200, "GET", "/api/v1/onboarding-sessions/"+sid, f.owner.Token, nil, &raw)
	if l := raw.Steps.Bootstrap.Limits; l["queue_ttl_s"] != 600 || l["max_duration_s"] != 900 {
		t.Errorf("the session shows limits %v", l)
	}
}
