package gate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	json "github.com/segmentio/encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
)

// Completions are recorded in batches: every completion of a process
// reaches the database through one queue, and a leader records every
// completion waiting at that moment in one transaction (the built-in
// worker's and the HTTP executors' alike), with one statement per kind
// for the whole batch. Each completion is still decided on its own, under
// its scope's lock, against its epoch: a stale one is refused without
// failing the others. A batch whose transaction fails is recorded again
// one completion at a time.

// completionWindow bounds how many completions one transaction records.
const completionWindow = 256

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

// completer is the process's queue of completions.
type completer struct {
	mu      sync.Mutex
	waiting []*completing
	leading bool
}

// Complete records the end of a run claimant c holds at done.Epoch:
// RunSucceeded or RunFailed, with what the run learned about its
// connection's readiness recorded on the connection in the same
// transaction. It returns the run as it ended. Repeating a completion
// already recorded answers the run again with repeated true and records
// nothing; a lease that is gone is a *LeaseLostError (exactly one of a
// completion and a reap or cancel racing it is recorded). c.ID "" does
// not check who holds the run.
func (s *Service) Complete(ctx context.Context, c Claimant, done Completion) (run domain.Run, repeated bool, err error) {
	item := &completing{ctx: ctx, c: c, done: done, ready: make(chan struct{})}
	q := &s.completer
	q.mu.Lock()
	q.waiting = append(q.waiting, item)
	lead := !q.leading
	q.leading = true
	q.mu.Unlock()
	if lead {
		go s.leadCompletions()
	}
	select {
	case <-item.ready:
		return item.run, item.repeated, item.err
	case <-ctx.Done():
		return domain.Run{}, false, ctx.Err()
	}
}

// leadCompletions records the waiting completions, a window at a time,
// until none is left.
func (s *Service) leadCompletions() {
	q := &s.completer
	for {
		q.mu.Lock()
		n := min(len(q.waiting), completionWindow)
		if n == 0 {
			q.leading, q.waiting = false, nil
			q.mu.Unlock()
			return
		}
		batch := q.waiting[:n:n]
		q.waiting = q.waiting[n:]
		q.mu.Unlock()
		s.recordCompletions(batch)
	}
}

// recordCompletions records batch in one transaction, or, if that fails,
// each completion in a transaction of its own.
func (s *Service) recordCompletions(batch []*completing) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.completeIn(ctx, batch)
	if err != nil && len(batch) > 1 && !errors.Is(err, context.DeadlineExceeded) && !eventstore.IsUnavailable(err) {
		for _, item := range batch {
			s.answerCompletions([]*completing{item}, s.completeIn(ctx, []*completing{item}))
		}
		return
	}
	s.answerCompletions(batch, err)
}

func (s *Service) completeIn(ctx context.Context, batch []*completing) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		for _, item := range batch {
			item.run, item.repeated, item.err = domain.Run{}, false, nil
		}
		return s.completeAll(ctx, tx, batch)
	})
}

func (s *Service) answerCompletions(batch []*completing, err error) {
	for _, item := range batch {
		if err != nil && item.err == nil {
			item.run, item.repeated, item.err = domain.Run{}, false, err
		}
		close(item.ready)
	}
}

// heldRun is a run as a completion finds it: where it lives and who holds it.
type heldRun struct {
	runLocation
	holder string
}

// completeAll decides and records the completions of batch in tx. One
// round trip takes the locks of the runs' scopes (in scope order, as
// every transaction that locks several scopes does) and reads the runs
// and the scopes' states as of the locks; each completion is then decided
// on its own; one statement appends every event, and the scopes'
// snapshots and the runs rows follow, a statement each, in the commit's
// round trip. A completion refused on its own (a lost lease) gets its
// error and records nothing.
func (s *Service) completeAll(ctx context.Context, tx *eventstore.Tx, batch []*completing) error {
	ids := make([]string, 0, len(batch))
	for _, item := range batch {
		ids = append(ids, item.done.RunID)
	}
	runs := map[string]heldRun{}
	scopes := map[domain.ScopeID]*scopeFacts{}
	var b pgx.Batch
	b.Queue(`SELECT count(pg_advisory_xact_lock(hashtextextended(scope_id, 0))) FROM (
		SELECT DISTINCT scope_id COLLATE "C" AS scope_id FROM runs WHERE id = ANY($1::text[]) ORDER BY 1) AS ordered`, ids)
	b.Queue(`SELECT id, scope_id, tenant_id, surface, type, coalesce(worker_id, '') FROM runs WHERE id = ANY($1::text[])`, ids).
		Query(func(rows pgx.Rows) error {
			var id, scope string
			var r heldRun
			_, err := pgx.ForEachRow(rows, []any{&id, &scope, &r.tenantID, &r.surface, &r.typ, &r.holder}, func() error {
				r.scope = domain.ScopeID(scope)
				r.connectionID, _ = r.scope.ConnectionID()
				runs[id] = r
				scopes[r.scope] = &scopeFacts{}
				return nil
			})
			if err != nil {
				return fmt.Errorf("locate runs: %w", err)
			}
			return nil
		})
	b.Queue(`SELECT scope_id, version, state FROM scopes WHERE scope_id IN (SELECT scope_id FROM runs WHERE id = ANY($1::text[]))`, ids).
		Query(func(rows pgx.Rows) error {
			var id string
			var version int64
			var raw []byte
			_, err := pgx.ForEachRow(rows, []any{&id, &version, &raw}, func() error {
				sf := &scopeFacts{version: version}
				if err := json.Unmarshal(raw, &sf.state); err != nil {
					return fmt.Errorf("decode scope %s: %w", id, err)
				}
				scopes[domain.ScopeID(id)] = sf
				return nil
			})
			if err != nil {
				return fmt.Errorf("load scopes: %w", err)
			}
			return nil
		})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("lock the scopes of %d runs: %w", len(ids), err)
	}

	type recorded struct {
		recs    []eventstore.Record
		version int64
		tenant  string
	}
	byScope := map[domain.ScopeID]*recorded{}
	var order []domain.ScopeID
	var ended []domain.Event
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
			lost := &LeaseLostError{RunID: item.done.RunID, Why: "completed", Cause: domain.ErrRunNotActive}
			if sameCompletion(e, item.done, item.c, lost) {
				item.run, _ = domain.Ended(e)
				item.repeated = true
			} else {
				item.err = lost
			}
			continue
		}
		sf := scopes[r.scope]
		event, end, repeated, err := s.completeOne(ctx, tx, item.c, item.done, r, sf.state)
		switch {
		case err != nil:
			item.err = err
			continue
		case repeated:
			item.run, _ = domain.Ended(end)
			item.repeated = true
			continue
		}
		rec := byScope[r.scope]
		if rec == nil {
			rec = &recorded{version: sf.version, tenant: r.tenantID}
			byScope[r.scope] = rec
			order = append(order, r.scope)
		}
		rec.recs = append(rec.recs, eventstore.Record{Payload: event, Metadata: journal.Meta(item.c.Actor, r.tenantID, item.done.RunID)})
		sf.state = domain.Evolve(sf.state, event)
		ended = append(ended, event)
		endedHere[item.done.RunID] = end
		item.run, _ = domain.Ended(end)
	}
	if len(order) == 0 {
		return nil
	}
	appends := make([]eventstore.StreamAppend, 0, len(order))
	saves := make([]scopeSave, 0, len(order))
	for _, scope := range order {
		rec := byScope[scope]
		appends = append(appends, eventstore.StreamAppend{Stream: scope.String(), At: rec.version, Records: rec.recs})
		saves = append(saves, scopeSave{scope: scope, tenantID: rec.tenant, version: rec.version + int64(len(rec.recs)), state: scopes[scope].state})
	}
	if _, err := tx.AppendStreams(ctx, appends); err != nil {
		return fmt.Errorf("record %d completions: %w", len(ended), err)
	}
	if err := deferScopeSaves(tx, saves); err != nil {
		return err
	}
	deferRunEnds(tx, ended)
	return nil
}

