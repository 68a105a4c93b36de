package gate

import (
	"context"
	"errors"
	"fmt"

	json "github.com/segmentio/encoding/json"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
)

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

// completing is a completion on its way to the database, and its answer.
type completing struct {
	ctx  context.Context
	c    Claimant
	done Completion

	run      domain.Run
	repeated bool
	err      error
	ready    chan struct{}
}

func (item *completing) reset() { item.run, item.repeated, item.err = domain.Run{}, false, nil }

func (item *completing) settle(err error) {
	if err != nil && item.err == nil {
		item.run, item.repeated, item.err = domain.Run{}, false, err
	}
	close(item.ready)
}

// Complete records the end of a run claimant c holds at done.Epoch:
// RunSucceeded or RunFailed, with what the run learned about its
// connection's readiness recorded on the connection in the same
// transaction. It returns the run as it ended. Completions of the process
// are recorded in batches (batch.go), each still decided on its own under
// its scope's lock and fenced by its own epoch. Repeating a completion
// already recorded answers the run again with repeated true and records
// nothing; a lease that is gone is a *LeaseLostError (exactly one of a
// completion and a reap or cancel racing it is recorded). c.ID "" does
// not check who holds the run.
func (s *Service) Complete(ctx context.Context, c Claimant, done Completion) (run domain.Run, repeated bool, err error) {
	ctx, span := s.cfg.Tracer.Start(ctx, "gate.complete", trace.WithAttributes(attribute.String("opsgate.run_id", done.RunID),
		attribute.String("opsgate.status", string(done.Status))))
	defer func() { endSpan(span, err, attribute.Bool("opsgate.repeated", repeated)) }()
	item := &completing{ctx: ctx, c: c, done: done, ready: make(chan struct{})}
	if err := s.completions.submit(item); err != nil {
		return domain.Run{}, false, err
	}
	if err := await(ctx, item.ready); err != nil {
		return domain.Run{}, false, err
	}
	return item.run, item.repeated, item.err
}

// completeIn records batch in one transaction of its own.
func (s *Service) completeIn(ctx context.Context, batch []*completing) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		return s.completeAll(ctx, tx, batch)
	})
}

// completeAll decides and records the completions of batch in tx: one
// round trip locks the runs' scopes and reads the runs and the scopes'
// states as of the locks; each completion is then decided on its own; the
// scope writer flushes them. A completion refused on its own (a lost
// lease) gets its error and records nothing.
func (s *Service) completeAll(ctx context.Context, tx *eventstore.Tx, batch []*completing) error {
	ids := make([]string, len(batch))
	for i, item := range batch {
		ids[i] = item.done.RunID
	}
	w := newScopeWriter(tx)
	var b pgx.Batch
	runs := w.lockRunScopes(&b, ids)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("lock the scopes of %d runs: %w", len(ids), err)
	}
	endedHere := map[string]domain.RunEvent{} // runs this batch ended
	for _, item := range batch {
		if item.err = item.ctx.Err(); item.err != nil {
			continue // the caller is gone: record nothing for it
		}
		r, ok := runs[item.done.RunID]
		if !ok {
			item.err = domain.ErrNotFound
			continue
		}
		if e, ok := endedHere[item.done.RunID]; ok {
			// Completed earlier in this batch (a repeat sent at once).
			item.answerRepeat(e, &LeaseLostError{RunID: item.done.RunID, Why: "completed", Cause: domain.ErrRunNotActive})
			continue
		}
		event, end, err := s.completeOne(ctx, tx, item.c, item.done, r, w.state(r.scope))
		switch {
		case err != nil:
			item.err = err
		case event == nil:
			item.run, _ = domain.Ended(end)
			item.repeated = true
		default:
			w.record(r.scope, event, journal.Meta(item.c.Actor, r.tenantID, item.done.RunID))
			endedHere[item.done.RunID] = end
			item.run, _ = domain.Ended(end)
		}
	}
	return w.flush()
}

// answerRepeat answers item, whose run ended with e, as a repeat of the
// completion e records, or with lost.
func (item *completing) answerRepeat(e domain.RunEvent, lost *LeaseLostError) {
	if sameCompletion(e, item.done, lost) {
		item.run, _ = domain.Ended(e)
		item.repeated = true
		return
	}
	item.err = lost
}

// completeOne decides claimant c's completion done of run r, whose scope
// is in state st, in tx: the event to record (with what the run learned
// about its connection recorded on it) and the run's end, or, for a
// repeat, no event and the terminal event already recorded, or a
// *LeaseLostError.
func (s *Service) completeOne(ctx context.Context, tx *eventstore.Tx, c Claimant, done Completion, r *runRow, st domain.ScopeState) (domain.Event, domain.RunEvent, error) {
	if a := st.Active; a != nil && a.RunID == done.RunID && a.Status == domain.StatusRunning && a.Epoch == done.Epoch &&
		c.ID != "" && r.holder != c.ID {
		return nil, nil, &LeaseLostError{RunID: done.RunID, Why: "held by another executor", Cause: domain.ErrStaleEpoch}
	}
	var cmd domain.Command
	switch done.Status {
	case domain.StatusSucceeded:
		cmd = domain.MarkSucceeded{RunID: done.RunID, Epoch: done.Epoch, Summary: done.Summary, At: s.now()}
	case domain.StatusFailed:
		cmd = domain.MarkFailed{RunID: done.RunID, Epoch: done.Epoch, Reason: done.Reason, Summary: done.Summary, At: s.now()}
	default:
		return nil, nil, domain.Invalid("status", "must be succeeded or failed")
	}
	event, err := domain.Decide(st, cmd, domain.Facts{})
	if errors.Is(err, domain.ErrRunNotActive) || errors.Is(err, domain.ErrStaleEpoch) || errors.Is(err, domain.ErrRunNotStarted) {
		lost, terminal, werr := s.whyLost(ctx, c, *r, done.Epoch)
		if werr != nil {
			return nil, nil, werr
		}
		if terminal != nil && sameCompletion(terminal, done, lost) {
			return nil, terminal, nil // answered again, recorded once
		}
		return nil, nil, lost
	}
	if err != nil {
		return nil, nil, err
	}
	learned, verified := domain.Learned(r.typ, done.Status, done.Reason, done.Observations)
	changes, err := s.conns.Learn(ctx, tx, c.Actor, r.connectionID, done.RunID, learned, verified)
	if err != nil {
		return nil, nil, err
	}
	switch e := event.(type) {
	case domain.RunSucceeded:
		e.Changes = changes
		return e, e, nil
	case domain.RunFailed:
		e.Changes = changes
		return e, e, nil
	}
	return nil, nil, fmt.Errorf("complete run %s: unexpected %T", done.RunID, event)
}

// sameCompletion reports whether the terminal event of a run, lost for
// the reason lost gives, records the completion done (a repeat, to
// answer again).
func sameCompletion(terminal domain.RunEvent, done Completion, lost *LeaseLostError) bool {
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
