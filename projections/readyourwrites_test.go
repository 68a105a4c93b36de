package projections_test

import (
	"testing"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// TestReadYourWrites: a client that just got a StartResult, or just
// cancelled a run, reads it back at once: the Reader's catch-up barrier
// waits for the projector, the test does not poll.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)
	tn := f.Tenant(t, f.workspace.ID, "Fabrikam")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	op := f.Member(t, "operator", tn.ID, domain.RoleOperator).ID
	conns := make([]string, 4)
	for i := range conns {
		conns[i] = f.Connection(t, owner, tn.ID, "Graph").ID
	}
	surfaces := []domain.Surface{domain.SurfaceInventorySync, domain.SurfaceComplianceSnapshot, domain.SurfaceConnectionCheck}

	for i := 0; i < 10; i++ {
		conn := conns[i%len(conns)]
		run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(op, surfaces[i%len(surfaces)], conn)).Run
		v := f.getRun(t, run.ID)
		if v.ID != run.ID || v.Status != domain.StatusQueued || v.Type != run.Type || v.ProviderConnection == nil || v.ProviderConnection.ID != conn {
			t.Fatalf("iteration %d: read back %+v right after accept, want queued run %s on %s", i, v, run.ID, conn)
		}
		// The same holds for a deduped start's count.
		f.Expect(t, domain.OutcomeDeduped, apptest.ConnStart(op, surfaces[i%len(surfaces)], conn))
		if v := f.getRun(t, run.ID); v.DedupedCount != 1 {
			t.Fatalf("iteration %d: deduped_count %d right after a dedupe, want 1", i, v.DedupedCount)
		}
		if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), run.ID); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		if v := f.getRun(t, run.ID); v.Status != domain.StatusCancelled || v.Reason == nil || v.Reason.Code != domain.ReasonCancelled {
			t.Fatalf("iteration %d: read back status %s reason %+v right after cancel, want cancelled", i, v.Status, v.Reason)
		}
		notes, _, err := f.Reader.Notifications(f.Ctx, op, nil, "", 1)
		if err != nil {
			t.Fatalf("notifications: %v", err)
		}
		if len(notes) != 1 || notes[0].RunID != run.ID || notes[0].Status != domain.StatusCancelled {
			t.Fatalf("iteration %d: newest notification %+v right after cancel, want the cancellation of %s", i, notes, run.ID)
		}
	}
}
