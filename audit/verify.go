package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Mismatch is the first event of a chain that does not verify.
type Mismatch struct {
	Seq      int64
	Position int64
	Line     int // the line of the export file (0 against the database)
	Why      string
}

func (m *Mismatch) Error() string {
	where := fmt.Sprintf("event at position %d (seq %d)", m.Position, m.Seq)
	if m.Position == 0 {
		where = fmt.Sprintf("seq %d", m.Seq)
	}
	if m.Line > 0 {
		where = fmt.Sprintf("line %d, %s", m.Line, where)
	}
	return where + ": " + m.Why
}

// FormatError means an export file is not an NDJSON export of events.
type FormatError struct {
	Line int
	Why  string
}

func (e *FormatError) Error() string {
	if e.Line == 0 {
		return "not an export of events: " + e.Why
	}
	return fmt.Sprintf("line %d is not an exported event: %s", e.Line, e.Why)
}

// Verified is what a verification covered.
type Verified struct {
	Events   int
	FirstSeq int64 // the first event's seq: above 1, its prev_hash was taken on trust
	LastSeq  int64
	Head     string // the hash of the last event verified
	// Checkpoint is the size of the checkpoint whose root the tree was
	// found to reach (0: none checked).
	Checkpoint int64
}

// verifier follows a chain link by link, and rebuilds its tree.
type verifier struct {
	Verified
	lastPosition int64
	kept         *Head // a digest kept earlier, outside: the chain must hold it
	keptSeen     bool
	tree         *Builder
	// stored: the links carry their stored tree hashes (from the
	// database), which must be the ones the chain gives.
	stored bool
	// checkpoint, if set, is a checkpoint the tree must reach.
	checkpoint     *Checkpoint
	checkpointSeen bool
}

// keptHeld checks, at the end of a pass, that the pass met the kept
// digest.
func (v *verifier) keptHeld() error {
	if c := v.checkpoint; c != nil && !v.checkpointSeen {
		return &Mismatch{Seq: c.Size, Why: fmt.Sprintf("the chain ends at seq %d, before the checkpoint's tree size %d: events the checkpoint covers are missing", v.LastSeq, c.Size)}
	}
	if v.kept == nil || v.keptSeen {
		return nil
	}
	if v.Events > 0 && v.kept.Seq < v.FirstSeq {
		return &Mismatch{Seq: v.kept.Seq, Position: v.kept.Position, Why: fmt.Sprintf(
			"the export starts at seq %d, after the kept digest's seq %d: export from an earlier position to check it", v.FirstSeq, v.kept.Seq)}
	}
	return &Mismatch{Seq: v.kept.Seq, Position: v.kept.Position, Why: fmt.Sprintf(
		"the chain ends at seq %d, before the kept digest's seq %d: events recorded before the digest was kept are gone", v.LastSeq, v.kept.Seq)}
}

// next checks the link at seq: that it follows the one before and links
// to its hash, that its content (recomputed) hashes to what was recorded,
// and that the tree grown by it holds (growTree).
func (v *verifier) next(l link) error {
	line, seq, position, prev, recorded, recomputed := l.line, l.seq, l.position, l.prev, l.recorded, l.sum
	fail := func(format string, args ...any) error {
		return &Mismatch{Seq: seq, Position: position, Line: line, Why: fmt.Sprintf(format, args...)}
	}
	switch {
	case v.Events == 0 && seq == 1 && prev != ZeroHash:
		return fail("the first event of a chain must link to the zero hash, not %s", prev)
	case v.Events == 0:
		v.FirstSeq = seq
	case seq != v.LastSeq+1:
		return fail("seq jumps from %d to %d: %d event(s) after position %d are missing", v.LastSeq, seq, seq-v.LastSeq-1, v.lastPosition)
	case prev != v.Head:
		return fail("it does not link to the event before it (position %d): prev_hash is %s, but that event hashes to %s", v.lastPosition, prev, v.Head)
	}
	if recomputed != recorded {
		return fail("its content does not match its hash: recorded %s, recomputed %s; the event was changed after it was chained", recorded, recomputed)
	}
	if v.kept != nil && seq == v.kept.Seq {
		if recomputed != v.kept.Hash {
			return fail("the kept digest says seq %d hashes to %s, but the chain now hashes to %s there: the chain was rewritten up to this event", seq, v.kept.Hash, recomputed)
		}
		v.keptSeen = true
	}
	if err := v.growTree(l); err != nil {
		return err
	}
	v.Events++
	v.LastSeq, v.Head, v.lastPosition = seq, recomputed, position
	return nil
}

