package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// roundTrips records what each round trip of a pool's connections sent:
// the statements of a batch, or a query on its own.
type roundTrips struct {
	mu    sync.Mutex
	sends [][]string
	batch map[*pgx.Conn]int // the send a batch in progress is recorded in
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, []string{statement(d.SQL)})
	return ctx
}

func (*roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, nil)
	r.batch[conn] = len(r.sends) - 1
	return ctx
}

func (r *roundTrips) TraceBatchQuery(_ context.Context, conn *pgx.Conn, d pgx.TraceBatchQueryData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.batch[conn]
	r.sends[i] = append(r.sends[i], statement(d.SQL))
}

func (*roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (r *roundTrips) all() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sends)
}

// statement is the first three words of sql, upper case: "UPDATE
// FEED_CHECKPOINTS SET", "COMMIT".
func statement(sql string) string {
	words := strings.Fields(strings.ToUpper(sql))
	return strings.Join(words[:min(3, len(words))], " ")
}

// TestFeedBatchCommitsInItsSecondRoundTrip: a feed's batch is read with
// the BEGIN, and the consumers' writes go with the move of the checkpoints
// and the COMMIT, in one round trip.
func TestFeedBatchCommitsInItsSecondRoundTrip(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	if _, err := store.Pool().Exec(ctx, `CREATE TABLE feed_applied (event_id TEXT)`); err != nil {
		t.Fatal(err)
	}
	cfg := store.Pool().Config()
	trips := &roundTrips{batch: map[*pgx.Conn]int{}}
	cfg.ConnConfig.Tracer = trips
	reader, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.Close)
	events, err := store.Append(ctx, "s", eventstore.NoStream, marker{"1"}, marker{"2"})
	if err != nil {
		t.Fatal(err)
	}
	applied := runFeed(t, ctx, reader, store, eventstore.Consumer{Name: "trips", Apply: insertApplied})
	waitFor(t, deliveryTimeout, "the batch applied", func() bool { return applied.count(nil) == 1 })

	sends := trips.all()
	i := slices.IndexFunc(sends, func(s []string) bool { return slices.Contains(s, "INSERT INTO FEED_APPLIED") })
	if i < 1 {
		t.Fatalf("no round trip carried the consumer's write after the batch's read: %q", sends)
	}
	if want := []string{"INSERT INTO FEED_APPLIED", "UPDATE FEED_CHECKPOINTS SET", "COMMIT"}; !slices.Equal(sends[i], want) {
		t.Errorf("the batch's write went as %q, want %q in one round trip", sends[i], want)
	}
	if want := []string{"BEGIN ISOLATION LEVEL", "WITH HELD AS"}; !slices.Equal(sends[i-1], want) {
		t.Errorf("the round trip before the write sent %q, want the BEGIN with the batch's read %q", sends[i-1], want)
	}
	if n := countApplied(t, ctx, store.Pool()); n != len(events) {
		t.Errorf("%d events applied, want %d", n, len(events))
	}
}

