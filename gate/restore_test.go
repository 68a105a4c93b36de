package gate_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/restores"
)

// createRestoreRun drafts a restore run on the fixture's tenant as its owner.
func (f *fixture) createRestoreRun(items string) restores.RestoreRun {
	f.t.Helper()
	return f.createRestoreRunOn(f.tenant.ID, items)
}

// createRestoreRunOn drafts a restore run on tenantID; the fixture's owner
// must own that tenant.
func (f *fixture) createRestoreRunOn(tenantID, items string) restores.RestoreRun {
	f.t.Helper()
	r, err := f.app.Restores.Create(f.ctx, apptest.As(f.owner), tenantID, "restore", json.RawMessage(items))
	if err != nil {
		f.t.Fatalf("create restore run: %v", err)
	}
	return r
}

func (f *fixture) previewRestoreRun(id string) restores.RestoreRun {
	f.t.Helper()
	r, err := f.app.Restores.Preview(f.ctx, apptest.As(f.owner), id)
	if err != nil {
		f.t.Fatalf("preview restore run: %v", err)
	}
	return r
}

func restoreStart(actor, tenantID, restoreRunID string, confirm, acknowledge bool) gate.StartRequest {
	req := tenantStart(actor, domain.SurfaceRestoreExecute, tenantID, "")
	req.RestoreRunID, req.Confirm, req.AcknowledgeWarnings = restoreRunID, confirm, acknowledge
	return req
}

func TestRestoreSafeguards(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	scope := domain.ConnectionScope(conn.ID)

	risky := f.createRestoreRun(`[{"name":"mailbox","overwrite":true},{"name":"sharepoint"}]`)
	never := f.createRestoreRun(`[{"name":"mailbox"}]`)

	// Without confirm: refused, nothing recorded, whether previewed or not.
	before := f.eventCount()
	for _, id := range []string{never.ID, risky.ID} {
		if _, err := f.svc.Start(f.ctx, restoreStart(f.owner, f.tenant.ID, id, false, true)); !errors.Is(err, gate.ErrConfirmationRequired) {
			t.Errorf("restore %s without confirm: err = %v, want ErrConfirmationRequired", id, err)
		}
	}
	if after := f.eventCount(); after != before {
		t.Errorf("refused restore recorded %d events", after-before)
	}

	previewed := f.previewRestoreRun(risky.ID)
	if len(previewed.Warnings) != 1 {
		t.Fatalf("preview warnings = %q, want one overwrite warning", previewed.Warnings)
	}

	// Previewed with warnings, confirmed but not acknowledged: refused, nothing recorded.
	before = f.eventCount()
	if _, err := f.svc.Start(f.ctx, restoreStart(f.owner, f.tenant.ID, risky.ID, true, false)); !errors.Is(err, gate.ErrWarningsNotAcknowledged) {
		t.Fatalf("unacknowledged warnings: err = %v, want ErrWarningsNotAcknowledged", err)
	}
	if after := f.eventCount(); after != before {
		t.Errorf("refused restore recorded %d events", after-before)
	}
	if n := f.count(`SELECT count(*) FROM runs`) + f.queuedWork(); n != 0 {
		t.Errorf("refused restores left %d runs or queued work", n)
	}

	// Confirmed and acknowledged: accepted, targeted at the restore run, pinned.
	res := f.accept(restoreStart(f.owner, f.tenant.ID, risky.ID, true, true))
	if res.Run.Target == nil || *res.Run.Target != risky.ID || res.Run.Type != domain.OpRestoreExecute {
		t.Errorf("run = %+v, want restore.execute targeted at %s", res.Run, risky.ID)
	}
	if c := res.Run.ProviderConnection; c == nil || c.ID != conn.ID {
		t.Errorf("pinned %+v, want the default connection", c)
	}

	// The same restore again while it is active: deduped.
	again := f.start(restoreStart(f.owner, f.tenant.ID, risky.ID, true, true))
	if again.Outcome != domain.OutcomeDeduped || again.Run.ID != res.Run.ID {
		t.Errorf("restore again = %s -> %s, want deduped -> %s", again.Outcome, again.Run.ID, res.Run.ID)
	}

	// Another restore run (previewed without warnings, so no acknowledgement
	// needed) and another operation on the connection: scope_busy.
	quiet := f.createRestoreRun(`[{"name":"onedrive"}]`)
	if p := f.previewRestoreRun(quiet.ID); len(p.Warnings) != 0 {
		t.Fatalf("quiet preview warned %q", p.Warnings)
	}
	for name, req := range map[string]gate.StartRequest{
		"other restore run": restoreStart(f.owner, f.tenant.ID, quiet.ID, true, false),
		"inventory sync":    connStart(f.operator, domain.SurfaceInventorySync, conn.ID),
		"groups sync":       tenantStart(f.operator, domain.SurfaceGroupsSync, f.tenant.ID, ""),
	} {
		busy := f.start(req)
		if busy.Outcome != domain.OutcomeScopeBusy || busy.Run.ID != res.Run.ID {
			t.Errorf("%s during the restore = %s -> %s, want scope_busy -> %s", name, busy.Outcome, busy.Run.ID, res.Run.ID)
		}
	}
	want := []string{"StartAccepted", "StartDeduped", "StartScopeBusy", "StartScopeBusy", "StartScopeBusy"}
	if got := types(f.stream(string(scope))); !slices.Equal(got, want) {
		t.Errorf("scope stream = %v, want %v", got, want)
	}
}

func TestRestoreBlockedWithoutPreviewKeepsConnectionFree(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	never := f.createRestoreRun(`[{"name":"mailbox","overwrite":true}]`)

	res := f.start(restoreStart(f.owner, f.tenant.ID, never.ID, true, false))
	if res.Outcome != domain.OutcomeBlocked || res.Reason == nil || res.Reason.Code != domain.ReasonPreviewRequired {
		t.Fatalf("never previewed = %s %+v, want blocked restore_run.preview_required", res.Outcome, res.Reason)
	}
	if res.Run.Target == nil || *res.Run.Target != never.ID {
		t.Errorf("blocked run target = %v, want %s", res.Run.Target, never.ID)
	}
	var href string
	for _, s := range res.NextSteps {
		if s.Href != nil {
			href = *s.Href
		}
	}
	if href != "/api/v1/restore-runs/"+never.ID+"/preview" {
		t.Errorf("next steps = %+v, want a link to the preview", res.NextSteps)
	}
	// After the preview the same request is accepted.
	f.previewRestoreRun(never.ID)
	f.accept(restoreStart(f.owner, f.tenant.ID, never.ID, true, true))
	if got := len(f.stream(string(domain.ConnectionScope(conn.ID)))); got != 2 {
		t.Errorf("scope stream has %d events, want 2", got)
	}
}
