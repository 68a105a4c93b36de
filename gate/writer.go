package gate

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// scopeWriter is one transaction's writes to protected scopes, the steps
// every change of a scope takes:
//
//  1. lock the scopes and load their snapshots, in one round trip with
//     whatever else the decisions read (lockScopes, lockRunScopes);
//  2. decide each command against state (domain.Decide) and record its
//     event (record), which folds it into the scope's state;
//  3. flush: every event recorded, on every scope, in one append; the
//     scopes' snapshots and the runs rows the events change follow in the
//     commit's round trip.
//
// A new run lifecycle event needs the domain (its command, Decide and
// Evolve) and, if it changes a run's status, the switch of runChanges.add;
// nothing here.
type scopeWriter struct {
	tx *eventstore.Tx
	// lease is the first lease of a run started in this transaction.
	lease time.Duration
	// now is the database's clock as of the locks: what deadlines are
	// set from and checked against.
	now    time.Time
	scopes map[domain.ScopeID]*scopeEntry
	// written are the scopes with events to flush, in the order of their
	// first event; events are every event recorded, in order.
	written []domain.ScopeID
	events  []domain.Event
}

// scopeEntry is a scope as the transaction sees it.
type scopeEntry struct {
	state    domain.ScopeState
	version  int64 // the version loaded: the stream's events before this transaction's
	tenantID string
	records  []eventstore.Record
}

func newScopeWriter(tx *eventstore.Tx) *scopeWriter {
	return &scopeWriter{tx: tx, scopes: map[domain.ScopeID]*scopeEntry{}}
}

// lockScopes queues into b the locks of scopes, in the order given, and
// the read of their snapshots as of the locks. With eventstore.Wait the
// scopes must be sorted (every transaction that locks several scopes takes
// them in scope order, so none waits for another in a cycle); with
// eventstore.Try the returned Granted says which locks are held, and only
// those scopes may be recorded on.
func (w *scopeWriter) lockScopes(b *pgx.Batch, scopes []domain.ScopeID, mode eventstore.LockMode) *eventstore.Granted {
	names := make([]string, len(scopes))
	for i, scope := range scopes {
		names[i] = string(scope)
		w.scopes[scope] = &scopeEntry{}
	}
	granted := eventstore.QueueLocks(b, eventstore.Streams(names...), mode)
	queueSnapshots(b, `scope_id = ANY($1::text[])`, names, w.loaded)
	queueNow(b, &w.now)
	return granted
}

// readScopes queues into b the read of scopes' snapshots as committed,
// without their locks: what a dry run decides on.
func (w *scopeWriter) readScopes(b *pgx.Batch, scopes []domain.ScopeID) {
	names := make([]string, len(scopes))
	for i, scope := range scopes {
		names[i] = string(scope)
		w.scopes[scope] = &scopeEntry{}
	}
	queueSnapshots(b, `scope_id = ANY($1::text[])`, names, w.loaded)
	queueNow(b, &w.now)
}

// evolve folds event into scope's state without recording it: the
// decisions of a dry run see those before them.
func (w *scopeWriter) evolve(scope domain.ScopeID, event domain.Event) {
	e := w.scopes[scope]
	if e == nil {
		e = &scopeEntry{}
		w.scopes[scope] = e
	}
	e.state = domain.Evolve(e.state, event)
}

// lockRunScopes queues into b the locks of the scopes of the runs ids
// (waiting, in scope order), the runs' rows and the scopes' snapshots as
// of the locks; rows holds each run found once b was sent. A run never
// changes scope.
func (w *scopeWriter) lockRunScopes(b *pgx.Batch, ids []string) map[string]*runRow {
	rows := map[string]*runRow{}
	eventstore.QueueLocks(b, eventstore.StreamsOf(scopesOfRuns, ids), eventstore.Wait)
	queueRunRows(b, ids, rows)
	queueSnapshots(b, `scope_id IN (`+scopesOfRuns+`)`, ids, w.loaded)
	queueNow(b, &w.now)
	return rows
}

// loaded notes a scope's snapshot.
func (w *scopeWriter) loaded(scope domain.ScopeID, version int64, state domain.ScopeState) {
	w.scopes[scope] = &scopeEntry{state: state, version: version}
}

// state returns a scope's state as of the lock and the events recorded
// on it since.
func (w *scopeWriter) state(scope domain.ScopeID) domain.ScopeState {
	if e := w.scopes[scope]; e != nil {
		return e.state
	}
	return domain.ScopeState{}
}

// record records event on scope with md, after the events recorded on it
// before, and folds it into the scope's state.
func (w *scopeWriter) record(scope domain.ScopeID, event domain.Event, md eventstore.Metadata) {
	e := w.scopes[scope]
	if e == nil {
		e = &scopeEntry{}
		w.scopes[scope] = e
	}
	if len(e.records) == 0 {
		w.written = append(w.written, scope)
	}
	e.records = append(e.records, eventstore.Record{Payload: event, Metadata: md})
	e.tenantID = md.TenantID
	e.state = domain.Evolve(e.state, event)
	w.events = append(w.events, event)
}

// flush holds back every event recorded, as one statement, with
// the scopes' snapshots and the runs rows the events change: all are
// sent in the commit's round trip.
func (w *scopeWriter) flush() error {
	if len(w.written) == 0 {
		return nil
	}
	appends := make([]eventstore.StreamAppend, len(w.written))
	saves := make([]scopeSave, len(w.written))
	for i, scope := range w.written {
		e := w.scopes[scope]
		appends[i] = eventstore.StreamAppend{Stream: string(scope), At: e.version, Records: e.records}
		saves[i] = scopeSave{scope: scope, tenantID: e.tenantID, version: e.version + int64(len(e.records)), state: e.state}
	}
	// Held back with the snapshots and runs rows: written in the commit's
	// round trip, under the scopes' locks.
	if err := w.tx.DeferAppendStreams(appends); err != nil {
		return fmt.Errorf("append %d events on %d scopes from %s: %w", len(w.events), len(appends), w.written[0], err)
	}
	if err := deferScopeSaves(w.tx, saves); err != nil {
		return err
	}
	var changes runChanges
	for _, event := range w.events {
		changes.add(event)
	}
	changes.deferTo(w.tx, w.lease)
	return nil
}
