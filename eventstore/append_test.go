package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsgate/opsgate/eventstore"
)

func requireConflict(t testing.TB, err error, stream string, expected, actual int64) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrVersionConflict) {
		t.Fatalf("error %v is not ErrVersionConflict", err)
	}
	var vc *eventstore.VersionConflictError
	if !errors.As(err, &vc) {
		t.Fatalf("error %v is not a *VersionConflictError", err)
	}
	if vc.Stream != stream || vc.Expected != expected || vc.Actual != actual {
		t.Fatalf("conflict = %+v, want stream %s expected %d actual %d", *vc, stream, expected, actual)
	}
}

func streamVersions(t testing.TB, ctx context.Context, store *eventstore.Store, stream string) []int64 {
	t.Helper()
	events, err := store.ReadStream(ctx, stream, 1)
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.StreamVersion
	}
	return out
}

func requireContiguous(t testing.TB, stream string, versions []int64, n int) {
	t.Helper()
	if len(versions) != n {
		t.Fatalf("stream %s has %d events, want %d", stream, len(versions), n)
	}
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("stream %s: event %d has version %d, want %d", stream, i, v, i+1)
		}
	}
}

func TestAppendAssignsVersionsAndPositions(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)

	events, err := store.Append(ctx, "order-1", eventstore.NoStream, marker{"a"}, marker{"b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2", len(events))
	}
	for i, e := range events {
		if e.StreamID != "order-1" || e.StreamVersion != int64(i+1) || e.Type != "test.marker" || e.SchemaVersion != 1 {
			t.Errorf("event %d = %+v", i, e)
		}
		if len(e.ID) != 26 || e.Position <= 0 || e.TxID == 0 || e.RecordedAt.IsZero() {
			t.Errorf("event %d: id %q position %d tx %d recorded %v", i, e.ID, e.Position, e.TxID, e.RecordedAt)
		}
	}
	if events[0].TxID != events[1].TxID || events[0].Position >= events[1].Position {
		t.Errorf("one append: tx ids %d/%d, positions %d/%d", events[0].TxID, events[1].TxID, events[0].Position, events[1].Position)
	}
	if events[0].ID == events[1].ID {
		t.Errorf("duplicate event id %s", events[0].ID)
	}

	read, err := store.ReadStream(ctx, "order-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 2 {
		t.Fatalf("read %d events, want 2", len(read))
	}
	for i := range read {
		w, g := events[i], read[i]
		if g.ID != w.ID || g.Position != w.Position || g.TxID != w.TxID || g.StreamVersion != w.StreamVersion || !g.RecordedAt.Equal(w.RecordedAt) {
			t.Errorf("read %d = %+v, appended %+v", i, g, w)
		}
		p, err := store.Registry().Decode(g)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"a", "b"}[i]; p != (marker{want}) {
			t.Errorf("payload %d = %#v", i, p)
		}
	}
	from2, err := store.ReadStream(ctx, "order-1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(from2) != 1 || from2[0].ID != events[1].ID {
		t.Errorf("read from version 2 = %v", ids(from2))
	}
	none, err := store.ReadStream(ctx, "no-such-stream", 1)
	if err != nil || len(none) != 0 {
		t.Errorf("read missing stream = %v, %v", none, err)
	}

	// Appending nothing is a no-op, even with a wrong expected version.
	if got, err := store.Append(ctx, "order-1", 99); err != nil || got != nil {
		t.Errorf("empty append = %v, %v", got, err)
	}
}

