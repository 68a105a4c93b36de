package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsgate/opsgate/eventstore"
)

// TestStress runs many writers over a few dozen streams, each transaction
// under its stream's lock with a random delay before commit and one in ten
// rolled back, while a subscriber consumes. Every committed event must be
// delivered, none rolled back, each stream in version order; ReadAll must
// return the same events in the same order.
func TestStress(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)
	target := stressEvents
	if testing.Short() {
		target = min(target, 2000)
	}
	const writers, streams = 32, 64
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, target %d committed events", seed, target)

	sub := subscribe(t, ctx, store.Pool(), eventstore.SubscriberConfig{Consumers: []string{"stress"}}, 0)

	type result struct {
		committed  []eventstore.Event
		rolledBack []eventstore.Event
		err        error
	}
	var committedCount atomic.Int64
	results := make([]result, writers)
	errRollback := errors.New("deliberate rollback")
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			res := &results[w]
			for seq := 0; committedCount.Load() < int64(target); seq++ {
				stream := fmt.Sprintf("stream-%02d", rng.IntN(streams))
				payloads := make([]eventstore.Payload, 1+rng.IntN(3))
				for i := range payloads {
					payloads[i] = itemAdded{Writer: w, Seq: seq*10 + i}
				}
				rollback := rng.IntN(10) == 0
				delay := time.Duration(rng.IntN(2000)) * time.Microsecond
				var appended []eventstore.Event
				err := store.WithStreamLock(ctx, stream, func(ctx context.Context, tx *eventstore.Tx) error {
					v, err := tx.StreamVersion(ctx, stream)
					if err != nil {
						return err
					}
					appended, err = tx.AppendPayloads(ctx, stream, v, payloads...)
					if err != nil {
						return err
					}
					time.Sleep(delay) // work before commit, not synchronisation
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case err == nil:
					res.committed = append(res.committed, appended...)
					committedCount.Add(int64(len(appended)))
				case errors.Is(err, errRollback):
					res.rolledBack = append(res.rolledBack, appended...)
				default:
					res.err = fmt.Errorf("writer %d, transaction %d on %s: %w", w, seq, stream, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	committed := map[string]eventstore.Event{}
	rolledBack := map[string]bool{}
	var committedIDs []string
	for _, r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, e := range r.committed {
			committed[e.ID] = e
			committedIDs = append(committedIDs, e.ID)
		}
		for _, e := range r.rolledBack {
			rolledBack[e.ID] = true
		}
	}
	if len(committed) < target {
		t.Fatalf("%d events committed, want at least %d", len(committed), target)
	}
	t.Logf("writers: %d events committed, %d rolled back in %v (%.0f events/s)",
		len(committed), len(rolledBack), elapsed.Round(time.Millisecond), float64(len(committed))/elapsed.Seconds())

	waitFor(t, 3*time.Minute, fmt.Sprintf("%d committed events delivered", len(committed)), func() bool {
		return sub.missing(committedIDs) == 0
	})
	t.Logf("subscriber caught up %v after the writers finished", (time.Since(start) - elapsed).Round(time.Millisecond))

	// Delivered: everything committed, nothing rolled back, nothing else;
	// the first delivery of each stream's events in version order.
	deliveries := sub.all()
	firsts := sub.firsts()
	t.Logf("subscriber: %d deliveries, %d distinct", len(deliveries), len(firsts))
	for _, e := range deliveries {
		want, ok := committed[e.ID]
		switch {
		case rolledBack[e.ID]:
			t.Errorf("rolled back event %s (%s v%d) delivered", e.ID, e.StreamID, e.StreamVersion)
		case !ok:
			t.Errorf("unknown event %s delivered", e.ID)
		case e.StreamID != want.StreamID || e.StreamVersion != want.StreamVersion || e.Position != want.Position || e.TxID != want.TxID:
			t.Errorf("delivered %+v, committed %+v", e, want)
		}
	}
	lastVersion := map[string]int64{}
	for _, e := range firsts {
		if e.StreamVersion != lastVersion[e.StreamID]+1 {
			t.Errorf("stream %s: version %d delivered first after version %d", e.StreamID, e.StreamVersion, lastVersion[e.StreamID])
		}
		lastVersion[e.StreamID] = e.StreamVersion
	}

	// ReadAll pages through the same events in the same order.
	read := readAllAtLeast(t, ctx, store, 997, len(committed))
	if len(read) != len(committed) {
		t.Errorf("ReadAll returned %d events, want %d", len(read), len(committed))
	}
	if !slices.Equal(ids(read), ids(firsts)) {
		t.Error("ReadAll order differs from the subscriber's delivery order")
	}
	lastVersion = map[string]int64{}
	for _, e := range read {
		if _, ok := committed[e.ID]; !ok {
			t.Errorf("ReadAll returned uncommitted event %s", e.ID)
		}
		if e.StreamVersion != lastVersion[e.StreamID]+1 {
			t.Errorf("ReadAll: stream %s version %d after %d", e.StreamID, e.StreamVersion, lastVersion[e.StreamID])
		}
		lastVersion[e.StreamID] = e.StreamVersion
	}

	// Each stream holds exactly its committed events, versions 1..n.
	byStream := map[string][]eventstore.Event{}
	for _, e := range committed {
		byStream[e.StreamID] = append(byStream[e.StreamID], e)
	}
	for stream, want := range byStream {
		slices.SortFunc(want, func(a, b eventstore.Event) int { return int(a.StreamVersion - b.StreamVersion) })
		got, err := store.ReadStream(ctx, stream, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), ids(want)) {
			t.Errorf("stream %s: read %d events, committed %d", stream, len(got), len(want))
		}
		requireContiguous(t, stream, streamVersions(t, ctx, store, stream), len(want))
	}
}
