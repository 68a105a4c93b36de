package eventstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opsgate/opsgate/eventstore"
)

// BenchmarkAppend measures single-event appends: to distinct streams without
// a version check, and from parallel goroutines through the lock of one hot
// stream.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	store := newStore(b)

	b.Run("AnyVersionDistinctStreams", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := store.Append(ctx, fmt.Sprintf("bench-%d", i), eventstore.AnyVersion, marker{"x"}); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("WithStreamLockHotStreamParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				err := store.WithStreamLock(ctx, "hot", func(ctx context.Context, tx *eventstore.Tx) error {
					v, err := tx.StreamVersion(ctx, "hot")
					if err != nil {
						return err
					}
					_, err = tx.AppendPayloads(ctx, "hot", v, marker{"x"})
					return err
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
