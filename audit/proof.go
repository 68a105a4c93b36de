package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrNoCheckpoint means no checkpoint of a tenant's tree was signed (yet,
// or at the size asked for).
var ErrNoCheckpoint = errors.New("no signed checkpoint")

// ErrBeyondTree means a seq or size past the tree's (or the checkpoint's)
// size.
var ErrBeyondTree = errors.New("beyond the tree")

// ErrLinkMissing means the chain has no event at a seq within its tree:
// it was removed (opsgate audit verify names it).
var ErrLinkMissing = errors.New("the chain has no event at that seq")

// Signed is a signed checkpoint as served: its note and what it says.
type Signed struct {
	Note []byte
	Size int64
}

// LatestCheckpoint returns chain's latest signed checkpoint.
func (h *History) LatestCheckpoint(ctx context.Context, chain string) (Signed, error) {
	return h.checkpoint(ctx, `SELECT note, size FROM audit_checkpoints WHERE chain = $1 ORDER BY size DESC LIMIT 1`, chain)
}

// CheckpointAt returns chain's checkpoint signed at size.
func (h *History) CheckpointAt(ctx context.Context, chain string, size int64) (Signed, error) {
	return h.checkpoint(ctx, `SELECT note, size FROM audit_checkpoints WHERE chain = $1 AND size = $2`, chain, size)
}

func (h *History) checkpoint(ctx context.Context, query string, args ...any) (Signed, error) {
	var s Signed
	var text string
	err := h.pool.QueryRow(ctx, query, args...).Scan(&text, &s.Size)
	if errors.Is(err, pgx.ErrNoRows) {
		return Signed{}, ErrNoCheckpoint
	}
	if err != nil {
		return Signed{}, fmt.Errorf("read the checkpoint of chain %q: %w", args[0], err)
	}
	s.Note = []byte(text)
	return s, nil
}

// Proof is the inclusion proof of one event in a tenant's tree, with the
// signed checkpoint of that tree: all an auditor needs to check the event
// offline (VerifyProof). Event is the event's export line.
type Proof struct {
	Event      json.RawMessage `json:"event"`
	LeafIndex  int64           `json:"leaf_index"`
	TreeSize   int64           `json:"tree_size"`
	Hashes     []tlog.Hash     `json:"hashes"`
	Checkpoint string          `json:"checkpoint"`
}

// Prove returns the proof that the event of seq is in chain's tree of
// size leaves, a size at which a checkpoint was signed (0: the latest).
func (h *History) Prove(ctx context.Context, chain string, seq, size int64) (Proof, error) {
	var cp Signed
	var err error
	if size > 0 {
		cp, err = h.CheckpointAt(ctx, chain, size)
	} else {
		cp, err = h.LatestCheckpoint(ctx, chain)
	}
	if err != nil {
		return Proof{}, err
	}
	if seq > cp.Size {
		return Proof{}, fmt.Errorf("seq %d of a tree of %d: %w", seq, cp.Size, ErrBeyondTree)
	}
	line, err := h.lineAt(ctx, chain, seq)
	if err != nil {
		return Proof{}, err
	}
	hashes, err := tlog.ProveRecord(cp.Size, seq-1, treeReader{ctx, h.pool, chain})
	if err != nil {
		return Proof{}, fmt.Errorf("prove seq %d of chain %q: %w", seq, chain, err)
	}
	event, err := json.Marshal(line)
	if err != nil {
		return Proof{}, err
	}
	return Proof{Event: event, LeafIndex: seq - 1, TreeSize: cp.Size, Hashes: hashes, Checkpoint: string(cp.Note)}, nil
}

// lineAt returns the event of seq in chain as an export carries it.
func (h *History) lineAt(ctx context.Context, chain string, seq int64) (Line, error) {
	for l, err := range h.lines(ctx, chain, seq-1, 1) {
		if err == nil && l.Seq != seq {
			break // removed from the chain: opsgate audit verify names it
		}
		return l, err
	}
	return Line{}, fmt.Errorf("seq %d of chain %q: %w", seq, chain, ErrLinkMissing)
}

