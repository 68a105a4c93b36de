package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	json "github.com/segmentio/encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
)

// Executors take accepted runs by claiming them: the claim is the run's
// RunStarted decision on its scope, with the claimant named in the event,
// a new fencing epoch and a lease. The built-in worker and the external
// executors (over HTTP) claim through the same Claim, hold the same
// leases, heartbeat through Heartbeat and end runs through Complete.

// Claimant is who claims runs: an executor of some providers and,
// when Types is set, of those operation types only.
type Claimant struct {
	// ID names the claimant on the run (RunStarted's worker_id and the runs
	// row): the built-in worker's id, or "executor:<id>".
	ID string
	// Actor is who the events of its claims and completions name.
	Actor     domain.Actor
	Providers []string
	Types     []string // nil: every type
}

// Claimed is a run handed to a claimant.
type Claimed struct {
	Run       domain.Run // as of the claim: running
	Epoch     int64
	ExpiresAt time.Time
	// Connection is the run's pinned connection as it is at the claim
	// (nil for a run without one, or if it is gone).
	Connection *connections.Connection
}

// Claim hands c up to max queued runs of its providers (and types), oldest
// first, each with a lease of length lease. Each run is claimed exactly
// once, however many claimants of however many processes ask at once: a
// run is claimed under its scope's lock, and a scope another transaction
// is deciding on is passed over (its run goes to the next claim). It
// returns no runs when none is waiting.
func (s *Service) Claim(ctx context.Context, c Claimant, max int, lease time.Duration) ([]Claimed, error) {
	if max < 1 || len(c.Providers) == 0 {
		return nil, nil
	}
	// Candidates are read without any lock; the scope's lock decides.
	rows, err := s.store.Pool().Query(ctx, `SELECT id, scope_id FROM runs WHERE status = 'queued' AND provider = ANY($1)
		AND ($2::text[] IS NULL OR type = ANY($2)) ORDER BY created_at, id LIMIT $3`, c.Providers, c.Types, 2*max+1)
	if err != nil {
		return nil, fmt.Errorf("find claimable runs: %w", err)
	}
	candidates, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
		var k candidate
		return k, r.Scan(&k.runID, &k.scope)
	})
	if err != nil {
		return nil, fmt.Errorf("find claimable runs: %w", err)
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	return s.claim(ctx, c, candidates, max, lease, false)
}

type candidate struct {
	runID string
	scope domain.ScopeID
}

