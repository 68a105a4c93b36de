package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/opsgate/opsgate/internal/pg"
)

// Each tenant's chain is also a Merkle tree (RFC 6962, as golang.org/x/mod/sumdb/tlog
// computes it): leaf i is the event of seq i+1, its leaf hash SHA-256(0x00
// || its chain hash). The tree is stored in tlog's stored-hash layout,
// where the hashes that adding leaf n stores (its leaf hash, then the
// subtrees it completes, level by level) sit at consecutive indexes: they
// are kept together, concatenated, in the tree_hashes column of the
// leaf's audit_chain row, written by the chainer with the link. A hash
// index is found again through tlog.SplitStoredHashIndex.

// ErrTreeIncomplete means a hash of a tenant's tree is not stored: the
// leaf is not chained yet, or its tree hashes were not backfilled.
var ErrTreeIncomplete = errors.New("the tree's hashes are not all stored")

// LeafHash is the leaf hash of the event whose chain hash is chainHash.
func LeafHash(chainHash []byte) tlog.Hash { return tlog.RecordHash(chainHash) }

// frontier returns the stored hash indexes of the complete subtrees a
// tree of size leaves is made of, left to right: all that adding the
// next leaves, or computing the root, reads of the leaves before.
func frontier(size int64) []int64 {
	var out []int64
	for level := 63; level >= 0; level-- {
		if size&(1<<level) != 0 {
			out = append(out, tlog.StoredHashIndex(level, size>>level-1))
		}
	}
	return out
}

// Builder grows a tree leaf by leaf keeping only its frontier: constant
// memory whatever its size. The chainer grows each chain's tree with one,
// and verification rebuilds trees with one.
type Builder struct {
	size   int64
	hashes map[int64]tlog.Hash
}

// NewBuilder returns a builder of an empty tree.
func NewBuilder() *Builder { return &Builder{hashes: map[int64]tlog.Hash{}} }

// resume returns a builder that continues a tree of size leaves whose
// frontier hashes are hashes (in frontier's order).
func resume(size int64, hashes []tlog.Hash) *Builder {
	b := &Builder{size: size, hashes: make(map[int64]tlog.Hash, len(hashes))}
	for i, idx := range frontier(size) {
		b.hashes[idx] = hashes[i]
	}
	return b
}

// Size is how many leaves the tree has.
func (b *Builder) Size() int64 { return b.size }

// ReadHashes serves the frontier's hashes (tlog.HashReader).
func (b *Builder) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := b.hashes[idx]
		if !ok {
			return nil, fmt.Errorf("tree hash %d is not in the frontier of a tree of %d leaves", idx, b.size)
		}
		out[i] = h
	}
	return out, nil
}

// Add appends a leaf and returns the hashes it stores (tree_hashes).
func (b *Builder) Add(leaf tlog.Hash) ([]tlog.Hash, error) {
	stored, err := tlog.StoredHashesForRecordHash(b.size, leaf, b)
	if err != nil {
		return nil, err
	}
	first := tlog.StoredHashIndex(0, b.size)
	for i, h := range stored {
		b.hashes[first+int64(i)] = h
	}
	b.size++
	// The subtrees just merged are no longer on the frontier.
	keep := frontier(b.size)
	for idx := range b.hashes {
		if !slices.Contains(keep, idx) {
			delete(b.hashes, idx)
		}
	}
	return stored, nil
}

// Root is the tree's root hash.
func (b *Builder) Root() tlog.Hash {
	root, err := tlog.TreeHash(b.size, b)
	if err != nil {
		panic(err) // the frontier is exactly what TreeHash reads
	}
	return root
}

// joinHashes is the tree_hashes column of hashes.
func joinHashes(hashes []tlog.Hash) []byte {
	out := make([]byte, 0, len(hashes)*tlog.HashSize)
	for _, h := range hashes {
		out = append(out, h[:]...)
	}
	return out
}

// leafOf returns the leaf (from 0) whose tree_hashes hold the stored hash
// idx, and its place among them.
func leafOf(idx int64) (leaf int64, place int) {
	level, n := tlog.SplitStoredHashIndex(idx)
	return (n+1)<<level - 1, level
}

// treeReader reads a chain's stored tree hashes through q: a
// tlog.HashReader in one statement per call.
type treeReader struct {
	ctx   context.Context
	q     pg.Querier
	chain string
}

func (r treeReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	seqs := make([]int64, len(indexes))
	for i, idx := range indexes {
		leaf, _ := leafOf(idx)
		seqs[i] = leaf + 1
	}
	rows, err := r.q.Query(r.ctx, `SELECT seq, tree_hashes FROM audit_chain WHERE chain = $1 AND seq = ANY($2::bigint[])`, r.chain, seqs)
	if err != nil {
		return nil, fmt.Errorf("read the tree of chain %q: %w", r.chain, err)
	}
	stored := make(map[int64][]byte, len(seqs))
	var seq int64
	var tree []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &tree}, func() error {
		stored[seq] = tree
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the tree of chain %q: %w", r.chain, err)
	}
	out, err := hashesAt(indexes, stored)
	if err != nil {
		return nil, fmt.Errorf("chain %q: %w", r.chain, err)
	}
	return out, nil
}

