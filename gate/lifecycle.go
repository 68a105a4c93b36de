package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/tenancy"
)

// LeaseLostError says why a claimant's hold on a run is gone; it matches
// ErrLeaseLost.
type LeaseLostError struct {
	RunID string
	// Why is "reaped" (its lease expired, or its executor was revoked),
	// "timed out" (it ran past its finish_by), "cancelled", "completed",
	// "not started" or "held by another executor".
	Why string
	// Cause is the domain's refusal: domain.ErrRunNotActive,
	// domain.ErrStaleEpoch or domain.ErrRunNotStarted.
	Cause error
}

func (e *LeaseLostError) Error() string {
	return fmt.Sprintf("lease on run %s lost: %s", e.RunID, e.Why)
}

// Is makes errors.Is(err, ErrLeaseLost) true.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// Unwrap returns the domain's refusal.
func (e *LeaseLostError) Unwrap() error { return e.Cause }

// Heartbeat extends claimant c's lease on runID at epoch by lease and
// returns the new expiry. A lease that is gone (the run was reaped,
// cancelled or completed) is a *LeaseLostError: the executor must stop
// and report nothing. c.ID "" does not check who holds the run.
func (s *Service) Heartbeat(ctx context.Context, c Claimant, runID string, epoch int64, lease time.Duration) (time.Time, error) {
	expires, ok, err := extendLease(ctx, s.db, runID, epoch, c.ID, lease)
	if err != nil || ok {
		return expires, err
	}
	r, err := readRun(ctx, s.db, runID)
	if err != nil {
		return time.Time{}, err
	}
	lost, _, err := s.whyLost(ctx, c, r, epoch)
	if err != nil {
		return time.Time{}, err
	}
	return time.Time{}, lost
}

// whyLost explains why c's hold at epoch on run r (as read) is gone, and
// returns the run's terminal event if it ended.
func (s *Service) whyLost(ctx context.Context, c Claimant, r runRow, epoch int64) (*LeaseLostError, domain.RunEvent, error) {
	lost := &LeaseLostError{RunID: r.id, Cause: domain.ErrRunNotActive}
	switch {
	case r.status == domain.StatusQueued:
		lost.Why, lost.Cause = "not started", domain.ErrRunNotStarted
		return lost, nil, nil
	case r.status == domain.StatusBlocked:
		lost.Why = "not started"
		return lost, nil, nil
	case r.status == domain.StatusRunning:
		lost.Why, lost.Cause = "held by another executor", domain.ErrStaleEpoch
		return lost, nil, nil
	case r.epoch != epoch || (c.ID != "" && r.holder != c.ID):
		lost.Why = "held by another executor"
		return lost, nil, nil
	}
	terminal, err := s.end(ctx, r.id)
	if err != nil {
		return nil, nil, err
	}
	switch e := terminal.(type) {
	case domain.RunCancelled:
		lost.Why = "cancelled"
	case domain.RunFailed:
		switch e.Reason.Code {
		case domain.ReasonExecutionLost:
			lost.Why = "reaped"
		case domain.ReasonTimedOut:
			lost.Why = "timed out"
		case domain.ReasonNotPickedUp:
			lost.Why = "not started"
		default:
			lost.Why = "completed"
		}
	default:
		lost.Why = "completed"
	}
	return lost, terminal, nil
}

// end returns the event that ended runID.
func (s *Service) end(ctx context.Context, runID string) (domain.RunEvent, error) {
	e, err := s.store.LastCorrelated(ctx, runID, terminalEvents...)
	if err != nil {
		return nil, fmt.Errorf("read the end of run %s: %w", runID, err)
	}
	p, err := s.store.Registry().Decode(e)
	if err != nil {
		return nil, err
	}
	return p.(domain.RunEvent), nil
}

// terminalEvents are the types of the events that end a run.
var terminalEvents = []string{domain.RunSucceeded{}.EventType(), domain.RunFailed{}.EventType(), domain.RunCancelled{}.EventType()}

// onRun decides, on behalf of by, one command about runID against the
// current state of the run's scope (and the database's clock, now, as of
// its lock), in one transaction under the scope's lock, and records its
// event; decide returning a nil event records nothing. It returns the
// event recorded.
func (s *Service) onRun(ctx context.Context, by domain.Actor, runID string,
	decide func(ctx context.Context, tx *eventstore.Tx, r *runRow, state domain.ScopeState, now time.Time) (domain.Event, error)) (domain.Event, error) {
	var event domain.Event
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		w := newScopeWriter(tx)
		var b pgx.Batch
		runs := w.lockRunScopes(&b, []string{runID})
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("lock the scope of run %s: %w", runID, err)
		}
		r, ok := runs[runID]
		if !ok {
			return domain.ErrNotFound
		}
		var err error
		if event, err = decide(ctx, tx, r, w.state(r.scope), w.now); err != nil || event == nil {
			return err
		}
		w.record(r.scope, event, journal.Meta(by, r.tenantID, runID))
		return w.flush()
	})
	return event, err
}

// CancelRun cancels a queued or running run on behalf of by, who needs
// the capability of the surface the run was started from.
func (s *Service) CancelRun(ctx context.Context, by domain.Actor, runID string) (domain.RunCancelled, error) {
	e, err := s.onRun(ctx, by, runID, func(ctx context.Context, tx *eventstore.Tx, r *runRow, st domain.ScopeState, _ time.Time) (domain.Event, error) {
		capability := domain.MustOperation(r.typ).Capability
		if surface, ok := domain.LookupSurface(r.surface); ok {
			capability = surface.Capability
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by, r.tenantID, capability); err != nil {
			return nil, err
		}
		return domain.Decide(st, domain.Cancel{RunID: runID, ActorID: by.ID, At: s.now()}, domain.Facts{})
	})
	if err != nil {
		return domain.RunCancelled{}, err
	}
	return e.(domain.RunCancelled), nil
}

