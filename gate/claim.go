package gate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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
	// TraceContext is the trace context of the start that created the
	// run (nil: none), for the executor to link its work to.
	TraceContext *domain.TraceContext
}

// Claim hands c up to max queued runs of its providers (and types), oldest
// first, each with a lease of length lease. Each run is claimed exactly
// once, however many claimants of however many processes ask at once: a
// run is claimed under its scope's lock, and a scope another transaction
// is deciding on is passed over (its run goes to the next claim). It
// returns no runs when none is waiting.
func (s *Service) Claim(ctx context.Context, c Claimant, max int, lease time.Duration) (claimed []Claimed, err error) {
	ctx, span := s.cfg.Tracer.Start(ctx, "gate.claim", trace.WithAttributes(attribute.String("opsgate.executor", c.ID)))
	defer func() { endSpan(span, err, attribute.Int("opsgate.claimed", len(claimed))) }()
	if max < 1 || len(c.Providers) == 0 {
		return nil, nil
	}
	// Candidates are read without any lock; the scope's lock decides.
	candidates, err := claimable(ctx, s.db, c.Providers, c.Types, 2*max+1)
	if err != nil || len(candidates) == 0 {
		return nil, err
	}
	var out []Claimed
	err = s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		out, err = s.claim(ctx, tx, c, candidates, max, lease)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

type candidate struct {
	runID string
	scope domain.ScopeID
}

// claim starts up to max of the candidate runs for c in tx. The
// candidates' scopes are locked only when free (try locks, none waited
// for: a claim never waits for another transaction, so it cannot be part
// of a deadlock), in the round trip that reads their snapshots and the
// runs' pinned connections as they are now (what the executor runs
// against).
func (s *Service) claim(ctx context.Context, tx *eventstore.Tx, c Claimant, candidates []candidate, max int, lease time.Duration) ([]Claimed, error) {
	w := newScopeWriter(tx)
	w.lease = lease
	scopes := make([]domain.ScopeID, len(candidates))
	var connIDs []string
	for i, k := range candidates {
		scopes[i] = k.scope
		if id, ok := k.scope.ConnectionID(); ok {
			connIDs = append(connIDs, id)
		}
	}
	var b pgx.Batch
	granted := w.lockScopes(&b, scopes, eventstore.Try)
	conns := connections.QueueLoadEach(&b, connIDs)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("lock the scopes of claimable runs: %w", err)
	}
	var out []Claimed
	for i, k := range candidates {
		if !granted.Held(i) || len(out) == max {
			continue
		}
		state := w.state(k.scope)
		event, err := domain.Decide(state, domain.MarkStarted{RunID: k.runID, WorkerID: c.ID, Now: w.now, At: s.now()}, domain.Facts{})
		if err != nil {
			continue // started by another claimant, or ended, since it was listed
		}
		w.record(k.scope, event, journal.Meta(c.Actor, state.Active.Start.TenantID, k.runID))
		active := w.state(k.scope).Active
		cl := Claimed{Run: active.Run(), Epoch: event.(domain.RunStarted).Epoch, ExpiresAt: s.now().Add(lease), TraceContext: active.Start.TraceContext}
		if ref := cl.Run.ProviderConnection; ref != nil && conns[ref.ID] != nil {
			cl.Connection = conns[ref.ID].C
		}
		out = append(out, cl)
	}
	return out, w.flush()
}
