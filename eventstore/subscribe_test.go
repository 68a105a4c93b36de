package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/opsgate/opsgate/eventstore"
)

func TestNewSubscriberNeedsAConsumer(t *testing.T) {
	store := newStore(t)
	if _, err := eventstore.NewSubscriber(store.Pool(), eventstore.SubscriberConfig{}); err == nil {
		t.Fatal("subscriber without a consumer accepted")
	}
}

func TestRollbackPublishesNothing(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()
	errBoom := errors.New("boom")

	var rolledBack []eventstore.Event
	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		events, err := tx.AppendPayloads(ctx, "s", eventstore.NoStream, marker{"rolled back"}, marker{"me too"})
		if err != nil {
			return err
		}
		rolledBack = append(rolledBack, events...)
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx returned %v, want the function's error", err)
	}
	// A failing append later in the transaction rolls back the earlier one.
	err = store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		events, err := tx.AppendPayloads(ctx, "s", eventstore.NoStream, marker{"before failure"})
		if err != nil {
			return err
		}
		rolledBack = append(rolledBack, events...)
		_, err = tx.AppendPayloads(ctx, "s", 1, unregistered{})
		return err
	})
	if !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Fatalf("append of an unregistered type: %v", err)
	}
	// So does a version conflict inside WithStreamLock.
	err = store.WithStreamLock(ctx, "s", func(ctx context.Context, tx *eventstore.Tx) error {
		events, err := tx.AppendPayloads(ctx, "t", eventstore.NoStream, marker{"conflicted"})
		if err != nil {
			return err
		}
		rolledBack = append(rolledBack, events...)
		_, err = tx.AppendPayloads(ctx, "s", 7, marker{"x"})
		return err
	})
	if !errors.Is(err, eventstore.ErrVersionConflict) {
		t.Fatalf("conflicting append: %v", err)
	}
	if len(rolledBack) != 4 {
		t.Fatalf("%d rolled back events recorded, want 4", len(rolledBack))
	}
	if n := countRows(t, ctx, pool, "events"); n != 0 {
		t.Fatalf("%d events after rollback", n)
	}

	sub := subscribe(t, ctx, pool, eventstore.SubscriberConfig{Consumers: []string{"rollback"}}, 0)
	committed, err := store.Append(ctx, "s", eventstore.NoStream, marker{"committed"})
	if err != nil {
		t.Fatal(err)
	}
	// The stream's version 1 is free again after the rollbacks.
	if committed[0].StreamVersion != 1 {
		t.Errorf("committed event has version %d", committed[0].StreamVersion)
	}
	waitFor(t, deliveryTimeout, "committed marker", func() bool { return sub.has(committed[0].ID) })
	for _, e := range rolledBack {
		if sub.has(e.ID) {
			t.Errorf("rolled back event %s was delivered", e.ID)
		}
	}
	if got := ids(sub.all()); !slices.Equal(got, ids(committed)) {
		t.Errorf("delivered %v, want only %v", got, ids(committed))
	}
}

// TestLateCommitIsDelivered: transaction A appends before B (a lower
// position and a lower message offset) but commits after B, which the
// subscriber has already delivered. A must still be delivered, and ReadAll
// paging on from the last position seen before A committed must return it.
//
// Subscribers read in transaction id order below the oldest transaction in
// flight, so B can only be delivered while A is open if B's transaction id
// is lower than A's: B takes its transaction id first, then A appends, then
// B appends and commits.
func TestLateCommitIsDelivered(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	sub := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{Consumers: []string{"late-commit"}}, 0)

	// Something committed first, so the subscriber has a position already.
	before, err := store.Append(ctx, "warmup", eventstore.NoStream, marker{"before"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deliveryTimeout, "warm-up event", func() bool { return sub.has(before[0].ID) })

	bHasTxID := make(chan struct{})
	aAppended := make(chan eventstore.Event, 1)
	releaseA := make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			select {
			case <-bHasTxID:
			case <-ctx.Done():
				return ctx.Err()
			}
			events, err := tx.AppendPayloads(ctx, "stream-a", eventstore.NoStream, marker{"A"})
			if err != nil {
				return err
			}
			aAppended <- events[0]
			select {
			case <-releaseA:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	var a, b eventstore.Event
	err = store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var xid string
		if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
			return err
		}
		close(bHasTxID)
		select {
		case a = <-aAppended:
		case err := <-aDone:
			return fmt.Errorf("transaction A ended early: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		}
		events, err := tx.AppendPayloads(ctx, "stream-b", eventstore.NoStream, marker{"B"})
		if err != nil {
			return err
		}
		b = events[0]
		return nil
	})
	if err != nil {
		t.Fatalf("transaction B: %v", err)
	}
	// The scenario: A reached the store first, B has the lower transaction id.
	if !(a.Position < b.Position && b.TxID < a.TxID) {
		t.Fatalf("A at position %d tx %d, B at position %d tx %d: not a late commit", a.Position, a.TxID, b.Position, b.TxID)
	}

	waitFor(t, deliveryTimeout, "B delivered while A is open", func() bool { return sub.has(b.ID) })
	if sub.has(a.ID) {
		t.Fatal("uncommitted A was delivered")
	}
	seen := readAllAtLeast(t, ctx, store, 10, 2)
	if got, want := ids(seen), []string{before[0].ID, b.ID}; !slices.Equal(got, want) {
		t.Fatalf("ReadAll while A is open: %v, want %v", got, want)
	}
	lastSeen := seen[len(seen)-1].Position

	close(releaseA)
	if err := recv(t, aDone, "transaction A"); err != nil {
		t.Fatalf("transaction A: %v", err)
	}
	waitFor(t, deliveryTimeout, "late A delivered", func() bool { return sub.has(a.ID) })
	if ia, ib := sub.index(a.ID), sub.index(b.ID); ia < ib {
		t.Errorf("A delivered at %d before B at %d", ia, ib)
	}

	// The horizon may lag for a moment after A is delivered: a transaction
	// of another database that ends between the reader's snapshot and its
	// look at pg_stat_activity is taken for one of ours (see opsgate_horizon).
	var after []eventstore.Event
	waitFor(t, deliveryTimeout, "ReadAll to reach A", func() bool {
		after = readAllPaged(t, ctx, store, lastSeen, 10)
		return len(after) > 0
	})
	if got := ids(after); !slices.Equal(got, []string{a.ID}) {
		t.Fatalf("ReadAll after position %d: %v, want A %s", lastSeen, got, a.ID)
	}
	if all := ids(readAllAtLeast(t, ctx, store, 10, 3)); !slices.Equal(all, []string{before[0].ID, b.ID, a.ID}) {
		t.Errorf("ReadAll order %v", all)
	}
}

