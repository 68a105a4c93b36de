package eventstore_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/faultproxy"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// TestDeferredStatementsKeepOrderAndFailTheCommit: held-back statements
// (Tx.Defer) run before the transaction's next statement, in program
// order, and one that fails rolls back the whole transaction, appends
// included.
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
		Consumers: []string{"before-ack"},
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
	// Acknowledged the second time: a new subscriber for the consumer gets nothing.
	waitFor(t, deliveryTimeout, "the consumer's checkpoint committed", func() bool {
		var at int64
		err := store.Pool().QueryRow(ctx, `SELECT position FROM feed_checkpoints WHERE consumer = 'before-ack'`).Scan(&at)
		return err == nil && at == events[len(events)-1].Position
	})
	sub.close()
	again := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{Consumers: []string{"before-ack"}}, 0)
	later, err := store.Append(ctx, "s", 3, marker{"4"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deliveryTimeout, "the next event", func() bool { return again.has(later[0].ID) })
	if n := again.len(); n != 1 {
		t.Errorf("the consumer's next subscriber got %d events, want only the new one", n)
	}
}

// TestNotifierWakesOncePerBurst: commits within the delay wake each
// subscriber once, after the delay.
func TestNotifierWakesOncePerBurst(t *testing.T) {
	store := newStore(t)
	n := eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{Delay: 30 * time.Millisecond})
	wake := n.Subscribe()
	start := time.Now()
	for range 5 {
		n.Committed([]string{eventstore.TopicEvents})
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

// TestNotifierWakesAtMostEveryInterval: under a steady stream of commits
// a subscriber is woken once a burst's delay has passed, and then not
// again within Every of that wake-up, however many commits follow; the
// commits meanwhile share the next wake-up.
func TestNotifierWakesAtMostEveryInterval(t *testing.T) {
	store := newStore(t)
	const every = 300 * time.Millisecond
	n := eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{Delay: 5 * time.Millisecond, Every: every})
	wake := n.Subscribe()
	await := func(what string) time.Time {
		t.Helper()
		select {
		case <-wake:
			return time.Now()
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up %s", what)
		}
		return time.Time{}
	}
	// The first wake-up comes the delay after the commit at the earliest:
	// receiving it may come later still, so the interval is counted from
	// here.
	first := time.Now().Add(5 * time.Millisecond)
	n.Committed([]string{eventstore.TopicEvents})
	await("after the first commit")
	// Commits go on right after the wake-up: the next one waits for the
	// interval, and they all share it.
	for range 20 {
		n.Committed([]string{eventstore.TopicEvents})
	}
	second := await("after the commits that followed")
	if gap := second.Sub(first); gap < every {
		t.Errorf("woken again %s after the last wake-up, within the interval of %s", gap, every)
	}
	select {
	case <-wake:
		t.Error("the commits within the interval woke the subscriber more than once")
	default:
	}
}

// TestNotifierPacesSubscribersAtOnce: a subscriber at once is woken by a
// commit at once, and by commits that follow within AtOnceEvery only once
// that interval has passed.
func TestNotifierPacesSubscribersAtOnce(t *testing.T) {
	store := newStore(t)
	const every = 300 * time.Millisecond
	n := eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{Delay: time.Hour, AtOnceEvery: every})
	atOnce := n.SubscribeAtOnce()
	first := time.Now() // no later than the wake-up the commit makes
	n.Committed([]string{eventstore.TopicEvents})
	select {
	case <-atOnce:
	default:
		t.Fatal("the first commit did not wake the subscriber at once")
	}
	n.Committed([]string{eventstore.TopicEvents})
	n.Committed([]string{eventstore.TopicEvents})
	select {
	case <-atOnce:
		t.Fatal("commits right after a wake-up woke the subscriber at once again")
	default:
	}
	select {
	case <-atOnce:
		if gap := time.Since(first); gap < every {
			t.Errorf("woken again %s after the first wake-up, within the interval of %s", gap, every)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the commits within the interval never woke the subscriber")
	}
}

// TestNotifierWakesAtOnceTopicsWithoutTheDelay: an announcement wakes
// the subscribers of its topics named AtOnce at once; those of its other
// topics, and those of every commit, still wait for the delay.
func TestNotifierWakesAtOnceTopicsWithoutTheDelay(t *testing.T) {
	store := newStore(t)
	n := eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{Delay: time.Hour})
	n.AtOnce("changes")
	changes, every, other := n.Next("changes"), n.Subscribe(), n.Next("other")
	n.Committed([]string{"changes", "other"})
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter on an at-once topic was not woken")
	}
	select {
	case <-every:
		t.Error("an announcement within the hour's delay woke the subscriber of every commit")
	case <-other:
		t.Error("a topic not named AtOnce was woken before the delay")
	default:
	}
}

