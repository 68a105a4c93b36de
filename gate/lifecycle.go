package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/tenancy"
)

// runLocation is where a run lives, from the runs table.
type runLocation struct {
	scope    domain.ScopeID
	tenantID string
	surface  string
	typ      string
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
		return nil
	})
}

// onScope runs decide against the current state of the scope of runID, in
// one transaction under the scope's lock, and records its event with by
// as its actor (a started run gets a lease of length lease). It returns
// the event recorded.
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
		if err != nil {
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

// BeginRun records that workerID started a queued run and gives it a lease
// of the given length. It fails with domain.ErrRunAlreadyStarted or
// domain.ErrRunNotActive when another worker began it or it ended (for
// example cancelled while queued): exactly one worker ever begins a run.
func (s *Service) BeginRun(ctx context.Context, runID, workerID string, lease time.Duration) (Claim, error) {
	e, err := s.onScope(ctx, domain.ActorWorker(workerID), runID, lease, func(_ context.Context, _ *eventstore.Tx, _ runLocation, st domain.ScopeState) (domain.Event, error) {
		return domain.Decide(st, domain.MarkStarted{RunID: runID, WorkerID: workerID, At: s.now()}, domain.Facts{})
	})
	if err != nil {
		return Claim{}, err
	}
	return Claim{RunID: runID, Epoch: e.(domain.RunStarted).Epoch}, nil
}

// Heartbeat extends the lease of a claim. ErrLeaseLost means the run was
// reaped, cancelled or finished: the worker must stop and report nothing.
func (s *Service) Heartbeat(ctx context.Context, c Claim, lease time.Duration) error {
	return extendLease(ctx, s.store.Pool(), c.RunID, c.Epoch, lease)
}

func extendLease(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, runID string, epoch int64, lease time.Duration) error {
	var ok bool
	err := db.QueryRow(ctx, `UPDATE runs SET lease_expires_at = clock_timestamp() + $3 * interval '1 microsecond'
		WHERE id = $1 AND epoch = $2 AND status = 'running' RETURNING true`, runID, epoch, lease.Microseconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("heartbeat run %s at epoch %d: %w", runID, epoch, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("heartbeat run %s: %w", runID, err)
	}
	return nil
}

// Succeed records a claim's success on behalf of by; a stale claim is
// rejected with domain.ErrStaleEpoch or domain.ErrRunNotActive and records
// nothing.
func (s *Service) Succeed(ctx context.Context, by domain.Actor, c Claim) error {
	_, err := s.onScope(ctx, by, c.RunID, 0, func(_ context.Context, _ *eventstore.Tx, _ runLocation, st domain.ScopeState) (domain.Event, error) {
		return domain.Decide(st, domain.MarkSucceeded{RunID: c.RunID, Epoch: c.Epoch, At: s.now()}, domain.Facts{})
	})
	return err
}

// Fail records a claim's failure with a reason from the catalog on behalf
// of by; a stale claim is rejected and records nothing.
func (s *Service) Fail(ctx context.Context, by domain.Actor, c Claim, reason domain.ReasonCode) error {
	_, err := s.onScope(ctx, by, c.RunID, 0, func(_ context.Context, _ *eventstore.Tx, _ runLocation, st domain.ScopeState) (domain.Event, error) {
		return domain.Decide(st, domain.MarkFailed{RunID: c.RunID, Epoch: c.Epoch, Reason: reason, At: s.now()}, domain.Facts{})
	})
	return err
}

// ReapExpired ends up to limit running runs whose lease expired as failed
// with execution.lost, freeing their scopes. It returns how many it ended.
func (s *Service) ReapExpired(ctx context.Context, limit int) (int, error) {
	rows, err := s.store.Pool().Query(ctx, `SELECT id, epoch FROM runs
		WHERE status = 'running' AND `+leaseExpired+` ORDER BY lease_expires_at LIMIT $1`, limit)
	if err != nil {
		return 0, fmt.Errorf("find expired leases: %w", err)
	}
	type expired struct {
		id    string
		epoch int64
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (expired, error) {
		var e expired
		return e, r.Scan(&e.id, &e.epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("find expired leases: %w", err)
	}
	n := 0
	for _, e := range list {
		_, err := s.onScope(ctx, domain.ActorSystem("reaper"), e.id, 0, func(ctx context.Context, tx *eventstore.Tx, _ runLocation, st domain.ScopeState) (domain.Event, error) {
			var stillExpired bool
			// FOR UPDATE: a heartbeat committing meanwhile is waited for
			// and seen, and one arriving later waits for this decision.
			err := tx.QueryRow(ctx, `SELECT `+leaseExpired+` FROM runs
				WHERE id = $1 AND epoch = $2 AND status = 'running' FOR UPDATE`,
				e.id, e.epoch).Scan(&stillExpired)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && !stillExpired) {
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
			// finished or renewed meanwhile: nothing to reap
		default:
			return n, fmt.Errorf("reap run %s: %w", e.id, err)
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

// QueuedRuns returns up to limit accepted runs that have been queued for
// longer than olderThan, oldest first, as their StartAccepted events. The
// runs table is the durable queue: a worker sweeps it for runs whose
// acceptance message it never got to (a crash after the message was
// taken, a full local queue).
func (s *Service) QueuedRuns(ctx context.Context, olderThan time.Duration, limit int) ([]domain.StartAccepted, error) {
	rows, err := s.store.Pool().Query(ctx, `SELECT e.event_id, e.event_type, e.schema_version, e.payload FROM runs r
		JOIN events e ON e.metadata ? 'correlation_id' AND e.metadata->>'correlation_id' = r.id AND e.event_type = 'StartAccepted'
		WHERE r.status = 'queued' AND r.created_at < clock_timestamp() - $1 * interval '1 microsecond'
		ORDER BY r.created_at LIMIT $2`, olderThan.Microseconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("find queued runs: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Event, error) {
		var e eventstore.Event
		return e, row.Scan(&e.ID, &e.Type, &e.SchemaVersion, &e.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("find queued runs: %w", err)
	}
	out := make([]domain.StartAccepted, 0, len(events))
	for _, e := range events {
		p, err := s.store.Registry().Decode(e)
		if err != nil {
			return nil, err
		}
		out = append(out, p.(domain.StartAccepted))
	}
	return out, nil
}