// TestOpenTransactionHoldsBackLaterCommits: A takes its transaction id first
// and stays open while B commits. Readers hold B back until A is done, then
// deliver A before B.
func TestOpenTransactionHoldsBackLaterCommits(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	sub := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{Consumers: []string{"held-back"}}, 0)

	aAppended := make(chan eventstore.Event, 1)
	releaseA := make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			events, err := tx.AppendPayloads(ctx, "stream-a", eventstore.NoStream, marker{"A"})
			if err != nil {
				return err
			}
			aAppended <- events[0]
			select {
			case <-releaseA:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	a := recv(t, aAppended, "A appended")
	bEvents, err := store.Append(ctx, "stream-b", eventstore.NoStream, marker{"B"})
	if err != nil {
		t.Fatal(err)
	}
	b := bEvents[0]
	if !(a.TxID < b.TxID) {
		t.Fatalf("A tx %d, B tx %d", a.TxID, b.TxID)
	}
	// B is committed but behind A, which is still in flight.
	if got, err := store.ReadAll(ctx, 0, 10); err != nil || len(got) != 0 {
		t.Fatalf("ReadAll while A is open: %v, %v", ids(got), err)
	}

	close(releaseA)
	if err := recv(t, aDone, "transaction A"); err != nil {
		t.Fatalf("transaction A: %v", err)
	}
	waitFor(t, deliveryTimeout, "A and B delivered", func() bool { return sub.hasAll([]string{a.ID, b.ID}) })
	if got := ids(sub.firsts()); !slices.Equal(got, []string{a.ID, b.ID}) {
		t.Errorf("delivery order %v, want A %s then B %s", got, a.ID, b.ID)
	}
	if got := ids(readAllAtLeast(t, ctx, store, 10, 2)); !slices.Equal(got, []string{a.ID, b.ID}) {
		t.Errorf("ReadAll order %v", got)
	}
}

// TestSubscriberResumes closes a subscriber in the middle of the stream and
// starts another one for the same consumer: it carries on where the first
// stopped, without gaps.
func TestSubscriberResumes(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()
	const group = "resume"

	var all []string
	appendN := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i += 5 {
			events, err := store.Append(ctx, fmt.Sprintf("s-%d", i%3), eventstore.AnyVersion,
				itemAdded{Seq: i}, itemAdded{Seq: i + 1}, itemAdded{Seq: i + 2}, itemAdded{Seq: i + 3}, itemAdded{Seq: i + 4})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ids(events)...)
		}
	}
	appendN(0, 300)

	cfg := eventstore.SubscriberConfig{Consumers: []string{group}, BatchSize: 10}
	first := subscribe(t, ctx, pool, cfg, 150)
	waitFor(t, deliveryTimeout, "150 messages to the first subscriber", func() bool { return first.len() == 150 })
	first.close()
	if got := ids(first.all()); !slices.Equal(got, all[:150]) {
		t.Fatalf("first subscriber got %d events, not the first 150 in order", len(got))
	}

	appendN(300, 100)
	second := subscribe(t, ctx, pool, cfg, 0)
	waitFor(t, deliveryTimeout, "all events seen by one of the subscribers", func() bool {
		return second.hasAll(all[150:])
	})
	for _, id := range all[:150] {
		if !first.has(id) && !second.has(id) {
			t.Errorf("event %s never delivered", id)
		}
	}
	// It resumed rather than started over: the first batches were
	// acknowledged long before the first subscriber stopped.
	if second.has(all[0]) {
		t.Error("second subscriber started again from the beginning")
	}
	// And it delivers in order from where it starts.
	firsts := ids(second.firsts())
	start := slices.Index(all, firsts[0])
	if start < 0 || start > 150 || !slices.Equal(firsts, all[start:]) {
		t.Errorf("second subscriber delivered %d events starting at index %d, not in order", len(firsts), start)
	}
	t.Logf("second subscriber started at event %d (%d redelivered)", start, 150-start)

	// A different consumer still reads everything from the start.
	other := subscribe(t, ctx, pool, eventstore.SubscriberConfig{Consumers: []string{"another-group"}}, 0)
	waitFor(t, deliveryTimeout, "the other consumer sees everything", func() bool { return other.hasAll(all) })
	if got := ids(other.firsts()); !slices.Equal(got, all) {
		t.Error("the other consumer was delivered out of order")
	}
}