// growTree adds the link's leaf to the tree rebuilt from the chain: the
// tree hashes stored with it must be the ones it adds, and the tree must
// reach the checkpoint's root at its size. The tree is rebuilt only from
// the chain's first event.
func (v *verifier) growTree(l link) error {
	if l.seq != 1 && v.tree == nil {
		if v.checkpoint != nil {
			return &Mismatch{Seq: l.seq, Position: l.position, Line: l.line, Why: "checking a checkpoint needs the whole chain: the export must start at the first event (no after)"}
		}
		return nil
	}
	if v.tree == nil {
		v.tree = NewBuilder()
	}
	fail := func(format string, args ...any) error {
		return &Mismatch{Seq: l.seq, Position: l.position, Line: l.line, Why: fmt.Sprintf(format, args...)}
	}
	hash, _ := hex.DecodeString(l.sum)
	added, err := v.tree.Add(LeafHash(hash))
	if err != nil {
		return fail("grow the tree: %v", err)
	}
	switch {
	case v.stored && l.tree == nil:
		return fail("it has no tree hashes: the tree was not built this far (its backfill is still running)")
	case v.stored && !bytes.Equal(l.tree, joinHashes(added)):
		return fail("the tree hashes stored with it are not the ones its chain hash gives: the tree was changed")
	}
	if c := v.checkpoint; c != nil && l.seq == c.Size {
		if root := v.tree.Root(); root != c.Root {
			return fail("the tree of the first %d events has root %s, but the checkpoint signed at that size says %s: the history is not the one signed", c.Size, root, c.Root)
		}
		v.checkpointSeen, v.Checkpoint = true, c.Size
	}
	return nil
}

// VerifyChain recomputes chain from the database (events and their
// links) and returns what it verified, or the first *Mismatch.
func (h *History) VerifyChain(ctx context.Context, chain string) (Verified, error) {
	return h.verifyChain(ctx, chain, nil)
}

// VerifyChainAgainst is VerifyChain that also checks a digest kept
// earlier outside the database (GET /api/v1/audit/digest): the chain must
// still hash to kept.Hash at kept.Seq. Only such a digest catches a
// rewrite of the whole chain by whoever can write the database.
func (h *History) VerifyChainAgainst(ctx context.Context, chain string, kept Head) (Verified, error) {
	return h.verifyChain(ctx, chain, &kept)
}

func (h *History) verifyChain(ctx context.Context, chain string, kept *Head) (Verified, error) {
	v := verifier{kept: kept, stored: true}
	// The tree must reach the root of the latest checkpoint recorded: read
	// before the chain, which only grows meanwhile.
	var size int64
	var root []byte
	err := h.pool.QueryRow(ctx, `SELECT size, root FROM audit_checkpoints WHERE chain = $1 ORDER BY size DESC LIMIT 1`, chain).Scan(&size, &root)
	switch {
	case err == nil:
		v.checkpoint = &Checkpoint{Size: size}
		copy(v.checkpoint.Root[:], root)
	case !errors.Is(err, pgx.ErrNoRows):
		return Verified{}, fmt.Errorf("read the latest checkpoint of chain %q: %w", chain, err)
	}
	var batch []Line
	check := func() error {
		links := make([]link, len(batch))
		parallel(len(batch), func(i int) {
			l := batch[i]
			links[i] = link{seq: l.Seq, position: l.Position, prev: l.PrevHash, recorded: l.Hash, tree: l.tree}
			if links[i].sum, links[i].err = l.Sum(); links[i].err != nil {
				links[i].err = &Mismatch{Seq: l.Seq, Position: l.Position, Why: links[i].err.Error()}
			}
		})
		batch = batch[:0]
		return v.checkInOrder(links)
	}
	for l, err := range h.Lines(ctx, chain, 0) {
		if err != nil {
			return v.Verified, err
		}
		if batch = append(batch, l); len(batch) == chunk {
			if err := check(); err != nil {
				return v.Verified, err
			}
		}
	}
	if err := check(); err != nil {
		return v.Verified, err
	}
	head, err := h.HeadOf(ctx, chain)
	if err != nil {
		return v.Verified, err
	}
	if head.Seq != v.LastSeq || (v.Events > 0 && head.Hash != v.Head) {
		return v.Verified, &Mismatch{Seq: head.Seq, Position: head.Position,
			Why: fmt.Sprintf("the chain's head is seq %d (hash %s), but its last event is seq %d (hash %s): events at its end are missing", head.Seq, head.Hash, v.LastSeq, v.Head)}
	}
	return v.Verified, v.keptHeld()
}

