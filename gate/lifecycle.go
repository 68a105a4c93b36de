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

// runLocation is where a run lives, from the runs table.
type runLocation struct {
	scope        domain.ScopeID
	tenantID     string
	surface      string
	typ          string
	connectionID string // "" for a run on its tenant's scope
}

// queueLocateRun queues the read of where runID lives into b; found
// reports whether it exists once b was sent.
func queueLocateRun(b *pgx.Batch, runID string, loc *runLocation, found *bool) {
	b.Queue(`SELECT scope_id, tenant_id, surface, type FROM runs WHERE id = $1`, runID).QueryRow(func(row pgx.Row) error {
		var scope string
		err := row.Scan(&scope, &loc.tenantID, &loc.surface, &loc.typ)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("locate run %s: %w", runID, err)
		}
		loc.scope, *found = domain.ScopeID(scope), true
		loc.connectionID, _ = loc.scope.ConnectionID()
		return nil
	})
}

// onScope runs decide against the current state of the scope of runID, in
// one transaction under the scope's lock, and records its event with by
// as its actor (a started run gets a lease of length lease); a nil event
// records nothing. It returns the event recorded.
func (s *Service) onScope(ctx context.Context, by domain.Actor, runID string, lease time.Duration,
	decide func(ctx context.Context, tx *eventstore.Tx, loc runLocation, state domain.ScopeState) (domain.Event, error)) (domain.Event, error) {
	var event domain.Event
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		// One round trip: where the run lives, the lock of its scope, and
		// the scope's state as of the lock. A run never changes scope.
		var b pgx.Batch
		var loc runLocation
		var found bool
		queueLocateRun(&b, runID, &loc, &found)
		eventstore.QueueLockFrom(&b, `SELECT scope_id FROM runs WHERE id = $1`, runID)
		var state domain.ScopeState
		var version int64
		queueLoadScopeOf(&b, runID, &state, &version)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("lock the scope of run %s: %w", runID, err)
		}
		if !found {
			return domain.ErrNotFound
		}
		var err error
		event, err = decide(ctx, tx, loc, state)
		if err != nil || event == nil {
			return err
		}
		return s.record(ctx, tx, loc.scope, journal.Meta(by, loc.tenantID, runID), state, version, event, lease)
	})
	return event, err
}

// Claim is a worker's hold on a run it started.
type Claim struct {
	RunID string
	Epoch int64
}

// Succeed records a claim's success on behalf of by; a stale claim is
// rejected (ErrLeaseLost) and records nothing.
func (s *Service) Succeed(ctx context.Context, by domain.Actor, c Claim) error {
	_, _, err := s.Complete(ctx, Claimant{Actor: by}, Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusSucceeded})
	return err
}

// Fail records a claim's failure with a reason from the catalog on behalf
// of by; a stale claim is rejected (ErrLeaseLost) and records nothing.
func (s *Service) Fail(ctx context.Context, by domain.Actor, c Claim, reason domain.ReasonCode) error {
	_, _, err := s.Complete(ctx, Claimant{Actor: by}, Completion{RunID: c.RunID, Epoch: c.Epoch, Status: domain.StatusFailed, Reason: reason})
	return err
}

// ReapExpired ends up to limit running runs whose lease expired as failed
// with execution.lost, freeing their scopes. It returns how many it ended.
func (s *Service) ReapExpired(ctx context.Context, limit int) (int, error) {
	return s.endLost(ctx, domain.ActorSystem("reaper"), `SELECT id, epoch FROM runs
		WHERE status = 'running' AND `+leaseExpired+` ORDER BY lease_expires_at LIMIT $1`, limit, leaseExpired)
}

// EndLeasesOf ends, on behalf of by, the runs holder holds (a revoked
// executor's) as failed with execution.lost, as the reaper ends a lost
// worker's, freeing their scopes. It returns how many it ended.
func (s *Service) EndLeasesOf(ctx context.Context, by domain.Actor, holder string) (int, error) {
	return s.endLost(ctx, by, `SELECT id, epoch FROM runs WHERE status = 'running' AND worker_id = $1`, holder, "true")
}

// endLost ends the runs query lists (id, epoch) as lost, each in a
// decision of its own, if the condition still holds of its runs row as
// of its scope's lock.
func (s *Service) endLost(ctx context.Context, by domain.Actor, query string, arg any, condition string) (int, error) {
	rows, err := s.store.Pool().Query(ctx, query, arg)
	if err != nil {
		return 0, fmt.Errorf("find lost runs: %w", err)
	}
	type lost struct {
		id    string
		epoch int64
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lost, error) {
		var e lost
		return e, r.Scan(&e.id, &e.epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("find lost runs: %w", err)
	}
	n := 0
	for _, e := range list {
		_, err := s.onScope(ctx, by, e.id, 0, func(ctx context.Context, tx *eventstore.Tx, _ runLocation, st domain.ScopeState) (domain.Event, error) {
			var still bool
			// FOR UPDATE: a heartbeat committing meanwhile is waited for
			// and seen, and one arriving later waits for this decision.
			err := tx.QueryRow(ctx, `SELECT `+condition+` FROM runs
				WHERE id = $1 AND epoch = $2 AND status = 'running' FOR UPDATE`,
				e.id, e.epoch).Scan(&still)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && !still) {
				return nil, errLeaseRenewed
			}
			if err != nil {
				return nil, err
			}
			return domain.Decide(st, domain.MarkLost{RunID: e.id, Epoch: e.epoch, At: s.now()}, domain.Facts{})
		})
		switch {
		case err == nil:
			n++
		case errors.Is(err, errLeaseRenewed), errors.Is(err, domain.ErrRunNotActive), errors.Is(err, domain.ErrStaleEpoch):
			// finished or renewed meanwhile: nothing to end
		default:
			return n, fmt.Errorf("end lost run %s: %w", e.id, err)
		}
	}
	return n, nil
}

var errLeaseRenewed = errors.New("lease renewed or run ended")

// leaseExpired is true of a runs row whose lease has expired: its expiry
// is past, and a whole lease has passed since the database server
// started. No holder could renew its lease while the server was down, so
// after a restart every lease gets its full length again before it may
// be reaped (migrations/00008_lease_length.sql).
const leaseExpired = `(lease_expires_at < clock_timestamp()
	AND pg_postmaster_start_time() + coalesce(lease_us, 0) * interval '1 microsecond' < clock_timestamp())`

// CancelRun cancels a queued or running run on behalf of by, who needs
// the capability of the surface the run was started from.
func (s *Service) CancelRun(ctx context.Context, by domain.Actor, runID string) (domain.RunCancelled, error) {
	e, err := s.onScope(ctx, by, runID, 0, func(ctx context.Context, tx *eventstore.Tx, loc runLocation, st domain.ScopeState) (domain.Event, error) {
		capability := domain.MustOperation(loc.typ).Capability
		if surface, ok := domain.LookupSurface(loc.surface); ok {
			capability = surface.Capability
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by.ID, loc.tenantID, capability); err != nil {
			return nil, err
		}
		return domain.Decide(st, domain.Cancel{RunID: runID, ActorID: by.ID, At: s.now()}, domain.Facts{})
	})
	if err != nil {
		return domain.RunCancelled{}, err
	}
	return e.(domain.RunCancelled), nil
}

// RunReaper reaps expired leases every interval until ctx ends. Every
// process that serves executors (api) or is one (worker) runs it; the
// reapers of several processes never end a run twice (each end is a
// decision under the run's scope lock). A lease that ran out while the
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
			if err := s.store.Pool().Ping(ctx); err != nil {
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
	}
}