// Consistency is the proof that a tenant's tree of from leaves is a
// prefix of its tree of to leaves.
type Consistency struct {
	From   int64       `json:"from"`
	To     int64       `json:"to"`
	Hashes []tlog.Hash `json:"hashes"`
}

// ProveConsistency returns the proof that chain's tree of from leaves is
// a prefix of its tree of to leaves (1 <= from <= to <= the tree's size).
func (h *History) ProveConsistency(ctx context.Context, chain string, from, to int64) (Consistency, error) {
	head, err := h.HeadOf(ctx, chain)
	if err != nil {
		return Consistency{}, err
	}
	if to > head.Seq {
		return Consistency{}, fmt.Errorf("size %d of a tree of %d: %w", to, head.Seq, ErrBeyondTree)
	}
	c := Consistency{From: from, To: to, Hashes: []tlog.Hash{}}
	if from < to {
		if c.Hashes, err = tlog.ProveTree(to, from, treeReader{ctx, h.pool, chain}); err != nil {
			return Consistency{}, fmt.Errorf("prove size %d against %d of chain %q: %w", from, to, chain, err)
		}
	}
	return c, nil
}

// VerifyProof checks a proof (as GET /api/v1/audit/proof answers it) with
// nothing else: the checkpoint is signed by v and is of the event's
// tenant, the event hashes to its hash, and the proof leads from its leaf
// to the checkpoint's root. It returns the checkpoint, or an error saying
// what does not hold.
func VerifyProof(raw []byte, v note.Verifier) (Checkpoint, error) {
	var p Proof
	if err := json.Unmarshal(raw, &p); err != nil {
		return Checkpoint{}, fmt.Errorf("not a proof: %w", err)
	}
	if len(p.Event) == 0 || p.Checkpoint == "" {
		return Checkpoint{}, errors.New("not a proof: it needs event, leaf_index, tree_size, hashes and checkpoint")
	}
	cp, err := OpenCheckpoint([]byte(p.Checkpoint), v)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	event := lineLink(1, p.Event)
	var format *FormatError
	if errors.As(event.err, &format) {
		return cp, fmt.Errorf("event: %s", format.Why)
	}
	if event.err != nil {
		return cp, fmt.Errorf("event: %w", event.err)
	}
	var md struct {
		Metadata struct {
			TenantID string `json:"tenant_id"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(p.Event, &md)
	switch {
	case !strings.HasSuffix(cp.Origin, "/"+md.Metadata.TenantID) || md.Metadata.TenantID == "":
		return cp, fmt.Errorf("the checkpoint is of origin %q, not of the event's tenant %q", cp.Origin, md.Metadata.TenantID)
	case cp.Size != p.TreeSize:
		return cp, fmt.Errorf("the checkpoint is of a tree of %d leaves, the proof of one of %d", cp.Size, p.TreeSize)
	case p.LeafIndex != event.seq-1:
		return cp, fmt.Errorf("the proof is of leaf %d, but the event's seq %d is leaf %d", p.LeafIndex, event.seq, event.seq-1)
	case event.sum != event.recorded:
		return cp, fmt.Errorf("the event does not hash to its hash: recorded %s, recomputed %s; it was changed", event.recorded, event.sum)
	}
	hash, err := hex.DecodeString(event.recorded)
	if err != nil || len(hash) != 32 {
		return cp, fmt.Errorf("the event's hash %q is not 64 hex digits", event.recorded)
	}
	if err := tlog.CheckRecord(p.Hashes, cp.Size, cp.Root, p.LeafIndex, LeafHash(hash)); err != nil {
		return cp, fmt.Errorf("the proof does not lead from the event (leaf %d) to the checkpoint's root: the event is not in that tree", p.LeafIndex)
	}
	return cp, nil
}
