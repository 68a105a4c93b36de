package audit

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/eventstore"
)

// ChainConsumer is the chainer's checkpoint in feed_checkpoints.
const ChainConsumer = "audit.chain"

// head is where a chain's next event links to.
type head struct {
	seq  int64
	hash string
}

// Chainer returns the feed consumer that chains every event behind the
// commit, in subscriber order (transaction id, then position): each
// event's hash covers the one before it in its tenant's chain (events of
// no tenant form the chain ""). The heads of the batch's chains are read
// in the feed's transaction (Prepare) and the batch's links and new heads
// are written with its checkpoint, so each event is chained exactly once
// and a decision never waits for the chain. onChained, if set, is called
// for each event chained, with its recorded time (the lag metric).
func Chainer(onChained func(recordedAt time.Time)) eventstore.Consumer {
	var heads map[string]head
	return eventstore.Consumer{
		Name: ChainConsumer,
		Prepare: func(ctx context.Context, tx pgx.Tx, events []eventstore.Delivery) error {
			chains := map[string]bool{}
			var names []string
			for _, d := range events {
				if c := d.Metadata.TenantID; !chains[c] {
					chains[c] = true
					names = append(names, c)
				}
			}
			var err error
			heads, err = readHeads(ctx, tx, names)
			return err
		},
		Apply: func(_ context.Context, b *pgx.Batch, events []eventstore.Delivery) error {
			n := len(events)
			positions, seqs := make([]int64, n), make([]int64, n)
			chains := make([]string, n)
			prevs, hashes := make([][]byte, n), make([][]byte, n)
			for i, d := range events {
				chain := d.Metadata.TenantID
				h, ok := heads[chain]
				if !ok {
					h = head{hash: ZeroHash}
				}
				line := Line{Seq: h.seq + 1, Record: RecordOf(d.Event), PrevHash: h.hash}
				sum, err := line.Sum()
				if err != nil {
					return fmt.Errorf("chain event %d: %w", d.Position, err)
				}
				positions[i], chains[i], seqs[i] = d.Position, chain, line.Seq
				prevs[i], _ = hex.DecodeString(h.hash)
				hashes[i], _ = hex.DecodeString(sum)
				heads[chain] = head{seq: line.Seq, hash: sum}
				if onChained != nil {
					onChained(d.RecordedAt)
				}
			}
			queueLinks(b, positions, chains, seqs, prevs, hashes)
			return nil
		},
	}
}