// TestNotifierSubscribeAtOnce: a subscriber at once is woken by each
// commit of events without the delay, and not again when the burst's
// delay is over; announcements of at-once topics alone do not wake it.
func TestNotifierSubscribeAtOnce(t *testing.T) {
	store := newStore(t)
	n := eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{Delay: 30 * time.Millisecond})
	n.AtOnce("changes")
	atOnce, every := n.SubscribeAtOnce(), n.Subscribe()
	for i := range 2 {
		n.Committed([]string{eventstore.TopicEvents})
		select {
		case <-atOnce:
		default:
			t.Fatalf("commit %d did not wake the subscriber at once", i+1)
		}
	}
	select {
	case <-every:
	case <-time.After(5 * time.Second):
		t.Fatal("the burst did not wake the subscriber of every commit")
	}
	n.Committed([]string{"changes"})
	select {
	case <-atOnce:
		t.Error("the subscriber at once was woken again: by the end of the burst, or by an announcement of changes")
	default:
	}
}

// twoProcesses runs two notifiers on store's database, as two processes
// would, until the test ends.
func twoProcesses(t *testing.T, ctx context.Context, store *eventstore.Store) (here, there *eventstore.Notifier) {
	here = eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{})
	there = eventstore.NewNotifier(store.Pool(), nil, eventstore.WakeTiming{})
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go here.Run(runCtx)
	go there.Run(runCtx)
	return here, there
}

// TestNotifierWakesTopicSubscribers: a subscriber of one topic is woken by
// commits that published on it, in this process and through LISTEN/NOTIFY
// in another, and not by commits on other topics alone.
func TestNotifierWakesTopicSubscribers(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	here, there := twoProcesses(t, ctx, store)
	localTopic, localAll := here.SubscribeTopic("accepted"), here.Subscribe()
	remoteTopic := there.SubscribeTopic("accepted")

	here.Committed([]string{eventstore.TopicEvents})
	recv(t, localAll, "a wake-up for every commit")
	select {
	case <-localTopic:
		t.Fatal("a commit on another topic woke the topic's subscriber")
	default:
	}
	// Another process's topic subscriber is woken through LISTEN/NOTIFY
	// once it listens; commit until it is.
	waitFor(t, 10*time.Second, "the other process's topic subscriber", func() bool {
		here.Committed([]string{eventstore.TopicEvents, "accepted"})
		select {
		case <-remoteTopic:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	recv(t, localTopic, "the topic's own wake-up")
}

// TestNotifierAnnouncementOfATransaction: a transaction's own NOTIFY
// (Announcement) wakes another process's subscribers at its commit, and
// is passed over by its own process's notifier, whose subscribers are
// woken by Announced instead.
func TestNotifierAnnouncementOfATransaction(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	here, there := twoProcesses(t, ctx, store)
	changes, marks := here.SubscribeTopic("changes"), here.SubscribeTopic("mark")
	remote := there.SubscribeTopic("changes")
	// Both listen once a NOTIFY of the one wakes the other.
	waitFor(t, 10*time.Second, "both notifiers listening", func() bool {
		here.Committed([]string{"probe"})
		there.Committed([]string{"mark"})
		select {
		case <-marks:
		case <-time.After(50 * time.Millisecond):
			return false
		}
		_, err := store.Pool().Exec(ctx, `SELECT pg_notify($1, $2)`, eventstore.NotifyChannel, "probe:changes")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-remote:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	// here has acted on the NOTIFYs sent so far once it acted on a later
	// one (of a topic of its own, so that no earlier one answers for it).
	settle := func(topic string) {
		woken := here.SubscribeTopic(topic)
		there.Committed([]string{topic})
		recv(t, woken, "a NOTIFY of the other process")
	}
	settle("settled")
	select {
	case <-changes: // the probe's
	default:
	}
	if _, err := store.Pool().Exec(ctx, `SELECT pg_notify($1, $2)`, eventstore.NotifyChannel, here.Announcement("changes")); err != nil {
		t.Fatal(err)
	}
	recv(t, remote, "the transaction's NOTIFY at the other process")
	settle("settled again")
	select {
	case <-changes:
		t.Fatal("the process's own NOTIFY woke its subscriber")
	default:
	}
	here.Announced("changes")
	recv(t, changes, "the wake-up of Announced")
}

// TestNotifierWakesEveryoneAfterListeningAgain: a notification sent while
// the LISTEN connection was down is lost, so listening again wakes every
// subscriber and waiter to look for themselves; the first LISTEN does not.
func TestNotifierWakesEveryoneAfterListeningAgain(t *testing.T) {
	ctx := testContext(t)
	direct := pgtest.NewDatabase(t)
	proxy, proxied, err := faultproxy.ForDatabase(direct)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	observer := pgtest.Connect(t, direct)
	n := eventstore.NewNotifier(pgtest.Connect(t, proxied), slog.New(slog.DiscardHandler), eventstore.WakeTiming{})
	topic, next := n.SubscribeTopic("accepted"), n.Next("accepted")
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go n.Run(runCtx)
	listening := func() bool {
		var k int
		err := observer.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN `+eventstore.NotifyChannel+`'`).Scan(&k)
		return err == nil && k == 1
	}
	waitFor(t, 10*time.Second, "the notifier listening", listening)
	select {
	case <-topic:
		t.Fatal("the first LISTEN woke a subscriber")
	case <-next:
		t.Fatal("the first LISTEN woke a waiter")
	default:
	}
	proxy.Cut() // drops the LISTEN connection
	proxy.Restore()
	recv(t, topic, "a wake-up after listening again")
	recv(t, next, "the waiter's wake-up after listening again")
}
