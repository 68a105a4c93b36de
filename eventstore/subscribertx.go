package eventstore

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"

	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// subscriberDB is the watermill-sql Beginner of the event log's
// subscriptions. Their transactions are store transactions (Tx), which
// cost a batch two round trips where watermill's pgx adapter costs five:
// the BEGIN goes with the first query (the select of the batch), and the
// statements watermill executes (the move of the checkpoints) are held
// back, with those the consumers queued, and sent with the COMMIT. A
// consumer that reads in the transaction (Consumer.Prepare) adds its own
// round trips between the two.
// Statements outside a transaction go through watermill's pgx adapter.
type subscriberDB struct {
	watermillsql.PgxBeginner
	pool *pgxpool.Pool
}

func newSubscriberDB(pool *pgxpool.Pool) subscriberDB {
	return subscriberDB{PgxBeginner: watermillsql.PgxBeginner{Conn: pool}, pool: pool}
}

// BeginTx takes a connection for the transaction; nothing is sent yet.
// Only READ COMMITTED is offered, the isolation of every subscription of
// the event log (eventLog.SubscribeIsolationLevel) and of every Tx.
func (d subscriberDB) BeginTx(ctx context.Context, opts *stdsql.TxOptions) (watermillsql.Tx, error) {
	if opts != nil && opts.Isolation != stdsql.LevelDefault && opts.Isolation != stdsql.LevelReadCommitted {
		return nil, fmt.Errorf("begin subscriber transaction: isolation %v is not offered", opts.Isolation)
	}
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin subscriber transaction: %w", err)
	}
	return &subscriberTx{tx: &Tx{conn: conn}, ctx: ctx}, nil
}

// errBatchFailed is why a subscriber transaction that watermill rolled
// back ended, when nothing of the transaction's own failed.
var errBatchFailed = errors.New("the batch was rolled back")

// subscriberTx is a subscription's transaction, as watermill sees it. Its
// users take turns: watermill reads and ends it, the feed's handler reads
// in it between (Consumer.Prepare), while watermill waits for the
// message's acknowledgement. It never appends (its connection is a
// reader's, and it has no Store).
type subscriberTx struct {
	tx  *Tx
	ctx context.Context
	// failed, if set, is why the transaction can only roll back: its
	// first query failed after watermill took its rows.
	failed error
	// ended, if set, is told how the transaction ended (nil: committed).
	ended func(err error)
}

// QueryContext runs query in the transaction: the first one in a batch
// after the BEGIN.
func (t *subscriberTx) QueryContext(ctx context.Context, query string, args ...any) (watermillsql.Rows, error) {
	if t.tx.tx != nil || t.tx.deferred.Len() > 0 {
		rows, err := t.tx.Query(ctx, query, args...)
		return watermillsql.PgxRows{Rows: rows}, err
	}
	var b pgx.Batch
	b.Queue(query, args...)
	br := t.tx.SendBatch(ctx, &b) // the BEGIN, then query
	if _, err := br.Exec(); err != nil {
		return nil, errors.Join(fmt.Errorf("begin: %w", err), br.Close())
	}
	rows, err := br.Query()
	if err != nil {
		return nil, errors.Join(err, br.Close())
	}
	return &batchRows{Rows: rows, results: br, tx: t}, nil
}

// ExecContext holds query back: it is sent with the COMMIT.
func (t *subscriberTx) ExecContext(_ context.Context, query string, args ...any) (watermillsql.Result, error) {
	t.tx.Defer(query, args...)
	return watermillsql.PgxResult{}, nil
}

// Commit sends what was held back with the COMMIT, in one round trip. A
// transaction whose first query failed is rolled back instead.
func (t *subscriberTx) Commit() error {
	if t.failed != nil {
		return errors.Join(t.failed, t.Rollback())
	}
	if t.tx.tx == nil && t.tx.deferred.Len() == 0 {
		t.end(nil) // nothing was sent
		return nil
	}
	if err := t.tx.commit(t.ctx); err != nil {
		t.failed = fmt.Errorf("commit: %w", err)
		return errors.Join(t.failed, t.Rollback())
	}
	t.end(nil)
	return nil
}

// Rollback ends the transaction without what was held back.
func (t *subscriberTx) Rollback() error {
	if t.tx.conn == nil {
		return nil // ended
	}
	t.tx.rollback(context.WithoutCancel(t.ctx))
	cause := t.failed
	if cause == nil {
		cause = errBatchFailed
	}
	t.end(cause)
	return nil
}

// end gives the connection back (the pool closes one left in a
// transaction) and tells ended.
func (t *subscriberTx) end(err error) {
	if t.tx.conn == nil {
		return
	}
	t.tx.conn.Release()
	t.tx.conn = nil
	if t.ended != nil {
		t.ended(err)
	}
}

// batchRows are the rows of a transaction's first query, sent in a batch
// after the BEGIN. The batch is read to its end as soon as its last row
// was: watermill closes the rows only after it handed every message over,
// and the connection must be free before that, for the handler's reads.
type batchRows struct {
	pgx.Rows
	results pgx.BatchResults
	tx      *subscriberTx
	done    bool
	err     error
}

// Next is the rows' Next; after the last row it ends the batch.
func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.finish()
	return false
}

// Close ends the rows and the batch.
func (r *batchRows) Close() error {
	r.finish()
	return r.err
}

// finish closes the rows and the batch, once. An error (the rows' own
// included, which watermill does not look at) makes the transaction roll
// back.
func (r *batchRows) finish() {
	if r.done {
		return
	}
	r.done = true
	r.Rows.Close()
	r.err = errors.Join(r.Rows.Err(), r.results.Close())
	if r.err != nil && r.tx.failed == nil {
		r.tx.failed = r.err
	}
}
