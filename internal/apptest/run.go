package apptest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

// Worker is the actor of the results tests record.
var Worker = domain.ActorWorker("test")

// Claim is a test's hold on a run it began: what an executor reports
// with.
type Claim struct {
	RunID string
	Epoch int64
}

// beginWait bounds how long BeginRun tries again while the run's scope is
// locked by another transaction.
const beginWait = 30 * time.Second

// BeginRun claims the queued run runID for the worker workerID with a
// lease of the given length, through the executors' public API
// (gate.Service.Claim): it claims the oldest queued run of runID's
// provider and type, which must be runID, and fails the test when it is
// another one (begin runs in the order they were accepted, or give their
// connections distinct providers). When the claim takes no run it says
// why, as a claim of that run would: an error wrapping
// domain.ErrRunAlreadyStarted when the run is running, domain.ErrRunNotActive
// when it ended or was blocked, domain.ErrNotFound when there is no such
// run. A claim passes over a scope another transaction holds, so while the
// run is still queued BeginRun tries again, for up to 30s.
func (a *App) BeginRun(t testing.TB, runID, workerID string, lease time.Duration) (Claim, error) {
	t.Helper()
	var provider *string
	var typ string
	err := a.Pool.QueryRow(a.Ctx, `SELECT provider, type FROM runs WHERE id = $1`, runID).Scan(&provider, &typ)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, fmt.Errorf("run %s: %w", runID, domain.ErrNotFound)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("locate run %s: %w", runID, err)
	}
	if provider == nil {
		// Only blocked runs have no provider: they never run.
		return Claim{}, fmt.Errorf("run %s: %w", runID, domain.ErrRunNotActive)
	}
	c := gate.Claimant{ID: workerID, Actor: domain.ActorWorker(workerID), Providers: []string{*provider}, Types: []string{typ}}
	deadline := time.Now().Add(beginWait)
	for {
		claimed, err := a.Gate.Claim(a.Ctx, c, 1, lease)
		if err != nil {
			return Claim{}, fmt.Errorf("claim run %s: %w", runID, err)
		}
		if len(claimed) > 0 {
			if got := claimed[0].Run.ID; got != runID {
				// Errorf, not Fatalf: BeginRun may be called from a goroutine.
				t.Errorf("BeginRun %s claimed run %s instead: the kit begins the oldest queued run of a provider (%s) and type (%s); "+
					"begin runs in the order they were accepted, or give their connections distinct providers", runID, got, *provider, typ)
				return Claim{}, fmt.Errorf("begin run %s: the claim took run %s", runID, got)
			}
			return Claim{RunID: runID, Epoch: claimed[0].Epoch}, nil
		}
		var status string
		if err := a.Pool.QueryRow(a.Ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status); err != nil {
			return Claim{}, fmt.Errorf("locate run %s: %w", runID, err)
		}
		switch domain.RunStatus(status) {
		case domain.StatusRunning:
			return Claim{}, fmt.Errorf("start run %s: %w", runID, domain.ErrRunAlreadyStarted)
		case domain.StatusQueued:
			// Its scope was locked by another transaction: claims use try-locks.
			if time.Now().After(deadline) {
				return Claim{}, fmt.Errorf("begin run %s: still queued after %v, its scope locked", runID, beginWait)
			}
			time.Sleep(5 * time.Millisecond)
		default:
			return Claim{}, fmt.Errorf("run %s: %w", runID, domain.ErrRunNotActive)
		}
	}
}

// Succeed records, on behalf of by, the success of the run c holds; a
// stale claim is refused (gate.ErrLeaseLost) and records nothing.
func (a *App) Succeed(by domain.Actor, c Claim) error {
	_, _, err := a.Gate.Complete(a.Ctx, gate.Claimant{Actor: by}, gate.Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusSucceeded})
	return err
}

// Fail records, on behalf of by, the failure of the run c holds with a
// reason of the catalog; a stale claim is refused (gate.ErrLeaseLost) and
// records nothing.
func (a *App) Fail(by domain.Actor, c Claim, reason domain.ReasonCode) error {
	_, _, err := a.Gate.Complete(a.Ctx, gate.Claimant{Actor: by}, gate.Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusFailed, Reason: reason})
	return err
}

// Heartbeat extends the lease of the run c holds (whoever holds it) by
// lease; a lease that is gone is gate.ErrLeaseLost.
func (a *App) Heartbeat(c Claim, lease time.Duration) error {
	_, err := a.Gate.Heartbeat(a.Ctx, gate.Claimant{}, c.RunID, c.Epoch, lease)
	return err
}