func TestVersionConflicts(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()

	if _, err := store.Append(ctx, "s", eventstore.NoStream, marker{"first"}); err != nil {
		t.Fatal(err)
	}

	t.Run("NoStreamTwice", func(t *testing.T) {
		_, err := store.Append(ctx, "s", eventstore.NoStream, marker{"second"})
		requireConflict(t, err, "s", eventstore.NoStream, 1)
		if msg := err.Error(); msg != "stream s: expected version 0, found 1" {
			t.Errorf("message %q", msg)
		}
	})

	t.Run("WrongExpected", func(t *testing.T) {
		_, err := store.Append(ctx, "s", 5, marker{"x"})
		requireConflict(t, err, "s", 5, 1)
		_, err = store.Append(ctx, "other", 3, marker{"x"})
		requireConflict(t, err, "other", 3, 0)
		// The right version still works afterwards.
		events, err := store.Append(ctx, "s", 1, marker{"v2"})
		if err != nil {
			t.Fatal(err)
		}
		if events[0].StreamVersion != 2 {
			t.Fatalf("version %d, want 2", events[0].StreamVersion)
		}
	})

	t.Run("AnyVersion", func(t *testing.T) {
		events, err := store.Append(ctx, "s", eventstore.AnyVersion, marker{"v3"}, marker{"v4"})
		if err != nil {
			t.Fatal(err)
		}
		if events[0].StreamVersion != 3 || events[1].StreamVersion != 4 {
			t.Fatalf("versions %d, %d", events[0].StreamVersion, events[1].StreamVersion)
		}
		events, err = store.Append(ctx, "fresh", eventstore.AnyVersion, marker{"v1"})
		if err != nil || events[0].StreamVersion != 1 {
			t.Fatalf("any version on a new stream: %v, %v", events, err)
		}
	})

	// A refused append leaves nothing behind.
	requireContiguous(t, "s", streamVersions(t, ctx, store, "s"), 4)
	if n := countRows(t, ctx, pool, "events"); n != 5 {
		t.Errorf("%d events, want 5", n)
	}
}

