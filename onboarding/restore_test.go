package onboarding_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/opsgate/opsgate/internal/apptest"
)

// 8. Restore execution over HTTP keeps its destructive safeguards
// (contract section 3) and its history.
func TestRestoreFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 3000, true) // active long enough for the duplicate and busy starts below
	scope := connectionScope(conn)

	var rr struct {
		ID        string   `json:"id"`
		Previewed bool     `json:"previewed"`
		Warnings  []string `json:"warnings"`
	}
	f.h.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/restore-runs", f.owner.Token,
		map[string]any{"name": "Mailbox restore", "items": []any{map[string]any{"name": "mailbox"}}}, &rr)
	execute := func(restoreRunID string, body any) apptest.Reply {
		t.Helper()
		return f.h.Call(t, "POST", "/api/v1/tenants/"+f.tenant+"/restore-runs/"+restoreRunID+"/execute", f.owner.Token, body)
	}
	confirm := map[string]any{"confirm": true}
	nothingRecorded := func(name string, fn func()) {
		t.Helper()
		before, runs := len(f.h.AuditTrail(t, f.tenant, f.owner.Token)), len(f.runStatuses(t, scope))
		fn()
		if after := len(f.h.AuditTrail(t, f.tenant, f.owner.Token)); after != before {
			t.Fatalf("%s: audit events %d -> %d, want nothing recorded", name, before, after)
		}
		if n := len(f.runStatuses(t, scope)); n != runs {
			t.Fatalf("%s: runs %d -> %d, want nothing recorded", name, runs, n)
		}
	}

	// Never previewed: blocked, durably, nothing queued.
	blocked := execute(rr.ID, confirm).ExpectStart(t, "blocked")
	if blocked.Reason.Code != "restore_run.preview_required" || blocked.Reason.Class != "restore_readiness" ||
		blocked.Run.Status != "blocked" || strp(blocked.Run.Target) != rr.ID {
		t.Fatalf("never previewed: %+v", blocked)
	}
	if f.activeOn(t, scope) != 0 || f.runStatus(t, blocked.Run.ID) != "blocked" {
		t.Fatalf("never previewed: runs %v", f.runStatuses(t, scope))
	}

	f.h.Must(t, 200, "POST", "/api/v1/restore-runs/"+rr.ID+"/preview", f.owner.Token, nil, &rr)
	if !rr.Previewed || len(rr.Warnings) != 0 {
		t.Fatalf("preview: %+v, want previewed without warnings", rr)
	}
	nothingRecorded("without confirm", func() {
		execute(rr.ID, nil).ExpectProblem(t, 422, "confirmation_required")
		execute(rr.ID, map[string]any{"confirm": false}).ExpectProblem(t, 422, "confirmation_required")
	})

	first := execute(rr.ID, confirm).ExpectStart(t, "accepted")
	if first.Run.Type != "restore.execute" || strp(first.Run.Target) != rr.ID || first.Run.ProviderConnection == nil ||
		first.Run.ProviderConnection.ID != conn || first.Run.Surface != "restore_execute" {
		t.Fatalf("accepted restore: %+v", first.Run)
	}
	dup := execute(rr.ID, confirm).ExpectStart(t, "deduped")
	if dup.Run.ID != first.Run.ID {
		t.Fatalf("deduped points at %s, want %s", dup.Run.ID, first.Run.ID)
	}
	busy := f.h.Call(t, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", f.owner.Token, nil).ExpectStart(t, "scope_busy")
	if busy.Run.ID != first.Run.ID {
		t.Fatalf("scope_busy points at %s, want the restore %s", busy.Run.ID, first.Run.ID)
	}
	if n := f.activeOn(t, scope); n != 1 {
		t.Fatalf("%d runs active during the restore", n)
	}
	f.simulate(t, conn, 50, nil) // later runs are quick; the running one keeps its latency
	f.waitOperation(t, first.Run.ID, "succeeded", 30*time.Second)
	detail := struct {
		DedupedCount   int `json:"deduped_count"`
		ScopeBusyCount int `json:"scope_busy_count"`
	}{}
	eventually(t, 30*time.Second, "counts of answered starts", func() (bool, string) {
		f.h.Must(t, 200, "GET", "/api/v1/operations/"+first.Run.ID, f.owner.Token, nil, &detail)
		return detail.DedupedCount == 1 && detail.ScopeBusyCount == 1, ""
	})

	// The same restore run executed again after success: a new run.
	second := execute(rr.ID, confirm).ExpectStart(t, "accepted")
	if second.Run.ID == first.Run.ID {
		t.Fatalf("re-execution reused run %s", first.Run.ID)
	}
	f.waitOperation(t, second.Run.ID, "succeeded", 30*time.Second)
	// The history is kept: both runs (and the blocked start) are listed.
	eventually(t, 30*time.Second, "both restore runs listed", func() (bool, string) {
		var page struct {
			Items []apptest.Run `json:"items"`
		}
		f.h.Must(t, 200, "GET", "/api/v1/operations?tenant_id="+f.tenant+"&type=restore.execute&limit=200", f.owner.Token, nil, &page)
		seen := map[string]string{}
		for _, r := range page.Items {
			if r.Type != "restore.execute" {
				t.Fatalf("type filter let through %+v", r)
			}
			seen[r.ID] = string(r.Status)
		}
		return seen[first.Run.ID] == "succeeded" && seen[second.Run.ID] == "succeeded" && seen[blocked.Run.ID] == "blocked",
			fmt.Sprint(seen)
	})

	// A preview with warnings needs them acknowledged.
	var warned struct {
		ID       string   `json:"id"`
		Warnings []string `json:"warnings"`
	}
	f.h.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenant+"/restore-runs", f.owner.Token,
		map[string]any{"name": "Overwrite", "items": []any{map[string]any{"name": "mailbox", "overwrite": true}}}, &warned)
	f.h.Must(t, 200, "POST", "/api/v1/restore-runs/"+warned.ID+"/preview", f.owner.Token, nil, &warned)
	if len(warned.Warnings) == 0 {
		t.Fatalf("preview of an overwrite: no warnings")
	}
	nothingRecorded("warnings not acknowledged", func() {
		execute(warned.ID, confirm).ExpectProblem(t, 422, "warnings_not_acknowledged")
		execute(warned.ID, map[string]any{"confirm": true, "acknowledge_warnings": false}).ExpectProblem(t, 422, "warnings_not_acknowledged")
		execute(warned.ID, map[string]any{"acknowledge_warnings": true}).ExpectProblem(t, 422, "confirmation_required")
	})
	third := execute(warned.ID, map[string]any{"confirm": true, "acknowledge_warnings": true}).ExpectStart(t, "accepted")
	if strp(third.Run.Target) != warned.ID {
		t.Fatalf("third restore: %+v", third.Run)
	}
	f.waitOperation(t, third.Run.ID, "succeeded", 30*time.Second)

	// restore.execute belongs to the owner alone.
	f.h.Call(t, "POST", "/api/v1/tenants/"+f.tenant+"/restore-runs/"+warned.ID+"/execute", f.operator.Token,
		map[string]any{"confirm": true, "acknowledge_warnings": true}).ExpectProblem(t, 403, "forbidden")
}
