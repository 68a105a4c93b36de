package gate

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/opsgate/opsgate/eventstore"
)

// Group commit. Every start of a process, and every completion, reaches
// the database through a batcher: a leader goroutine does every item
// waiting at that moment (up to a window), whatever its scope, in one
// transaction, while the items that arrive meanwhile wait for the next
// one; an item that finds the batcher idle is a batch of one. Each item
// is still decided on its own, under its scope's lock, with its own event
// and answer; the transaction, its round trips and its commit are shared,
// so under load a commit's cost is spread over more items.
//
// A batch whose transaction fails is done again in parts (a scope's
// starts, or each completion alone), each in a transaction of its own, so
// that a failure fails only its own part.
//
// The starts' batcher is bounded: when more starts arrive than the
// database can decide, the excess is refused at once with ErrOverloaded
// instead of waiting ever longer, so that answers stay prompt and the
// database keeps doing its peak work rather than more and more waiting.

// batchItem is what a batcher queues: a request with its own answer.
type batchItem interface {
	// reset forgets the answer of an attempt that is done again.
	reset()
	// settle releases the item's waiter, with err unless the item already
	// has an answer of its own.
	settle(err error)
}

// batcher is one group commit of a process.
type batcher[T batchItem] struct {
	window  int
	timeout time.Duration
	// run does a batch in one transaction, each item's own answer set.
	run func(ctx context.Context, batch []T) error
	// split divides a failed batch into the parts done again alone.
	split func(batch []T) [][]T
	// bound, if set, is the load shedding of the starts (see shed); key is
	// an item's scope.
	bound int
	key   func(T) string

	mu      sync.Mutex
	waiting []T
	keys    map[string]int // the keys of the waiting items, and how many each
	leading bool
}

// submit queues item for the next batch, or refuses it with ErrOverloaded
// (nothing done).
func (b *batcher[T]) submit(item T) error {
	b.mu.Lock()
	if b.shed(item) {
		b.mu.Unlock()
		return ErrOverloaded
	}
	b.waiting = append(b.waiting, item)
	if b.key != nil {
		if b.keys == nil {
			b.keys = map[string]int{}
		}
		b.keys[b.key(item)]++
	}
	lead := !b.leading
	b.leading = true
	b.mu.Unlock()
	if lead {
		go b.lead()
	}
	return nil
}

// Load shedding: what a batch of starts costs grows with the number of
// scopes it decides on (a lock, a snapshot, an append and run rows each;
// more starts on a scope add an event each). A start is refused when the
// queue holds bound starts, or already holds starts of a quarter as many
// other scopes: the next batch is then as large as one can be while its
// starts are still answered promptly. Starts on a scope already queued
// join it (a hot scope's clicks are never shed for their number).
func (b *batcher[T]) shed(item T) bool {
	if b.bound == 0 {
		return false
	}
	if len(b.waiting) >= b.bound {
		return true
	}
	return b.keys[b.key(item)] == 0 && len(b.keys) >= max(1, b.bound/4)
}

// lead does the waiting items, a window at a time, until none is left.
func (b *batcher[T]) lead() {
	for {
		b.mu.Lock()
		n := min(len(b.waiting), b.window)
		if n == 0 {
			b.leading, b.waiting = false, nil
			b.mu.Unlock()
			return
		}
		batch := b.waiting[:n:n]
		b.waiting = b.waiting[n:]
		if b.key != nil {
			for _, item := range batch {
				if k := b.key(item); b.keys[k] <= 1 {
					delete(b.keys, k)
				} else {
					b.keys[k]--
				}
			}
		}
		b.mu.Unlock()
		b.do(batch)
	}
}

// do does batch in one transaction or, if that fails for a reason that
// may be its own part's (not a deadline, not an unreachable database), in
// parts; then it releases every item.
func (b *batcher[T]) do(batch []T) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	err := b.attempt(ctx, batch)
	if parts := b.split(batch); err != nil && len(parts) > 1 && !errors.Is(err, context.DeadlineExceeded) && !eventstore.IsUnavailable(err) {
		for _, part := range parts {
			settle(part, b.attempt(ctx, part))
		}
		return
	}
	settle(batch, err)
}

func (b *batcher[T]) attempt(ctx context.Context, batch []T) error {
	for _, item := range batch {
		item.reset()
	}
	return b.run(ctx, batch)
}

func settle[T batchItem](batch []T, err error) {
	for _, item := range batch {
		item.settle(err)
	}
}

// len is the number of items waiting for the next batch.
func (b *batcher[T]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// splitEach divides a batch into its items.
func splitEach[T any](batch []T) [][]T {
	parts := make([][]T, len(batch))
	for i, item := range batch {
		parts[i] = []T{item}
	}
	return parts
}

// await waits for done to be closed, or for ctx to end.
func await(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