// TestConcurrentAppendUniqueKey makes two optimistic appends with the same
// expected version race deterministically: the first has inserted but not
// committed when the second checks the version (and sees the old one), so
// the second is stopped by the unique (stream, version) key, not by the
// version check.
func TestConcurrentAppendUniqueKey(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()

	appended := make(chan eventstore.Event, 1)
	release := make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			events, err := tx.AppendPayloads(ctx, "hot", eventstore.NoStream, marker{"winner"})
			if err != nil {
				return err
			}
			appended <- events[0]
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	winner := recv(t, appended, "first append")

	secondDone := make(chan error, 1)
	go func() {
		_, err := store.Append(ctx, "hot", eventstore.NoStream, marker{"loser"})
		secondDone <- err
	}()
	// The second append waits on the first one's uncommitted key.
	waitFor(t, deliveryTimeout, "second append to wait on a lock", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	close(release)
	if err := recv(t, firstDone, "first commit"); err != nil {
		t.Fatalf("first append: %v", err)
	}
	err := recv(t, secondDone, "second append")
	requireConflict(t, err, "hot", eventstore.NoStream, 1)

	events, err := store.ReadStream(ctx, "hot", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].ID != winner.ID {
		t.Fatalf("stream holds %v, want only %s", ids(events), winner.ID)
	}
}

// TestConcurrentAppendOneWins races many optimistic appends with the same
// expected version, round after round: exactly one wins each round, the
// others get a *VersionConflictError by whichever path they hit.
func TestConcurrentAppendOneWins(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	const racers, rounds = 16, 10

	for round := range rounds {
		expected := int64(round)
		start := make(chan struct{})
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				<-start
				_, errs[i] = store.Append(ctx, "contended", expected, itemAdded{Writer: i, Seq: round})
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			var vc *eventstore.VersionConflictError
			switch {
			case err == nil:
				wins++
			case errors.As(err, &vc):
				if !errors.Is(err, eventstore.ErrVersionConflict) || vc.Stream != "contended" || vc.Expected != expected || vc.Actual <= expected {
					t.Errorf("round %d: conflict %+v", round, *vc)
				}
			default:
				t.Errorf("round %d: unexpected error %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d appends won, want exactly 1", round, wins)
		}
	}
	requireContiguous(t, "contended", streamVersions(t, ctx, store, "contended"), rounds)
}

func TestEventsAreAppendOnly(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	pool := store.Pool()
	for i := range 3 {
		if _, err := store.Append(ctx, fmt.Sprintf("s-%d", i), eventstore.NoStream, marker{"keep"}, marker{"me"}); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func() []string {
		rows, err := pool.Query(ctx, `SELECT row(e.*)::text FROM events e ORDER BY position`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := snapshot()
	if len(before) != 6 {
		t.Fatalf("%d rows, want 6", len(before))
	}

	for _, stmt := range []string{
		`UPDATE events SET event_type = 'tampered'`,
		`UPDATE events SET payload = '{}' WHERE stream_id = 's-1'`,
		`DELETE FROM events`,
		`DELETE FROM events WHERE stream_version = 2`,
		`TRUNCATE events`,
		`TRUNCATE events CASCADE`,
	} {
		_, err := pool.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Errorf("%s: error %v, want a refusal", stmt, err)
			continue
		}
		if pgErr.Code != "42501" {
			t.Errorf("%s: code %s (%s), want 42501", stmt, pgErr.Code, pgErr.Message)
		}
	}
	// Also inside a store transaction.
	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM events WHERE stream_id = 's-0'`)
		return err
	})
	if err == nil {
		t.Error("delete in a store transaction succeeded")
	}

	if after := snapshot(); !reflect.DeepEqual(before, after) {
		t.Errorf("rows changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestWithStreamLockSerialisesOneStream: many deciders on one hot stream read
// the version and append with it as expected version; the lock queues them
// in the database, so none conflicts and none is lost.
func TestWithStreamLockSerialisesOneStream(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	const writers = 200

	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			errs[i] = store.WithStreamLock(ctx, "hot", func(ctx context.Context, tx *eventstore.Tx) error {
				// Under the lock no other writer can move the stream: the
				// version each writer reads is the one it appends after.
				_, err := tx.Append(ctx, "hot", eventstore.Records(eventstore.Metadata{}, itemAdded{Writer: i}))
				return err
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}

	events, err := store.ReadStream(ctx, "hot", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != writers {
		t.Fatalf("%d events, want %d", len(events), writers)
	}
	writersSeen := map[int]bool{}
	for i, e := range events {
		if e.StreamVersion != int64(i+1) {
			t.Fatalf("event %d has version %d", i, e.StreamVersion)
		}
		// Locking before the first write orders transaction ids like the
		// versions, which is the order subscribers deliver in.
		if i > 0 && e.TxID <= events[i-1].TxID {
			t.Errorf("version %d has tx %d, version %d has tx %d", e.StreamVersion, e.TxID, events[i-1].StreamVersion, events[i-1].TxID)
		}
		p, err := store.Registry().Decode(e)
		if err != nil {
			t.Fatal(err)
		}
		writersSeen[p.(itemAdded).Writer] = true
	}
	if len(writersSeen) != writers {
		t.Errorf("%d distinct payloads, want %d", len(writersSeen), writers)
	}
}

func TestManyStreamsConcurrently(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	const streams, perStream = 200, 5

	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			stream := fmt.Sprintf("stream-%03d", i)
			expected := eventstore.NoStream
			for seq := range perStream {
				events, err := store.Append(ctx, stream, expected, itemAdded{Writer: i, Seq: seq})
				if err != nil {
					errs[i] = err
					return
				}
				expected = events[len(events)-1].StreamVersion
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
	}
	for i := range streams {
		stream := fmt.Sprintf("stream-%03d", i)
		events, err := store.ReadStream(ctx, stream, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != perStream {
			t.Fatalf("%s: %d events", stream, len(events))
		}
		for j, e := range events {
			p, err := store.Registry().Decode(e)
			if err != nil {
				t.Fatal(err)
			}
			if e.StreamVersion != int64(j+1) || p != (itemAdded{Writer: i, Seq: j}) {
				t.Errorf("%s event %d: version %d payload %#v", stream, j, e.StreamVersion, p)
			}
		}
	}
	if n := countRows(t, ctx, store.Pool(), "events"); n != streams*perStream {
		t.Errorf("%d events, want %d", n, streams*perStream)
	}
}

func TestMetadataAndTenants(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)

	md1 := eventstore.Metadata{Actor: "alice", TenantID: "t1", CorrelationID: "corr-1", CausationID: "cause-1", RequestID: "req-1"}
	md2 := eventstore.Metadata{Actor: "bob", TenantID: "t2"}
	mdNone := eventstore.Metadata{Actor: "system"}

	var t1IDs []string
	appendAs := func(md eventstore.Metadata, stream string, payloads ...eventstore.Payload) []eventstore.Event {
		t.Helper()
		var events []eventstore.Event
		err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
			var err error
			events, err = tx.Append(ctx, stream, eventstore.Records(md, payloads...))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Metadata != md {
				t.Errorf("appended metadata %+v, want %+v", e.Metadata, md)
			}
			if md.TenantID == "t1" {
				t1IDs = append(t1IDs, e.ID)
			}
		}
		return events
	}
	appendAs(md1, "a", marker{"1"}, marker{"2"})
	appendAs(md2, "b", marker{"3"})
	appendAs(mdNone, "c", marker{"4"})
	appendAs(md1, "d", marker{"5"})
	appendAs(md2, "a", marker{"6"})
	appendAs(md1, "a", marker{"7"})
	// Records of one append may carry different metadata.
	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		events, err := tx.Append(ctx, "e", []eventstore.Record{{Payload: marker{"8"}, Metadata: md1}}, eventstore.ExpectVersion(eventstore.NoStream))
		if err == nil {
			t1IDs = append(t1IDs, events[0].ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	all := readAllAtLeast(t, ctx, store, 3, 8)
	if len(all) != 8 {
		t.Fatalf("read %d events, want 8", len(all))
	}
	wantMD := map[string]eventstore.Metadata{"1": md1, "2": md1, "3": md2, "4": mdNone, "5": md1, "6": md2, "7": md1, "8": md1}
	for _, e := range all {
		p, err := store.Registry().Decode(e)
		if err != nil {
			t.Fatal(err)
		}
		if want := wantMD[p.(marker).Label]; e.Metadata != want {
			t.Errorf("event %s metadata %+v, want %+v", p.(marker).Label, e.Metadata, want)
		}
	}
	stream, err := store.ReadStream(ctx, "a", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(stream) != 4 || stream[0].Metadata != md1 || stream[2].Metadata != md2 {
		t.Errorf("stream a metadata: %+v", stream)
	}

	// ReadTenant returns the tenant's events in ReadAll order, pages, and
	// leaves out other tenants and events without tenant.
	t1 := readTenantPaged(t, ctx, store, "t1", 0, 2)
	if got := ids(t1); !reflect.DeepEqual(got, t1IDs) {
		t.Errorf("tenant t1: %v, want %v", got, t1IDs)
	}
	for _, e := range t1 {
		if e.Metadata.TenantID != "t1" {
			t.Errorf("tenant t1 read %+v", e)
		}
	}
	t2 := readTenantPaged(t, ctx, store, "t2", 0, 100)
	if len(t2) != 2 {
		t.Errorf("tenant t2: %d events, want 2", len(t2))
	}
	if none := readTenantPaged(t, ctx, store, "t3", 0, 100); len(none) != 0 {
		t.Errorf("tenant t3: %v", ids(none))
	}
	// Paging after a position of another tenant's event works too.
	after := readTenantPaged(t, ctx, store, "t1", t2[0].Position, 100)
	var want []string
	for _, e := range t1 {
		if e.TxID > t2[0].TxID {
			want = append(want, e.ID)
		}
	}
	if got := ids(after); !reflect.DeepEqual(got, want) {
		t.Errorf("tenant t1 after %d: %v, want %v", t2[0].Position, got, want)
	}

	// The metadata travels with the published message too.
	sub := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{Consumers: []string{"metadata"}}, 0)
	waitFor(t, deliveryTimeout, "all events delivered", func() bool { return sub.hasAll(ids(all)) })
	for _, e := range sub.firsts() {
		p, err := store.Registry().Decode(e)
		if err != nil {
			t.Fatal(err)
		}
		if want := wantMD[p.(marker).Label]; e.Metadata != want {
			t.Errorf("delivered %s with metadata %+v, want %+v", p.(marker).Label, e.Metadata, want)
		}
	}
}

func readTenantPaged(t testing.TB, ctx context.Context, store *eventstore.Store, tenant string, after int64, page int) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for {
		batch, err := store.ReadTenant(ctx, tenant, after, page)
		if err != nil {
			t.Fatalf("read tenant %s after %d: %v", tenant, after, err)
		}
		out = append(out, batch...)
		if len(batch) < page {
			return out
		}
		after = batch[len(batch)-1].Position
	}
}

func TestReadAll(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)

	if events, err := store.ReadAll(ctx, 0, 10); err != nil || len(events) != 0 {
		t.Fatalf("empty store: %v, %v", events, err)
	}
	var want []eventstore.Event
	for i := range 250 {
		events, err := store.Append(ctx, fmt.Sprintf("s-%d", i%7), eventstore.AnyVersion, itemAdded{Seq: i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, events...)
	}
	readAllAtLeast(t, ctx, store, 100, len(want))
	// A limit of 0 or less means 100. The horizon may lag for a moment
	// (see TestLateCommitIsDelivered), so a short page is asked again.
	var first []eventstore.Event
	waitFor(t, deliveryTimeout, "a full default page", func() bool {
		var err error
		if first, err = store.ReadAll(ctx, 0, 0); err != nil {
			t.Fatal(err)
		}
		return len(first) >= 100
	})
	if len(first) != 100 {
		t.Errorf("default limit gave %d events", len(first))
	}
	for _, page := range []int{1, 7, 100, 1000} {
		got := readAllAtLeast(t, ctx, store, page, len(want))
		if !reflect.DeepEqual(ids(got), ids(want)) {
			t.Errorf("page size %d: read %d events, not the %d appended in order", page, len(got), len(want))
		}
	}
	sorted := sort.SliceIsSorted(want, func(i, j int) bool { return want[i].TxID < want[j].TxID })
	if !sorted {
		t.Error("sequential appends did not get increasing transaction ids")
	}

	_, err := store.ReadAll(ctx, want[len(want)-1].Position+1000, 10)
	if !errors.Is(err, eventstore.ErrUnknownPosition) {
		t.Errorf("unknown position: %v", err)
	}
	_, err = store.ReadTenant(ctx, "t", 987654, 10)
	if !errors.Is(err, eventstore.ErrUnknownPosition) {
		t.Errorf("tenant, unknown position: %v", err)
	}
	tail, err := store.ReadAll(ctx, want[len(want)-1].Position, 10)
	if err != nil || len(tail) != 0 {
		t.Errorf("after the last event: %v, %v", tail, err)
	}
}

// TestHistory reads the whole store in one statement, in the order of
// ReadAll, with what a fold needs, and stops when told.
func TestHistory(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	var want []eventstore.Event
	for i := range 120 {
		events, err := store.Append(ctx, fmt.Sprintf("s-%d", i%5), eventstore.AnyVersion, itemAdded{Seq: i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, events...)
	}
	paged := readAllAtLeast(t, ctx, store, 50, len(want))
	// Asked again while short: the horizon may lag for a moment (see
	// TestLateCommitIsDelivered).
	var got []eventstore.Event
	waitFor(t, deliveryTimeout, "History to reach every event", func() bool {
		got = got[:0]
		for e, err := range store.History(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
		}
		return len(got) >= len(paged)
	})
	if len(got) != len(paged) {
		t.Fatalf("history gave %d events, ReadAll %d", len(got), len(paged))
	}
	for i, e := range got {
		p := paged[i]
		if e.Position != p.Position || e.TxID != p.TxID || e.Type != p.Type || e.SchemaVersion != p.SchemaVersion ||
			string(e.Data) != string(p.Data) {
			t.Fatalf("event %d: history %+v, ReadAll %+v", i, e, p)
		}
	}

	n := 0
	for _, err := range store.History(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break
		}
	}
	if n != 10 {
		t.Errorf("stopped after %d events, not 10", n)
	}
}