// claim starts up to max of the candidate runs for c in one transaction.
// Without wait, the candidates' scopes are locked only when free (try
// locks, none waited for: a claim never waits for another transaction, so
// it cannot be part of a deadlock); with wait, the one candidate's scope is
// waited for.
func (s *Service) claim(ctx context.Context, c Claimant, candidates []candidate, max int, lease time.Duration, wait bool) ([]Claimed, error) {
	var out []Claimed
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		out = nil
		// One round trip: the scopes' locks, then their states as of the locks.
		scopes := make([]string, len(candidates))
		for i, k := range candidates {
			scopes[i] = k.scope.String()
		}
		var b pgx.Batch
		locked := make([]bool, len(candidates))
		if wait {
			eventstore.QueueLock(&b, scopes[0])
			locked[0] = true
		} else {
			b.Queue(`SELECT pg_try_advisory_xact_lock(hashtextextended(s, 0)) FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i) ORDER BY i`, scopes).
				Query(func(rows pgx.Rows) error {
					for i := 0; rows.Next(); i++ {
						if err := rows.Scan(&locked[i]); err != nil {
							return err
						}
					}
					return rows.Err()
				})
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("lock the scopes of claimable runs: %w", err)
		}
		var mine []candidate
		for i, k := range candidates {
			if locked[i] && len(mine) < max {
				mine = append(mine, k)
			}
		}
		if len(mine) == 0 {
			return nil
		}
		// The second: the scopes' states as of the locks.
		facts := map[domain.ScopeID]*scopeFacts{}
		for _, k := range mine {
			facts[k.scope] = &scopeFacts{}
		}
		b = pgx.Batch{}
		queueLoadScopes(&b, facts)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("load the scopes of claimable runs: %w", err)
		}
		var appends []eventstore.StreamAppend
		var saves []scopeSave
		var started []domain.RunStarted
		for _, k := range mine {
			sf := facts[k.scope]
			event, err := domain.Decide(sf.state, domain.MarkStarted{RunID: k.runID, WorkerID: c.ID, At: s.now()}, domain.Facts{})
			if err != nil {
				continue // started by another claimant, or ended, since it was listed
			}
			tenant := sf.state.Active.Start.TenantID
			appends = append(appends, eventstore.StreamAppend{Stream: k.scope.String(), At: sf.version,
				Records: []eventstore.Record{{Payload: event, Metadata: journal.Meta(c.Actor, tenant, k.runID)}}})
			next := domain.Evolve(sf.state, event)
			saves = append(saves, scopeSave{scope: k.scope, tenantID: tenant, version: sf.version + 1, state: next})
			started = append(started, event.(domain.RunStarted))
			out = append(out, Claimed{Run: next.Active.Run(), Epoch: next.Active.Epoch, ExpiresAt: s.now().Add(lease)})
		}
		if len(appends) == 0 {
			return nil
		}
		// The runs' pinned connections as they are now (what the executors
		// run against) are read with the held-back writes.
		b = pgx.Batch{}
		var connIDs []string
		for _, cl := range out {
			if ref := cl.Run.ProviderConnection; ref != nil {
				connIDs = append(connIDs, ref.ID)
			}
		}
		conns := connections.QueueLoadEach(&b, connIDs)
		if _, err := tx.AppendStreams(ctx, appends); err != nil {
			return fmt.Errorf("record claims: %w", err)
		}
		if err := deferScopeSaves(tx, saves); err != nil {
			return err
		}
		deferRunStarts(tx, started, lease)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("read the connections of claimed runs: %w", err)
		}
		for i, cl := range out {
			if ref := cl.Run.ProviderConnection; ref != nil {
				out[i].Connection = conns[ref.ID].C
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// deferRunStarts holds back the update of the runs rows of started runs
// (their holder, epoch and first lease, of length lease), in one
// statement.
func deferRunStarts(tx *eventstore.Tx, started []domain.RunStarted, lease time.Duration) {
	if len(started) == 1 {
		deferMirror(tx, started[0], lease)
		return
	}
	ids, workers, epochs := make([]string, len(started)), make([]string, len(started)), make([]int64, len(started))
	for i, e := range started {
		ids[i], workers[i], epochs[i] = e.RunID, e.WorkerID, e.Epoch
	}
	tx.Defer(`UPDATE runs SET status = 'running', epoch = u.epoch, worker_id = u.worker_id, lease_us = $4::bigint,
			lease_expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond'
		FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, epoch, worker_id) WHERE runs.id = u.id`,
		ids, epochs, workers, lease.Microseconds())
}

// BeginRun claims the queued run runID for the worker workerID with a lease
// of the given length, waiting for its scope if another transaction holds
// it. It fails with domain.ErrRunAlreadyStarted or domain.ErrRunNotActive
// when another worker began it or it ended (for example cancelled while
// queued): exactly one worker ever begins a run.
func (s *Service) BeginRun(ctx context.Context, runID, workerID string, lease time.Duration) (Claim, error) {
	var scope string
	err := s.store.Pool().QueryRow(ctx, `SELECT scope_id FROM runs WHERE id = $1`, runID).Scan(&scope)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, domain.ErrNotFound
	}
	if err != nil {
		return Claim{}, fmt.Errorf("locate run %s: %w", runID, err)
	}
	c := Claimant{ID: workerID, Actor: domain.ActorWorker(workerID)}
	claimed, err := s.claim(ctx, c, []candidate{{runID: runID, scope: domain.ScopeID(scope)}}, 1, lease, true)
	if err != nil {
		return Claim{}, err
	}
	if len(claimed) == 0 {
		// Say why, as the decision would have.
		var status string
		if err := s.store.Pool().QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status); err != nil {
			return Claim{}, fmt.Errorf("locate run %s: %w", runID, err)
		}
		if status == string(domain.StatusRunning) {
			return Claim{}, fmt.Errorf("start run %s: %w", runID, domain.ErrRunAlreadyStarted)
		}
		return Claim{}, fmt.Errorf("run %s: %w", runID, domain.ErrRunNotActive)
	}
	return Claim{RunID: runID, Epoch: claimed[0].Epoch}, nil
}