// TestFeedStatementFailingAtCommitRedeliversTheBatch: a consumer's
// statement that fails when it is sent, with the COMMIT, rolls back the
// whole batch (the other consumer's writes and the checkpoints included),
// is observed as a failure, and the batch is delivered again: every event
// is applied once in the end, and a consumer is told of the commit once.
func TestFeedStatementFailingAtCommitRedeliversTheBatch(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	if _, err := store.Pool().Exec(ctx, `CREATE TABLE feed_applied (event_id TEXT)`); err != nil {
		t.Fatal(err)
	}
	events, err := store.Append(ctx, "s", eventstore.NoStream, marker{"1"}, marker{"2"}, marker{"3"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	divisor := 0 // the first batch divides by zero
	failing := eventstore.Consumer{Name: "failing", Apply: func(_ context.Context, b *pgx.Batch, _ []eventstore.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		b.Queue(`SELECT 1 / $1::int`, divisor)
		divisor = 1
		return nil
	}}
	var committed atomic.Int64
	writing := eventstore.Consumer{Name: "writing", Apply: insertApplied, Committed: func() { committed.Add(1) }}
	applied := runFeed(t, ctx, store.Pool(), store, writing, failing)
	waitFor(t, deliveryTimeout, "the batch applied after a failed commit", func() bool { return applied.count(nil) >= 1 })
	if n := committed.Load(); n != 1 {
		t.Errorf("Committed called %d times, want once: for the batch that committed, not the one rolled back", n)
	}
	if n := applied.count(func(err error) bool { return err != nil }); n != 1 {
		t.Errorf("%d failed batches observed, want the one whose statement failed", n)
	}
	if n := countApplied(t, ctx, store.Pool()); n != len(events) {
		t.Errorf("%d events applied, want each of the %d once (the failed batch's writes rolled back)", n, len(events))
	}
	for _, name := range []string{"writing", "failing"} {
		var at int64
		if err := store.Pool().QueryRow(ctx, `SELECT position FROM feed_checkpoints WHERE consumer = $1`, name).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if want := events[len(events)-1].Position; at != want {
			t.Errorf("checkpoint of %s at %d, want %d", name, at, want)
		}
	}
}

// TestFeedPrepareReadsInTheBatchTransaction: Prepare reads through the
// batch's transaction, which holds the consumer's checkpoint, and is told
// that checkpoint (the point its events follow), whether it is alone on
// its feed or one of several.
func TestFeedPrepareReadsInTheBatchTransaction(t *testing.T) {
	for _, together := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "with another consumer"}[together], func(t *testing.T) {
			ctx := testContext(t)
			store := newStore(t)
			type prepared struct {
				held       bool
				after, row eventstore.Checkpoint
			}
			got := make(chan prepared, 1)
			c := eventstore.Consumer{Name: "preparing",
				Prepare: func(ctx context.Context, q pg.Querier, after eventstore.Checkpoint, _ []eventstore.Delivery) error {
					// The batch's transaction holds the consumer's checkpoint
					// row: locking it again without waiting succeeds only there.
					p := prepared{after: after}
					err := q.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM feed_checkpoints
						WHERE consumer = 'preparing' FOR UPDATE NOWAIT`).Scan(&p.row.TxID, &p.row.Position)
					p.held = err == nil
					got <- p
					return err
				},
				Apply: func(context.Context, *pgx.Batch, []eventstore.Delivery) error { return nil },
			}
			consumers := []eventstore.Consumer{c}
			if together {
				consumers = append(consumers, eventstore.Consumer{Name: "other",
					Apply: func(context.Context, *pgx.Batch, []eventstore.Delivery) error { return nil }})
			}
			runFeed(t, ctx, store.Pool(), store, consumers...)
			var before eventstore.Checkpoint
			for i := range 2 {
				events, err := store.Append(ctx, "s", int64(i), marker{fmt.Sprint(i)})
				if err != nil {
					t.Fatal(err)
				}
				p := recv(t, got, "the prepare's read")
				if !p.held {
					t.Fatal("Prepare did not read in the transaction that holds the consumer's checkpoint")
				}
				if p.after != before || p.row != before {
					t.Errorf("batch %d: Prepare was told the checkpoint %v; it is %v, want %v", i+1, p.after, p.row, before)
				}
				before = eventstore.PointOf(events[0])
			}
		})
	}
}

// batches counts a feed's observed batches.
type batches struct {
	mu   sync.Mutex
	errs []error
}

func (b *batches) observe(_ int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, err)
}

// count is the number of batches that committed (match nil) or whose
// error matches.
func (b *batches) count(match func(error) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, err := range b.errs {
		if (match == nil && err == nil) || (match != nil && match(err)) {
			n++
		}
	}
	return n
}

// runFeed runs a feed of consumers on pool until the test ends.
func runFeed(t *testing.T, ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, consumers ...eventstore.Consumer) *batches {
	t.Helper()
	seen := &batches{}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	f := &eventstore.Feed{Pool: pool, Registry: store.Registry(), Consumers: consumers,
		PollInterval: 20 * time.Millisecond, Observe: seen.observe, Logger: slog.New(slog.DiscardHandler)}
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("feed: %v", err)
		}
	})
	return seen
}

// insertApplied is an Apply that records each event in feed_applied.
func insertApplied(_ context.Context, b *pgx.Batch, events []eventstore.Delivery) error {
	ids := make([]string, len(events))
	for i, d := range events {
		ids[i] = d.ID
	}
	b.Queue(`INSERT INTO feed_applied SELECT unnest($1::text[])`, ids)
	return nil
}

func countApplied(t *testing.T, ctx context.Context, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM feed_applied`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
