package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

// testChainHash is the (made up) chain hash of leaf i: sha256 of some
// deterministic bytes.
func testChainHash(i int64) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "opsgate test leaf %d", i))
	return sum[:]
}

// storedTree is a tree grown with a Builder that also keeps every hash
// the builder stores (what the audit_chain rows hold), so that proofs can
// be read from it.
type storedTree struct {
	b      *Builder
	all    map[int64]tlog.Hash // every stored hash, by stored hash index
	bySeq  map[int64][]byte    // the tree_hashes column, by seq (leaf+1)
	perAdd [][]tlog.Hash       // what Add returned, by leaf
}

func newStoredTree() *storedTree {
	return &storedTree{b: NewBuilder(), all: map[int64]tlog.Hash{}, bySeq: map[int64][]byte{}}
}

func (s *storedTree) add(t testing.TB, leaf tlog.Hash) []tlog.Hash {
	t.Helper()
	n := s.b.Size()
	stored, err := s.b.Add(leaf)
	if err != nil {
		t.Fatalf("add leaf %d: %v", n, err)
	}
	first := tlog.StoredHashIndex(0, n)
	for k, h := range stored {
		s.all[first+int64(k)] = h
	}
	s.bySeq[n+1] = joinHashes(stored)
	s.perAdd = append(s.perAdd, stored)
	return stored
}

// ReadHashes reads every stored hash (tlog.HashReader).
func (s *storedTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := s.all[idx]
		if !ok {
			return nil, fmt.Errorf("no stored hash %d", idx)
		}
		out[i] = h
	}
	return out, nil
}

func byteSlices(hashes []tlog.Hash) [][]byte {
	out := make([][]byte, len(hashes))
	for i := range hashes {
		out[i] = hashes[i][:]
	}
	return out
}

// sampleBelow returns the values in [0, n) to check: all of them up to
// 64, else the first, the last, the middle and a few random others.
func sampleBelow(r *rand.Rand, n int64) []int64 {
	if n <= 64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(i)
		}
		return out
	}
	out := []int64{0, n - 1, n / 2, n/2 - 1}
	for range 5 {
		out = append(out, r.Int64N(n))
	}
	return out
}

func TestTreeLeafHashIsRFC6962(t *testing.T) {
	for i := range int64(10) {
		h := testChainHash(i)
		want := rfc6962.DefaultHasher.HashLeaf(h)
		got := LeafHash(h)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("LeafHash(%x) = %x, RFC 6962 says %x", h, got, want)
		}
	}
}

// TestTreeMatchesReference grows a tree to 600 leaves and checks, at
// every size, its root, its inclusion proofs and its consistency proofs
// against github.com/transparency-dev/merkle, an independent RFC 6962
// implementation; and that the builder keeps only its frontier.
func TestTreeMatchesReference(t *testing.T) {
	const maxSize = 600
	hasher := rfc6962.DefaultHasher
	factory := &compact.RangeFactory{Hash: hasher.HashChildren}
	ref := factory.NewEmptyRange(0)
	tree := newStoredTree()
	r := rand.New(rand.NewPCG(6962, 1))
	roots := map[int64][]byte{} // the reference's root at each size
	var leaves []tlog.Hash

	for n := int64(1); n <= maxSize; n++ {
		chainHash := testChainHash(n - 1)
		leaf := LeafHash(chainHash)
		leaves = append(leaves, leaf)
		stored := tree.add(t, leaf)
		if err := ref.Append(leaf[:], nil); err != nil {
			t.Fatal(err)
		}

		// The hashes Add stores are the ones tlog stores for that record.
		want, err := tlog.StoredHashes(n-1, chainHash, tree)
		if err != nil {
			t.Fatalf("size %d: tlog.StoredHashes: %v", n, err)
		}
		if !slices.Equal(stored, want) {
			t.Fatalf("size %d: Add stored %v, tlog.StoredHashes says %v", n, stored, want)
		}

		// The root is the reference's.
		refRoot, err := ref.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		roots[n] = refRoot
		root := tree.b.Root()
		if !bytes.Equal(root[:], refRoot) {
			t.Fatalf("size %d: root %x, reference root %x", n, root, refRoot)
		}
		if full, err := tlog.TreeHash(n, tree); err != nil || full != root {
			t.Fatalf("size %d: root %x from the frontier, %x (%v) from every stored hash", n, root, full, err)
		}
		if tree.b.Size() != n {
			t.Fatalf("size %d: Size() = %d", n, tree.b.Size())
		}

		// Constant memory: the builder keeps its frontier and nothing else.
		if len(tree.b.hashes) > 64 || len(tree.b.hashes) != bits.OnesCount64(uint64(n)) {
			t.Fatalf("size %d: the builder keeps %d hashes, want %d (its frontier)", n, len(tree.b.hashes), bits.OnesCount64(uint64(n)))
		}
		for _, idx := range frontier(n) {
			if h, ok := tree.b.hashes[idx]; !ok || h != tree.all[idx] {
				t.Fatalf("size %d: frontier hash %d is %x (kept: %v), stored %x", n, idx, h, ok, tree.all[idx])
			}
		}

		// Inclusion proofs verify with the reference.
		for _, i := range sampleBelow(r, n) {
			p, err := tlog.ProveRecord(n, i, tree)
			if err != nil {
				t.Fatalf("size %d: prove leaf %d: %v", n, i, err)
			}
			if err := proof.VerifyInclusion(hasher, uint64(i), uint64(n), leaves[i][:], byteSlices(p), refRoot); err != nil {
				t.Fatalf("size %d: the reference refuses the inclusion proof of leaf %d: %v", n, i, err)
			}
			if err := tlog.CheckRecord(p, n, root, i, leaves[i]); err != nil {
				t.Fatalf("size %d: tlog refuses its own inclusion proof of leaf %d: %v", n, i, err)
			}
		}
		// ... and the reference is not fooled by another leaf.
		i := r.Int64N(n)
		p, err := tlog.ProveRecord(n, i, tree)
		if err != nil {
			t.Fatal(err)
		}
		other := leaves[(i+1)%n]
		if n == 1 {
			other = LeafHash([]byte("not a leaf"))
		}
		if proof.VerifyInclusion(hasher, uint64(i), uint64(n), other[:], byteSlices(p), refRoot) == nil {
			t.Fatalf("size %d: the reference accepts the proof of leaf %d for another leaf", n, i)
		}

		// Consistency proofs verify with the reference.
		for _, m := range sampleBelow(r, n) {
			if m == 0 {
				continue
			}
			p, err := tlog.ProveTree(n, m, tree)
			if err != nil {
				t.Fatalf("prove size %d against size %d: %v", m, n, err)
			}
			if err := proof.VerifyConsistency(hasher, uint64(m), uint64(n), byteSlices(p), roots[m], refRoot); err != nil {
				t.Fatalf("the reference refuses the consistency proof of size %d in size %d: %v", m, n, err)
			}
			var older, newer tlog.Hash
			copy(older[:], roots[m])
			copy(newer[:], refRoot)
			if err := CheckConsistency(Checkpoint{Size: m, Root: older}, Checkpoint{Size: n, Root: newer}, p); err != nil {
				t.Fatalf("CheckConsistency refuses size %d in size %d: %v", m, n, err)
			}
		}
	}
}