// LeaseLostError says why a claimant's hold on a run is gone; it matches
// ErrLeaseLost.
type LeaseLostError struct {
	RunID string
	// Why is "reaped" (its lease expired, or its executor was revoked),
	// "cancelled", "completed", "not started" or "held by another executor".
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
	var expires time.Time
	err := s.store.Pool().QueryRow(ctx, `UPDATE runs SET lease_expires_at = clock_timestamp() + $3 * interval '1 microsecond'
		WHERE id = $1 AND epoch = $2 AND status = 'running' AND ($4 = '' OR worker_id = $4) RETURNING lease_expires_at`,
		runID, epoch, lease.Microseconds(), c.ID).Scan(&expires)
	if errors.Is(err, pgx.ErrNoRows) {
		lost, _, err := s.whyLost(ctx, s.store.Pool(), c, runID, epoch)
		if err != nil {
			return time.Time{}, err
		}
		return time.Time{}, lost
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("heartbeat run %s: %w", runID, err)
	}
	return expires.UTC(), nil
}

// Completion is what an executor reports at the end of a run it holds.
type Completion struct {
	RunID string
	Epoch int64
	// Status is succeeded or failed; Reason, for failed, is an execution
	// reason of the catalog.
	Status       domain.RunStatus
	Reason       domain.ReasonCode
	Summary      json.RawMessage
	Observations domain.Observations
}

// sameCompletion reports whether the terminal event of a run records the
// completion done of claimant c (a repeat, to answer again).
func sameCompletion(terminal domain.RunEvent, done Completion, c Claimant, lost *LeaseLostError) bool {
	if lost.Why != "completed" {
		return false
	}
	switch e := terminal.(type) {
	case domain.RunSucceeded:
		return done.Status == domain.StatusSucceeded && e.Epoch == done.Epoch
	case domain.RunFailed:
		return done.Status == domain.StatusFailed && e.Epoch == done.Epoch && e.Reason.Code == done.Reason
	}
	return false
}

// whyLost explains why c's hold on runID at epoch is gone, and returns the
// run's terminal event if it ended; domain.ErrNotFound for no such run.
func (s *Service) whyLost(ctx context.Context, q rowQuerier, c Claimant, runID string, epoch int64) (*LeaseLostError, domain.RunEvent, error) {
	var status, holder string
	var current int64
	err := q.QueryRow(ctx, `SELECT status, epoch, coalesce(worker_id, '') FROM runs WHERE id = $1`, runID).Scan(&status, &current, &holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("look up run %s: %w", runID, err)
	}
	lost := &LeaseLostError{RunID: runID, Cause: domain.ErrRunNotActive}
	switch {
	case status == string(domain.StatusQueued):
		lost.Why, lost.Cause = "not started", domain.ErrRunNotStarted
		return lost, nil, nil
	case status == string(domain.StatusBlocked):
		lost.Why = "not started"
		return lost, nil, nil
	case status == string(domain.StatusRunning):
		lost.Why, lost.Cause = "held by another executor", domain.ErrStaleEpoch
		return lost, nil, nil
	case current != epoch || (c.ID != "" && holder != c.ID):
		lost.Why = "held by another executor"
		return lost, nil, nil
	}
	var typ string
	var version int
	var data []byte
	err = q.QueryRow(ctx, `SELECT event_type, schema_version, payload FROM events
		WHERE metadata->>'correlation_id' = $1
		AND event_type IN ('RunSucceeded', 'RunFailed', 'RunCancelled') ORDER BY position DESC LIMIT 1`, runID).Scan(&typ, &version, &data)
	if err != nil {
		return nil, nil, fmt.Errorf("read the end of run %s: %w", runID, err)
	}
	p, err := s.store.Registry().Decode(eventstore.Event{Type: typ, SchemaVersion: version, Data: data})
	if err != nil {
		return nil, nil, err
	}
	terminal := p.(domain.RunEvent)
	switch e := terminal.(type) {
	case domain.RunCancelled:
		lost.Why = "cancelled"
	case domain.RunFailed:
		if e.Reason.Code == domain.ReasonExecutionLost {
			lost.Why = "reaped"
		} else {
			lost.Why = "completed"
		}
	default:
		lost.Why = "completed"
	}
	return lost, terminal, nil
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
