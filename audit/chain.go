package audit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// ChainConsumer is the chainer's checkpoint in feed_checkpoints.
const ChainConsumer = "audit.chain"

// head is where a chain's next event links to, and its tree so far.
type head struct {
	seq  int64
	hash string
	tree *Builder
}

// Chainer returns the feed consumer that chains every event behind the
// commit, in subscriber order (transaction id, then position): each
// event's hash covers the one before it in its tenant's chain (events of
// no tenant form the chain ""). The heads of the batch's chains are read
// in the feed's transaction (Prepare) and the batch's links and new heads
// are written with its checkpoint, so each event is chained exactly once
// and a decision never waits for the chain. Each chain's Merkle tree
// grows with it (tree.go): its frontier is read with the heads, and each
// link is written with the tree hashes its leaf adds. onChained, if set,
// is called for each event chained, with its recorded time (the lag
// metric).
func Chainer(onChained func(recordedAt time.Time)) eventstore.Consumer {
	var heads map[string]head
	// grown keeps each chain's head and tree as the last batch left them,
	// so that the next batch reads no frontier from the database while
	// its head is still that one. A batch rolled back, or chained by
	// another process meanwhile, leaves a head that does not match: the
	// frontier is read again.
	grown := map[string]head{}
	return eventstore.Consumer{
		Name: ChainConsumer,
		Prepare: func(ctx context.Context, tx pg.Querier, _ eventstore.Checkpoint, events []eventstore.Delivery) error {
			chains := map[string]bool{}
			var names []string
			for _, d := range events {
				if c := d.Metadata.TenantID; !chains[c] {
					chains[c] = true
					names = append(names, c)
				}
			}
			var err error
			if heads, err = readHeads(ctx, tx, names); err != nil {
				return err
			}
			unknown := map[string]head{}
			for chain, h := range heads {
				if g, ok := grown[chain]; ok && g.seq == h.seq && g.hash == h.hash && g.tree.Size() == h.seq {
					h.tree = g.tree
					heads[chain] = h
				} else {
					unknown[chain] = h
				}
			}
			if err := readTrees(ctx, tx, unknown); err != nil {
				return err
			}
			maps.Copy(heads, unknown)
			return nil
		},
		Apply: func(_ context.Context, b *pgx.Batch, events []eventstore.Delivery) error {
			n := len(events)
			positions, seqs := make([]int64, n), make([]int64, n)
			chains := make([]string, n)
			prevs, hashes, trees := make([][]byte, n), make([][]byte, n), make([][]byte, n)
			for i, d := range events {
				chain := d.Metadata.TenantID
				h, ok := heads[chain]
				if !ok {
					h = head{hash: ZeroHash, tree: NewBuilder()}
				}
				line := Line{Seq: h.seq + 1, Record: RecordOf(d.Event), PrevHash: h.hash}
				sum, err := line.Sum()
				if err != nil {
					return fmt.Errorf("chain event %d: %w", d.Position, err)
				}
				positions[i], chains[i], seqs[i] = d.Position, chain, line.Seq
				prevs[i], _ = hex.DecodeString(h.hash)
				hashes[i], _ = hex.DecodeString(sum)
				stored, err := h.tree.Add(LeafHash(hashes[i]))
				if err != nil {
					return fmt.Errorf("grow the tree of chain %q: %w", chain, err)
				}
				trees[i] = joinHashes(stored)
				heads[chain] = head{seq: line.Seq, hash: sum, tree: h.tree}
				if onChained != nil {
					onChained(d.RecordedAt)
				}
			}
			queueLinks(b, positions, chains, seqs, prevs, hashes, trees)
			if len(grown) > maxGrown {
				clear(grown)
			}
			for _, chain := range chains {
				grown[chain] = heads[chain]
			}
			return nil
		},
	}
}

// maxGrown bounds how many chains' trees the chainer keeps between
// batches (a frontier is at most 64 hashes).
const maxGrown = 10_000

// readTrees reads the frontier of each head's tree, all in one statement.
// A chain whose links were chained before the tree existed and are not
// backfilled yet gets its tree built first, in tx.
func readTrees(ctx context.Context, tx pg.Querier, heads map[string]head) error {
	if len(heads) == 0 {
		return nil
	}
	var chains []string
	var seqs []int64
	for chain, h := range heads {
		for _, idx := range frontier(h.seq) {
			leaf, _ := leafOf(idx)
			chains, seqs = append(chains, chain), append(seqs, leaf+1)
		}
	}
	rows, err := tx.Query(ctx, `SELECT c.chain, c.seq, c.tree_hashes FROM audit_chain c
		JOIN unnest($1::text[], $2::bigint[]) AS f(chain, seq) ON c.chain = f.chain COLLATE "C" AND c.seq = f.seq`, chains, seqs)
	if err != nil {
		return fmt.Errorf("read the chains' trees: %w", err)
	}
	stored := map[string]map[int64][]byte{}
	var chain string
	var seq int64
	var tree []byte
	_, err = pgx.ForEachRow(rows, []any{&chain, &seq, &tree}, func() error {
		if stored[chain] == nil {
			stored[chain] = map[int64][]byte{}
		}
		stored[chain][seq] = tree
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the chains' trees: %w", err)
	}
	for chain, h := range heads {
		hashes, err := frontierOf(h.seq, stored[chain])
		if errors.Is(err, ErrTreeIncomplete) {
			if _, err = fillTree(ctx, tx, chain, 0); err == nil {
				h.tree, err = resumeTree(ctx, tx, chain, h.seq)
			}
		} else if err == nil {
			h.tree = resume(h.seq, hashes)
		}
		if err != nil {
			return fmt.Errorf("chain %q: %w", chain, err)
		}
		heads[chain] = h
	}
	return nil
}