// TestTreeResume checks that a tree resumed from the frontier read back
// from the tree_hashes rows grows as the uninterrupted tree does.
func TestTreeResume(t *testing.T) {
	const size = 300
	whole := newStoredTree()
	roots := []tlog.Hash{NewBuilder().Root()}
	for i := range int64(size) {
		whole.add(t, LeafHash(testChainHash(i)))
		roots = append(roots, whole.b.Root())
	}

	r := rand.New(rand.NewPCG(1, 2))
	splits := []int64{0, 1, 2, 3, 4, 7, 8, 63, 64, 65, 127, 128, 255, 256, size - 1, size}
	for range 20 {
		splits = append(splits, r.Int64N(size+1))
	}
	for _, split := range splits {
		// Only the rows of the leaves before the split exist.
		rows := map[int64][]byte{}
		for seq := int64(1); seq <= split; seq++ {
			rows[seq] = whole.bySeq[seq]
		}
		hashes, err := hashesAt(frontier(split), rows)
		if err != nil {
			t.Fatalf("split %d: read the frontier: %v", split, err)
		}
		if viaFrontierOf, err := frontierOf(split, rows); err != nil || !slices.Equal(viaFrontierOf, hashes) {
			t.Fatalf("split %d: frontierOf %v (%v), hashesAt %v", split, viaFrontierOf, err, hashes)
		}
		b := resume(split, hashes)
		if b.Size() != split || b.Root() != roots[split] {
			t.Fatalf("split %d: resumed at size %d root %s, want root %s", split, b.Size(), b.Root(), roots[split])
		}
		for i := split; i < size; i++ {
			stored, err := b.Add(LeafHash(testChainHash(i)))
			if err != nil {
				t.Fatalf("split %d: add leaf %d: %v", split, i, err)
			}
			if !slices.Equal(stored, whole.perAdd[i]) {
				t.Fatalf("split %d: leaf %d stores %v, the uninterrupted tree %v", split, i, stored, whole.perAdd[i])
			}
		}
		if b.Size() != size || b.Root() != roots[size] {
			t.Fatalf("split %d: resumed tree ends at size %d root %s, the uninterrupted one at root %s", split, b.Size(), b.Root(), roots[size])
		}
	}
}