// hashesAt picks the stored hashes at indexes out of the tree_hashes of
// their leaves (by seq).
func hashesAt(indexes []int64, stored map[int64][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		leaf, place := leafOf(idx)
		tree := stored[leaf+1]
		if len(tree) < (place+1)*tlog.HashSize {
			return nil, fmt.Errorf("seq %d: %w", leaf+1, ErrTreeIncomplete)
		}
		copy(out[i][:], tree[place*tlog.HashSize:])
	}
	return out, nil
}

// frontierOf picks the frontier of a tree of size leaves out of the
// tree_hashes of its leaves (by seq).
func frontierOf(size int64, stored map[int64][]byte) ([]tlog.Hash, error) {
	return hashesAt(frontier(size), stored)
}

// resumeTree returns the builder of chain's tree at size leaves, its
// frontier read through q.
func resumeTree(ctx context.Context, q pg.Querier, chain string, size int64) (*Builder, error) {
	hashes, err := treeReader{ctx, q, chain}.ReadHashes(frontier(size))
	if err != nil {
		return nil, err
	}
	return resume(size, hashes), nil
}

// fillBatch is how many leaves a backfill computes per statement, and
// per transaction.
const fillBatch = 5000

// fillTree computes and stores the tree hashes of chain's links that have
// none (links chained before the tree existed), in seq order, through q,
// up to limit leaves (0: all). The links before the first without are
// complete, so that is where the tree resumes: a backfill cut short
// continues where it stopped.
func fillTree(ctx context.Context, q pg.Querier, chain string, limit int64) (filled int64, err error) {
	var first int64
	err = q.QueryRow(ctx, `SELECT coalesce(min(seq), 0) FROM audit_chain WHERE chain = $1 AND tree_hashes IS NULL`, chain).Scan(&first)
	if err != nil || first == 0 {
		return 0, wrapFill(chain, err)
	}
	b, err := resumeTree(ctx, q, chain, first-1)
	if err != nil {
		return 0, wrapFill(chain, err)
	}
	for limit == 0 || filled < limit {
		n := int64(fillBatch)
		if limit > 0 {
			n = min(n, limit-filled)
		}
		seqs, trees, err := growFrom(ctx, q, chain, b, n)
		if err != nil || len(seqs) == 0 {
			return filled, wrapFill(chain, err)
		}
		// A link's tree hashes are written once (the audit_chain trigger
		// refuses any other change).
		tag, err := q.Exec(ctx, `UPDATE audit_chain c SET tree_hashes = t.tree
			FROM unnest($2::bigint[], $3::bytea[]) AS t(seq, tree)
			WHERE c.chain = $1 AND c.seq = t.seq AND c.tree_hashes IS NULL`, chain, seqs, trees)
		if err != nil {
			return filled, wrapFill(chain, err)
		}
		filled += tag.RowsAffected()
	}
	return filled, nil
}

// growFrom adds to b the next n links of chain after b's size, and
// returns their seqs and tree hashes.
func growFrom(ctx context.Context, q pg.Querier, chain string, b *Builder, n int64) (seqs []int64, trees [][]byte, err error) {
	rows, err := q.Query(ctx, `SELECT seq, hash FROM audit_chain WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3`, chain, b.Size(), n)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var hash []byte
		if err := rows.Scan(&seq, &hash); err != nil {
			return nil, nil, err
		}
		if seq != b.Size()+1 {
			return nil, nil, fmt.Errorf("seq %d follows seq %d: the chain has a gap", seq, b.Size())
		}
		stored, err := b.Add(LeafHash(hash))
		if err != nil {
			return nil, nil, err
		}
		seqs, trees = append(seqs, seq), append(trees, joinHashes(stored))
	}
	return seqs, trees, rows.Err()
}

func wrapFill(chain string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("build the tree of chain %q: %w", chain, err)
}

// BackfillTrees builds the trees of chains linked before the tree
// existed, chain by chain, in transactions of fillBatch leaves
// (BuildTree), so that a backfill cut short resumes where it stopped. It
// runs before the chainer in every process that chains; the chainer also
// fills a chain it finds incomplete, in its own transaction.
func (h *History) BackfillTrees(ctx context.Context) (int64, error) {
	var total int64
	for {
		var chain string
		err := h.pool.QueryRow(ctx, `SELECT chain FROM audit_chain WHERE tree_hashes IS NULL LIMIT 1`).Scan(&chain)
		if errors.Is(err, pgx.ErrNoRows) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("find trees to build: %w", err)
		}
		n, err := h.BuildTree(ctx, chain, fillBatch)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// BuildTree builds, in one transaction, the tree hashes of up to limit
// links of chain that have none, from the first without, and returns how
// many it built.
func (h *History) BuildTree(ctx context.Context, chain string, limit int64) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		var err error
		n, err = fillTree(ctx, tx, chain, limit)
		return err
	})
	return n, err
}