// VerifyFile recomputes the chain of an export (NDJSON, one event a line,
// in chain order) and returns what it verified, the first *Mismatch, or a
// *FormatError when r is not such an export. Each line's hash is
// recomputed from the line itself, every member but hash included, as an
// auditor would with any other language.
func VerifyFile(r io.Reader) (Verified, error) { return verifyFile(r, verifier{}) }

// VerifyFileAgainst is VerifyFile that also checks a digest kept earlier:
// the export must hash to kept.Hash at kept.Seq.
func VerifyFileAgainst(r io.Reader, kept Head) (Verified, error) {
	return verifyFile(r, verifier{kept: &kept})
}

// VerifyFileCheckpoint is VerifyFile that also checks that the export's
// tree reaches cp's root at cp's size: the export is (up to there) the
// history that was signed. The export must start at the first event.
func VerifyFileCheckpoint(r io.Reader, cp Checkpoint) (Verified, error) {
	return verifyFile(r, verifier{checkpoint: &cp})
}

func verifyFile(r io.Reader, v verifier) (Verified, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var raws [][]byte
	var numbers []int
	check := func() error {
		links := make([]link, len(raws))
		parallel(len(raws), func(i int) { links[i] = lineLink(numbers[i], raws[i]) })
		raws, numbers = raws[:0], numbers[:0]
		return v.checkInOrder(links)
	}
	for n := 1; ; n++ {
		raw, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return v.Verified, fmt.Errorf("read line %d: %w", n, err)
		}
		if line := bytes.TrimSpace(raw); len(line) > 0 {
			raws, numbers = append(raws, line), append(numbers, n)
			if len(raws) == chunk {
				if err := check(); err != nil {
					return v.Verified, err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			if err := check(); err != nil {
				return v.Verified, err
			}
			return v.Verified, v.keptHeld()
		}
	}
}

// chunk is how many links are recomputed together, on every core, before
// they are checked in order.
const chunk = 512

// link is one event of a chain as verification sees it: its place, its
// recorded links, and the hash recomputed from its content (or why that
// failed).
type link struct {
	line          int
	seq, position int64
	prev          string
	recorded, sum string
	tree          []byte // the stored tree hashes (from the database)
	err           error
}

// parallel runs fn(0..n-1) on every core and waits.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// checkInOrder checks recomputed links one after the other; the first
// error (of recomputing or of the chain) is the answer.
func (v *verifier) checkInOrder(links []link) error {
	for _, l := range links {
		if l.err != nil {
			return l.err
		}
		if err := v.next(l); err != nil {
			return err
		}
	}
	return nil
}

// lineLink reads line n of an export: its links, and the hash of the
// line without its hash member, recomputed.
func lineLink(n int, raw []byte) link {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return link{err: &FormatError{Line: n, Why: "not a JSON object: " + err.Error()}}
	}
	var fields struct {
		Seq      *int64  `json:"seq"`
		Position *int64  `json:"position"`
		PrevHash *string `json:"prev_hash"`
		Hash     *string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return link{err: &FormatError{Line: n, Why: err.Error()}}
	}
	switch {
	case fields.Seq == nil:
		return link{err: &FormatError{Line: n, Why: "it has no seq"}}
	case fields.Position == nil:
		return link{err: &FormatError{Line: n, Why: "it has no position"}}
	case fields.PrevHash == nil:
		return link{err: &FormatError{Line: n, Why: "it has no prev_hash"}}
	case fields.Hash == nil:
		return link{err: &FormatError{Line: n, Why: "it has no hash"}}
	}
	l := link{line: n, seq: *fields.Seq, position: *fields.Position, prev: *fields.PrevHash, recorded: *fields.Hash}
	delete(members, "hash")
	content, err := json.Marshal(members)
	if err != nil {
		l.err = &FormatError{Line: n, Why: err.Error()}
		return l
	}
	if l.sum, err = sumCanonical(content); err != nil {
		l.err = &Mismatch{Seq: l.seq, Position: l.position, Line: n, Why: err.Error()}
	}
	return l
}