// TestTreeLeafOf checks that leafOf inverts tlog.StoredHashIndex: the
// stored hash (level, n) is kept by the leaf that completes that subtree,
// at its place level.
func TestTreeLeafOf(t *testing.T) {
	for level := range 12 {
		for n := int64(0); n < 300; n++ {
			idx := tlog.StoredHashIndex(level, n)
			leaf, place := leafOf(idx)
			if want := (n+1)<<level - 1; leaf != want || place != level {
				t.Fatalf("leafOf(StoredHashIndex(%d, %d) = %d) = leaf %d place %d, want leaf %d place %d", level, n, idx, leaf, place, want, level)
			}
		}
	}
	// And the k-th hash the leaf n stores is at StoredHashIndex(0, n)+k.
	tree := newStoredTree()
	for n := range int64(200) {
		stored := tree.add(t, LeafHash(testChainHash(n)))
		for k := range stored {
			leaf, place := leafOf(tlog.StoredHashIndex(0, n) + int64(k))
			if leaf != n || place != k {
				t.Fatalf("hash %d of leaf %d: leafOf says leaf %d place %d", k, n, leaf, place)
			}
		}
	}
}

func TestTreeHashesAtIncomplete(t *testing.T) {
	tree := newStoredTree()
	for i := range int64(8) {
		tree.add(t, LeafHash(testChainHash(i)))
	}
	// Leaf 7 (seq 8) stores 4 hashes: its leaf hash and levels 1 to 3.
	top := tlog.StoredHashIndex(3, 0)
	if got, err := hashesAt([]int64{top}, tree.bySeq); err != nil || got[0] != tree.all[top] {
		t.Fatalf("a complete row: %v, %v", got, err)
	}
	without := func(seq int64) map[int64][]byte {
		rows := maps.Clone(tree.bySeq)
		delete(rows, seq)
		return rows
	}
	with := func(seq int64, row []byte) map[int64][]byte {
		rows := maps.Clone(tree.bySeq)
		rows[seq] = row
		return rows
	}
	for _, c := range []struct {
		name    string
		indexes []int64
		rows    map[int64][]byte
	}{
		{"no rows", []int64{0}, map[int64][]byte{}},
		{"a missing row", []int64{tlog.StoredHashIndex(0, 2), top}, without(8)},
		{"a row without tree hashes (not backfilled)", []int64{top}, with(8, nil)},
		{"a row one hash short", []int64{top}, with(8, tree.bySeq[8][:3*tlog.HashSize])},
		{"a row one byte short", []int64{top}, with(8, tree.bySeq[8][:4*tlog.HashSize-1])},
		{"a row of the leaf hash only", []int64{tlog.StoredHashIndex(1, 0)}, with(2, tree.bySeq[2][:tlog.HashSize])},
	} {
		if got, err := hashesAt(c.indexes, c.rows); !errors.Is(err, ErrTreeIncomplete) {
			t.Errorf("%s: %v, %v; want ErrTreeIncomplete", c.name, got, err)
		}
	}
}

func TestCheckConsistency(t *testing.T) {
	tree := newStoredTree()
	roots := map[int64]tlog.Hash{}
	for i := range int64(20) {
		tree.add(t, LeafHash(testChainHash(i)))
		roots[i+1] = tree.b.Root()
	}
	at := func(size int64) Checkpoint { return Checkpoint{Origin: "opsgate/T", Size: size, Root: roots[size]} }
	prove := func(newer, older int64) tlog.TreeProof {
		p, err := tlog.ProveTree(newer, older, tree)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rewritten := at(7)
	rewritten.Root[0] ^= 1
	otherRoot := at(20)
	otherRoot.Root[31] ^= 0x80

	for _, c := range []struct {
		name          string
		older, newer  Checkpoint
		proof         tlog.TreeProof
		ok            bool
		extendsToo    bool // Extends, reading the tree, says the same
		extendsReader tlog.HashReader
	}{
		{"consistent", at(7), at(20), prove(20, 7), true, true, tree},
		{"consistent, a power of two", at(16), at(20), prove(20, 16), true, true, tree},
		{"consistent, one leaf more", at(19), at(20), prove(20, 19), true, true, tree},
		{"from the empty tree", Checkpoint{Origin: "opsgate/T"}, at(20), nil, true, true, tree},
		{"a rewritten older root", rewritten, at(20), prove(20, 7), false, true, tree},
		{"the proof of another size", at(7), at(20), prove(20, 8), false, false, nil},
		{"a truncated proof", at(7), at(20), prove(20, 7)[1:], false, false, nil},
		{"shrinking", at(20), at(7), prove(20, 7), false, true, tree},
		{"shrinking, no proof", at(20), at(7), nil, false, true, tree},
		{"same size, different roots", at(20), otherRoot, nil, false, true, tree},
		{"same size, same root", at(20), at(20), nil, true, true, tree},
	} {
		err := CheckConsistency(c.older, c.newer, c.proof)
		if (err == nil) != c.ok {
			t.Errorf("%s: CheckConsistency: %v, want ok=%v", c.name, err, c.ok)
		}
		if c.extendsToo {
			if err := Extends(c.older, c.newer, c.extendsReader); (err == nil) != c.ok {
				t.Errorf("%s: Extends: %v, want ok=%v", c.name, err, c.ok)
			}
		}
	}
}
