package gate

// TEMPORARY: removed once the test kit claims through Claim.

import (
	"context"
	"fmt"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// Claim is a worker's hold on a run it started.
type Claim struct {
	RunID string
	Epoch int64
}

// BeginRun claims runID for workerID.
func (s *Service) BeginRun(ctx context.Context, runID, workerID string, lease time.Duration) (Claim, error) {
	for {
		r, err := readRun(ctx, s.store.Pool(), runID)
		if err != nil {
			return Claim{}, err
		}
		switch r.status {
		case domain.StatusRunning:
			return Claim{}, fmt.Errorf("start run %s: %w", runID, domain.ErrRunAlreadyStarted)
		case domain.StatusQueued:
		default:
			return Claim{}, fmt.Errorf("run %s: %w", runID, domain.ErrRunNotActive)
		}
		c := Claimant{ID: workerID, Actor: domain.ActorWorker(workerID)}
		var out []Claimed
		err = s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			out, err = s.claim(ctx, tx, c, []candidate{{runID: runID, scope: r.scope}}, 1, lease)
			return err
		})
		if err != nil {
			return Claim{}, err
		}
		if len(out) == 1 {
			return Claim{RunID: runID, Epoch: out[0].Epoch}, nil
		}
		if err := ctx.Err(); err != nil {
			return Claim{}, err
		}
		time.Sleep(time.Millisecond)
	}
}

// Succeed records a claim's success.
func (s *Service) Succeed(ctx context.Context, by domain.Actor, c Claim) error {
	_, _, err := s.Complete(ctx, Claimant{Actor: by}, Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusSucceeded})
	return err
}

// Fail records a claim's failure.
func (s *Service) Fail(ctx context.Context, by domain.Actor, c Claim, reason domain.ReasonCode) error {
	_, _, err := s.Complete(ctx, Claimant{Actor: by}, Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusFailed, Reason: reason})
	return err
}