// ReapExpired ends up to limit running runs whose lease expired as failed
// with execution.lost, freeing their scopes. It returns how many it ended.
func (s *Service) ReapExpired(ctx context.Context, limit int) (int, error) {
	list, err := expiredLeases(ctx, s.db, limit)
	if err != nil {
		return 0, err
	}
	return s.endLost(ctx, domain.ActorSystem("reaper"), list, true)
}

// EndLeasesOf ends, on behalf of by, the runs holder holds (a revoked
// executor's) as failed with execution.lost, as the reaper ends a lost
// worker's, freeing their scopes. It returns how many it ended.
func (s *Service) EndLeasesOf(ctx context.Context, by domain.Actor, holder string) (int, error) {
	list, err := leasesHeldBy(ctx, s.db, holder)
	if err != nil {
		return 0, err
	}
	return s.endLost(ctx, by, list, false)
}

// endLost ends the runs of leases as lost, each in a decision of its own,
// if its lease is still the run's as of the scope's lock (and, with
// expired, still expired: a heartbeat may have renewed it meanwhile).
func (s *Service) endLost(ctx context.Context, by domain.Actor, leases []heldLease, expired bool) (int, error) {
	n := 0
	for _, l := range leases {
		_, err := s.onRun(ctx, by, l.runID, func(ctx context.Context, tx *eventstore.Tx, _ *runRow, st domain.ScopeState, _ time.Time) (domain.Event, error) {
			held, isExpired, err := leaseNow(ctx, tx, l)
			if err != nil {
				return nil, err
			}
			if !held || (expired && !isExpired) {
				return nil, errLeaseRenewed
			}
			return domain.Decide(st, domain.MarkLost{RunID: l.runID, Epoch: l.epoch, At: s.now()}, domain.Facts{})
		})
		switch {
		case err == nil:
			n++
		case errors.Is(err, errLeaseRenewed), errors.Is(err, domain.ErrRunNotActive), errors.Is(err, domain.ErrStaleEpoch):
			// finished or renewed meanwhile: nothing to end
		default:
			return n, fmt.Errorf("end lost run %s: %w", l.runID, err)
		}
	}
	return n, nil
}

var errLeaseRenewed = errors.New("lease renewed or run ended")

// EnforceDeadlines ends up to limit runs past a deadline, each in a
// decision of its own under its scope's lock, judged on the database's
// clock: a queued run past its claim_by fails execution.not_picked_up, a
// running one past its finish_by fails execution.timed_out. A run that
// was claimed, completed or cancelled meanwhile is left as it is, so a
// deadline is enforced once, whichever processes try. It returns how many
// runs it ended.
func (s *Service) EnforceDeadlines(ctx context.Context, limit int) (int, error) {
	due, err := pastDeadline(ctx, s.db, limit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, runID := range due {
		_, err := s.onRun(ctx, domain.ActorSystem("deadlines"), runID, func(_ context.Context, _ *eventstore.Tx, _ *runRow, st domain.ScopeState, now time.Time) (domain.Event, error) {
			if a := st.Active; a != nil && a.RunID == runID && a.Status == domain.StatusRunning {
				return domain.Decide(st, domain.ExpireRun{RunID: runID, Now: now, At: s.now()}, domain.Facts{})
			}
			return domain.Decide(st, domain.ExpireClaim{RunID: runID, Now: now, At: s.now()}, domain.Facts{})
		})
		switch {
		case err == nil:
			n++
		case errors.Is(err, domain.ErrRunNotActive), errors.Is(err, domain.ErrRunAlreadyStarted),
			errors.Is(err, domain.ErrRunNotStarted), errors.Is(err, domain.ErrDeadlineNotReached):
			// claimed, ended or (on another clock) not yet due meanwhile
		default:
			return n, fmt.Errorf("enforce the deadline of run %s: %w", runID, err)
		}
	}
	return n, nil
}

// RunReaper reaps expired leases and enforces deadlines every interval
// until ctx ends. Every process that serves executors (api) or is one
// (worker) runs it; the reapers of several processes never end a run
// twice (each end is a decision under the run's scope lock). A lease that ran out while the
// database was unreachable could not have been renewed: after a failed
// pass the reaper holds off for two intervals of database contact, so
// that executors still alive renew their leases or record their results
// before it judges them lost.
func (s *Service) RunReaper(ctx context.Context, every time.Duration, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var holdUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Now().Before(holdUntil) {
			if err := s.db.Ping(ctx); err != nil {
				holdUntil = time.Now().Add(2 * every)
			}
			continue
		}
		n, err := s.ReapExpired(ctx, 100)
		if err != nil && ctx.Err() == nil {
			logger.Warn("reaping expired leases failed", "err", err)
			holdUntil = time.Now().Add(2 * every)
		}
		if n > 0 {
			logger.Info("ended runs whose executor was lost", "count", n)
		}
		expired, err := s.EnforceDeadlines(ctx, 100)
		if err != nil && ctx.Err() == nil {
			logger.Warn("enforcing run deadlines failed", "err", err)
		}
		if expired > 0 {
			logger.Info("ended runs past a deadline", "count", expired)
		}
		n += expired
		if s.cfg.OnReaperPass != nil {
			s.cfg.OnReaperPass(n)
		}
	}
}
