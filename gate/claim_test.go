package gate_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
)

// TestCompletionRacingTheReaperOrACancel: a completion racing the reaper
// (its lease expired) or an operator's cancel, round after round: exactly
// one of them is recorded, and the completion is told when it lost.
func TestCompletionRacingTheReaperOrACancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph")
	holder := gate.Claimant{ID: "racer", Actor: domain.ActorWorker("racer")}
	for round := range 40 {
		run := f.accept(connStart(f.owner, domain.SurfaceInventorySync, conn.ID)).Run
		// A lease that has expired by the time the racers run.
		claim, err := f.svc.BeginRun(f.ctx, run.ID, "racer", time.Microsecond)
		if err != nil {
			t.Fatal(err)
		}
		var completeErr, otherErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, completeErr = f.svc.Complete(f.ctx, holder, gate.Completion{RunID: run.ID, Epoch: claim.Epoch, Status: domain.StatusSucceeded})
		}()
		go func() {
			defer wg.Done()
			if round%2 == 0 {
				_, otherErr = f.svc.ReapExpired(f.ctx, 10)
			} else {
				_, otherErr = f.svc.CancelRun(f.ctx, apptest.As(f.owner), run.ID)
			}
		}()
		wg.Wait()
		ends := 0
		for _, e := range f.app.RunEvents(run.ID) {
			switch e.Type {
			case "RunSucceeded", "RunFailed", "RunCancelled":
				ends++
			}
		}
		if ends != 1 {
			t.Fatalf("round %d: %d ends recorded, want exactly 1", round, ends)
		}
		succeeded := f.runRow(run.ID).Status == "succeeded"
		switch {
		case succeeded && completeErr != nil:
			t.Fatalf("round %d: the completion was recorded but answered %v", round, completeErr)
		case !succeeded && !errors.Is(completeErr, gate.ErrLeaseLost):
			t.Fatalf("round %d: the completion lost the race but was answered %v", round, completeErr)
		case round%2 == 1 && succeeded && !errors.Is(otherErr, domain.ErrRunNotActive):
			t.Fatalf("round %d: the cancel lost the race but was answered %v", round, otherErr)
		}
	}
}