// completeOne decides claimant c's completion done of run r, whose scope
// is in state st, in tx: the event to record (with what the run learned
// about its connection recorded on it), or the terminal event already
// recorded for a repeat, or a *LeaseLostError.
func (s *Service) completeOne(ctx context.Context, tx *eventstore.Tx, c Claimant, done Completion, r heldRun, st domain.ScopeState) (event domain.Event, end domain.RunEvent, repeated bool, err error) {
	if a := st.Active; a != nil && a.RunID == done.RunID && a.Status == domain.StatusRunning && a.Epoch == done.Epoch &&
		c.ID != "" && r.holder != c.ID {
		return nil, nil, false, &LeaseLostError{RunID: done.RunID, Why: "held by another executor", Cause: domain.ErrStaleEpoch}
	}
	var cmd domain.Command
	switch done.Status {
	case domain.StatusSucceeded:
		cmd = domain.MarkSucceeded{RunID: done.RunID, Epoch: done.Epoch, Summary: done.Summary, At: s.now()}
	case domain.StatusFailed:
		cmd = domain.MarkFailed{RunID: done.RunID, Epoch: done.Epoch, Reason: done.Reason, Summary: done.Summary, At: s.now()}
	default:
		return nil, nil, false, domain.Invalid("status", "must be succeeded or failed")
	}
	event, err = domain.Decide(st, cmd, domain.Facts{})
	if errors.Is(err, domain.ErrRunNotActive) || errors.Is(err, domain.ErrStaleEpoch) || errors.Is(err, domain.ErrRunNotStarted) {
		lost, terminal, werr := s.whyLost(ctx, tx, c, done.RunID, done.Epoch)
		if werr != nil {
			return nil, nil, false, werr
		}
		if terminal != nil && sameCompletion(terminal, done, c, lost) {
			return nil, terminal, true, nil // answered again, recorded once
		}
		return nil, nil, false, lost
	}
	if err != nil {
		return nil, nil, false, err
	}
	learned, verified := domain.Learned(r.typ, done.Status, done.Reason, done.Observations)
	changes, err := s.conns.Learn(ctx, tx, c.Actor, r.connectionID, done.RunID, learned, verified)
	if err != nil {
		return nil, nil, false, err
	}
	switch e := event.(type) {
	case domain.RunSucceeded:
		e.Changes = changes
		return e, e, false, nil
	case domain.RunFailed:
		e.Changes = changes
		return e, e, false, nil
	}
	return nil, nil, false, fmt.Errorf("complete run %s: unexpected %T", done.RunID, event)
}

// deferRunEnds holds back the update of the runs rows of ended runs, in
// one statement.
func deferRunEnds(tx *eventstore.Tx, ended []domain.Event) {
	if len(ended) == 1 {
		deferMirror(tx, ended[0], 0)
		return
	}
	ids, statuses := make([]string, 0, len(ended)), make([]string, 0, len(ended))
	for _, event := range ended {
		switch e := event.(type) {
		case domain.RunSucceeded:
			ids, statuses = append(ids, e.RunID), append(statuses, string(domain.StatusSucceeded))
		case domain.RunFailed:
			ids, statuses = append(ids, e.RunID), append(statuses, string(domain.StatusFailed))
		}
	}
	tx.Defer(`UPDATE runs SET status = u.status, lease_expires_at = NULL
		FROM unnest($1::text[], $2::text[]) AS u(id, status) WHERE runs.id = u.id`, ids, statuses)
}
