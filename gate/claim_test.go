package gate_test

import (
	"errors"
	"fmt"
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

// TestBatchCompletionWithAStaleEpoch: completions recorded together are
// each fenced by their own epoch: a stale one is refused (lease lost) and
// records nothing, the others are recorded, and a repeat in the same
// batch is answered again without a second event.
func TestBatchCompletionWithAStaleEpoch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var claims []gate.Claim
	for i := range 3 {
		c := f.connection(fmt.Sprintf("Graph %d", i))
		run := f.accept(connStart(f.operator, domain.SurfaceInventorySync, c.ID)).Run
		claim, err := f.svc.BeginRun(f.ctx, run.ID, "w", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, claim)
	}
	done := func(c gate.Claim, epoch int64) gate.Completion {
		return gate.Completion{RunID: c.RunID, Epoch: epoch, Status: domain.StatusSucceeded}
	}
	runs, repeated, errs := f.svc.CompleteTogether(f.ctx, gate.Claimant{Actor: worker}, []gate.Completion{
		done(claims[0], claims[0].Epoch),
		done(claims[1], claims[1].Epoch+1), // stale: not the epoch of its claim
		done(claims[2], claims[2].Epoch),
		done(claims[0], claims[0].Epoch), // a repeat within the batch
	})
	for _, i := range []int{0, 2} {
		if errs[i] != nil || runs[i].Status != domain.StatusSucceeded || repeated[i] {
			t.Errorf("completion %d: %+v repeated=%v %v", i, runs[i], repeated[i], errs[i])
		}
	}
	if !errors.Is(errs[1], gate.ErrLeaseLost) {
		t.Errorf("the stale completion: %v, want lease lost", errs[1])
	}
	if errs[3] != nil || !repeated[3] || runs[3].ID != claims[0].RunID {
		t.Errorf("the repeat: %+v repeated=%v %v", runs[3], repeated[3], errs[3])
	}
	if got := f.app.RunStatus(claims[1].RunID); got != domain.StatusRunning {
		t.Errorf("the stale completion's run is %s, want still running", got)
	}
	for i, c := range claims {
		want := 1
		if i == 1 {
			want = 0
		}
		if n := f.count(`SELECT count(*) FROM events WHERE event_type = 'RunSucceeded' AND payload->>'run_id' = $1`, c.RunID); n != want {
			t.Errorf("run %d has %d RunSucceeded events, want %d", i, n, want)
		}
	}
}
