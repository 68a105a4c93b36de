package eventstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/eventstore"
)

// TestDeferredStatementsKeepOrderAndFailTheCommit: held-back statements
// (Tx.Defer, and the outbox inserts of an append) run before the
// transaction's next statement, in program order, and one that fails
// rolls back the whole transaction, appends and messages included.
func TestDeferredStatementsKeepOrderAndFailTheCommit(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()
	if _, err := pool.Exec(ctx, `CREATE TABLE deferred_log (n INT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}

	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if _, err := tx.AppendPayloads(ctx, "s", eventstore.NoStream, marker{"a"}); err != nil {
			return err
		}
		tx.Defer(`INSERT INTO deferred_log VALUES (1)`)
		tx.Defer(`INSERT INTO deferred_log VALUES (2)`)
		// The next statement sees what was held back before it.
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM deferred_log`).Scan(&n); err != nil {
			return err
		}
		if n != 2 {
			t.Errorf("a statement after two deferred inserts saw %d rows", n)
		}
		if got := countMessagesInTx(t, ctx, tx); got != 1 {
			t.Errorf("the append's message was not written before the next statement: %d", got)
		}
		tx.Defer(`INSERT INTO deferred_log VALUES (3)`)
		return nil // InTx sends the last one before it commits
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, ctx, pool, "deferred_log"); n != 3 {
		t.Errorf("%d deferred rows committed, want 3", n)
	}

	err = store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if _, err := tx.AppendPayloads(ctx, "s", 1, marker{"b"}); err != nil {
			return err
		}
		tx.Defer(`INSERT INTO deferred_log VALUES (1)`) // a duplicate key: fails when sent
		return nil
	})
	if err == nil {
		t.Fatal("a failing deferred statement did not fail the transaction")
	}
	if n := countRows(t, ctx, pool, "events"); n != 1 {
		t.Errorf("%d events after the failed transaction, want only the first", n)
	}
	if n := countRows(t, ctx, pool, "watermill_events"); n != 1 {
		t.Errorf("%d messages after the failed transaction, want only the first", n)
	}
}

// TestDeferredBeforeTheFirstRoundTrip: statements held back before the
// transaction sent anything go with its first round trip, ahead of the
// caller's batch, or with the commit when nothing else is sent.
func TestDeferredBeforeTheFirstRoundTrip(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()
	if _, err := pool.Exec(ctx, `CREATE TABLE deferred_first (n INT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		tx.Defer(`INSERT INTO deferred_first VALUES (1)`)
		var b pgx.Batch
		var n int
		b.Queue(`SELECT count(*) FROM deferred_first`).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		if n != 1 {
			t.Errorf("the caller's batch saw %d rows, not the one held back before it", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		tx.Defer(`INSERT INTO deferred_first VALUES (2)`)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, ctx, pool, "deferred_first"); n != 2 {
		t.Errorf("%d rows committed, want 2", n)
	}
}

func countMessagesInTx(t *testing.T, ctx context.Context, tx *eventstore.Tx) int {
	t.Helper()
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM watermill_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBeforeAckFailureRedeliversTheBatch: an error from BeforeAck rolls
// the batch's transaction back, and the batch is delivered again.
func TestBeforeAckFailureRedeliversTheBatch(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	events, err := store.Append(ctx, "s", eventstore.NoStream, marker{"1"}, marker{"2"}, marker{"3"})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	sub := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{
		ConsumerGroup: "before-ack",
		BeforeAck: func() error {
			if calls.Add(1) == 1 {
				return errors.New("flush failed")
			}
			return nil
		},
	}, 0)
	waitFor(t, deliveryTimeout, "the batch acknowledged after a failed first try", func() bool { return calls.Load() >= 2 })
	for _, e := range events {
		if n := sub.countOf(e.ID); n != 2 {
			t.Errorf("event %s delivered %d times, want twice (the failed batch, then again)", e.ID, n)
		}
	}
	// Acknowledged the second time: a new subscriber of the group gets nothing.
	waitFor(t, deliveryTimeout, "the group's offset committed", func() bool {
		var acked int64
		err := store.Pool().QueryRow(ctx, `SELECT coalesce(max(offset_acked), 0) FROM watermill_offsets_events WHERE consumer_group = 'before-ack'`).Scan(&acked)
		return err == nil && acked == int64(len(events))
	})
	sub.close()
	again := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{ConsumerGroup: "before-ack"}, 0)
	later, err := store.Append(ctx, "s", 3, marker{"4"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deliveryTimeout, "the next event", func() bool { return again.has(later[0].ID) })
	if n := again.len(); n != 1 {
		t.Errorf("the group's next subscriber got %d events, want only the new one", n)
	}
}

// TestNotifierWakesOncePerBurst: commits within the delay wake each
// subscriber once, after the delay.
func TestNotifierWakesOncePerBurst(t *testing.T) {
	store := newStore(t)
	n := eventstore.NewNotifier(store.Pool(), nil, 30*time.Millisecond)
	wake := n.Subscribe()
	start := time.Now()
	for range 5 {
		n.Committed()
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up")
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Errorf("woken after %s, before the delay", waited)
	}
	// The burst is over: no second wake-up is pending.
	select {
	case <-wake:
		t.Error("a burst of commits woke the subscriber twice")
	default:
	}
}
