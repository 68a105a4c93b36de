package eventstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Writers of a stream serialise on the stream's transaction-scoped
// advisory lock, taken before the transaction's first write: the
// transaction id is assigned at the first write, and readers order by it,
// so a writer that waited for a stream sorts after the writer it waited
// for. Two writers exclude each other only while they compute the lock's
// key the same way, so the key is computed in one place: lockStatement.

// LockMode says whether a lock held by another transaction is waited for.
type LockMode int

const (
	// Wait waits for every lock of the set, one after the other.
	Wait LockMode = iota
	// Try takes only the locks that are free and waits for none, so a
	// transaction that only tries can never be part of a deadlock.
	Try
)

// LockSet names the streams one statement locks.
type LockSet struct {
	source string // a query of (stream, ordinal) rows, locked in ordinal order
	args   []any
}

// Streams is the set of the named streams, locked in the order given.
// Transactions that lock several streams of a kind take them in one agreed
// order (sorted), so that none waits for another in a cycle.
func Streams(names ...string) LockSet {
	return LockSet{source: `SELECT s, i FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i)`, args: []any{names}}
}

// StreamsOf is the set of the distinct streams query lists (its one text
// column), locked in byte order: for a caller that learns the streams in
// the same round trip (the scopes of some runs, say).
func StreamsOf(query string, args ...any) LockSet {
	return LockSet{source: `SELECT s, row_number() OVER (ORDER BY s) FROM (SELECT DISTINCT q.s COLLATE "C" AS s FROM (` +
		query + `) AS q(s)) AS d`, args: args}
}

// Granted says, once the batch that queued the locks was sent, which of
// them the transaction holds, in the set's order.
type Granted struct{ held []bool }

// Held reports whether the i-th lock of the set is held.
func (g *Granted) Held(i int) bool { return i < len(g.held) && g.held[i] }

// QueueLocks queues into b, as one statement, the locks of set's streams.
// A batch runs its statements in order, so the reads queued after the
// locks see every commit made before the locks were granted: lock and
// read what they guard in one round trip.
func QueueLocks(b *pgx.Batch, set LockSet, mode LockMode) *Granted {
	g := &Granted{}
	b.Queue(lockStatement(set.source, mode), set.args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var held bool
			if err := rows.Scan(&held); err != nil {
				return fmt.Errorf("lock streams: %w", err)
			}
			g.held = append(g.held, held)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock streams: %w", err)
		}
		return nil
	})
	return g
}

// lockStatement is the one statement that takes stream locks, one row
// per stream (whether it is held), taken one after the other in the set's
// order: the only place the lock's key is computed.
func lockStatement(source string, mode LockMode) string {
	lock := `pg_advisory_xact_lock(hashtextextended(s, 0)) IS NOT NULL` // void, never null: held once it returns
	if mode == Try {
		lock = `pg_try_advisory_xact_lock(hashtextextended(s, 0))`
	}
	return `SELECT ` + lock + ` FROM (SELECT src.s FROM (` + source + `) AS src(s, i) ORDER BY src.i) AS ordered`
}

// Lock takes stream's transaction lock, waiting for it. Take locks before
// the first write of the transaction (see the top of this file).
func (t *Tx) Lock(ctx context.Context, stream string) error {
	var b pgx.Batch
	QueueLocks(&b, Streams(stream), Wait)
	if err := t.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("lock %s: %w", stream, err)
	}
	return nil
}
