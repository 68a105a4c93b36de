package eventstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// Test payloads. Event type names are constants, never derived from the Go
// type's name.

type itemAdded struct {
	Writer int `json:"writer"`
	Seq    int `json:"seq"`
}

func (itemAdded) EventType() string { return "test.item_added" }

type marker struct {
	Label string `json:"label"`
}

func (marker) EventType() string { return "test.marker" }

// person is at schema version 2: version 1 stored {"name": ...}, version 2
// stores {"full_name": ...}. It is registered as a pointer.
type person struct {
	FullName string `json:"full_name"`
}

func (*person) EventType() string  { return "test.person" }
func (*person) SchemaVersion() int { return 2 }

// unregistered is never registered.
type unregistered struct{}

func (unregistered) EventType() string { return "test.unregistered" }

func personUpcasterFrom1() eventstore.Upcaster {
	return eventstore.Upcaster{From: 1, Up: func(data json.RawMessage) (json.RawMessage, error) {
		var v1 struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(data, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]string{"full_name": v1.Name})
	}}
}

func newRegistry() *eventstore.Registry {
	r := eventstore.NewRegistry()
	r.Register(itemAdded{})
	r.Register(marker{})
	r.Register(&person{}, personUpcasterFrom1())
	return r
}

// Long deadlines: the subscriber reads below the cluster-wide oldest
// transaction in flight, so a long transaction of some other test on the
// same server delays (but never breaks) delivery.
const (
	deliveryTimeout = 60 * time.Second
	testTimeout     = 5 * time.Minute
)

// noRoute sends every event on TopicEvents alone.
func noRoute(string) []string { return nil }

func newStore(t testing.TB) *eventstore.Store {
	t.Helper()
	return eventstore.New(newPool(t), newRegistry(), noRoute)
}

// newPool returns a pool on a fresh migrated database of the test's own,
// and makes sure it is one: the subscriber and ReadAll tests count every
// event in the database.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	var current string
	if err := pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&current); err != nil {
		t.Fatalf("current database: %v", err)
	}
	if !strings.HasPrefix(current, "opsgate_test_") {
		t.Fatalf("pgtest.NewPool gave a pool on the shared database %q, not a fresh one", current)
	}
	return pool
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every few milliseconds until it holds, failing the test
// at the deadline. It waits for a condition, never for a fixed time.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// recv receives from ch or fails the test at the deadline.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(deliveryTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// collector records every event a subscription delivers, in arrival order,
// and acknowledges each message.
type collector struct {
	mu     sync.Mutex
	events []eventstore.Event // every delivery, duplicates included
	count  map[string]int     // deliveries per event ID
	errs   []error
}

func (c *collector) add(e eventstore.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
	c.count[e.ID]++
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

func (c *collector) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[id] > 0
}

func (c *collector) hasAll(ids []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if c.count[id] == 0 {
			return false
		}
	}
	return true
}

func (c *collector) missing(ids []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if c.count[id] == 0 {
			n++
		}
	}
	return n
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// all returns every delivery in arrival order.
func (c *collector) all() []eventstore.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]eventstore.Event(nil), c.events...)
}

// firsts returns the first delivery of each event, in arrival order.
func (c *collector) firsts() []eventstore.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool, len(c.count))
	out := make([]eventstore.Event, 0, len(c.count))
	for _, e := range c.events {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// index returns the arrival index of id's first delivery, or -1.
func (c *collector) index(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.events {
		if e.ID == id {
			return i
		}
	}
	return -1
}

func (c *collector) checkErrs(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		t.Errorf("subscription: %v", err)
	}
}

// testWriter sends log lines (the subscriber's warnings and errors) to the
// test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type subscription struct {
	*collector
	close func()
}

// subscribe starts a subscriber of TopicEvents for cfg's consumers. It acknowledges
// every message; with limit > 0 it stops reading after limit messages
// (the subscriber then blocks handing over the next one until closed).
// The subscription is closed at the end of the test at the latest.
func subscribe(t testing.TB, ctx context.Context, pool *pgxpool.Pool, cfg eventstore.SubscriberConfig, limit int) *subscription {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	sub, err := eventstore.NewSubscriber(pool, cfg)
	if err != nil {
		t.Fatalf("new subscriber: %v", err)
	}
	msgs, err := sub.Subscribe(ctx, eventstore.TopicEvents)
	if err != nil {
		t.Fatalf("subscribe %v: %v", cfg.Consumers, err)
	}
	c := &collector{count: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for msg := range msgs {
			e, err := eventstore.EventOf(msg)
			if err != nil {
				c.fail(err)
			} else {
				if msg.UUID != e.ID {
					c.fail(fmt.Errorf("message %s carries event %s", msg.UUID, e.ID))
				}
				if got := msg.Metadata.Get("stream_id"); got != e.StreamID {
					c.fail(fmt.Errorf("message %s: stream_id metadata %q, event %q", msg.UUID, got, e.StreamID))
				}
				c.add(e)
			}
			msg.Ack()
			n++
			if limit > 0 && n >= limit {
				return
			}
		}
	}()
	var once sync.Once
	closeFn := func() {
		once.Do(func() {
			closed := make(chan error, 1)
			go func() { closed <- sub.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("close subscriber %v: %v", cfg.Consumers, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("close subscriber %v: timed out", cfg.Consumers)
				return
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("subscriber %v: collector did not stop", cfg.Consumers)
			}
			c.checkErrs(t)
		})
	}
	t.Cleanup(closeFn)
	return &subscription{collector: c, close: closeFn}
}

func ids(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func countRows(t testing.TB, ctx context.Context, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// readAllAtLeast pages through ReadAll until it returns at least n events.
// ReadAll stops below the oldest transaction in flight that may belong to
// this database; one of another database that ends while ReadAll looks
// cannot be placed and counts, so events just committed here can be held
// back for a moment.
func readAllAtLeast(t testing.TB, ctx context.Context, store *eventstore.Store, page, n int) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	waitFor(t, deliveryTimeout, fmt.Sprintf("ReadAll to return %d events", n), func() bool {
		out = readAllPaged(t, ctx, store, 0, page)
		return len(out) >= n
	})
	return out
}

// readAllPaged pages through ReadAll with the given page size.
func readAllPaged(t testing.TB, ctx context.Context, store *eventstore.Store, after int64, page int) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for {
		batch, err := store.ReadAll(ctx, after, page)
		if err != nil {
			t.Fatalf("read all after %d: %v", after, err)
		}
		if len(batch) > page {
			t.Fatalf("read all after %d: %d events for a page of %d", after, len(batch), page)
		}
		out = append(out, batch...)
		if len(batch) < page {
			return out
		}
		after = batch[len(batch)-1].Position
	}
}

// countOf returns how many times the event was delivered.
func (c *collector) countOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[id]
}
