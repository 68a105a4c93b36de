package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
}

// verifier follows a chain link by link.
type verifier struct {
	Verified
	lastPosition int64
}

// next checks the link at seq: that it follows the one before and links
// to its hash, and that its content (recomputed) hashes to what was
// recorded.
func (v *verifier) next(line int, seq, position int64, prev, recorded, recomputed string) error {
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
	v.Events++
	v.LastSeq, v.Head, v.lastPosition = seq, recomputed, position
	return nil
}

// VerifyChain recomputes chain from the database (events and their
// links) and returns what it verified, or the first *Mismatch.
func (h *History) VerifyChain(ctx context.Context, chain string) (Verified, error) {
	var v verifier
	for l, err := range h.Lines(ctx, chain, 0) {
		if err != nil {
			return v.Verified, err
		}
		sum, err := l.Sum()
		if err != nil {
			return v.Verified, &Mismatch{Seq: l.Seq, Position: l.Position, Why: err.Error()}
		}
		if err := v.next(0, l.Seq, l.Position, l.PrevHash, l.Hash, sum); err != nil {
			return v.Verified, err
		}
	}
	head, err := h.HeadOf(ctx, chain)
	if err != nil {
		return v.Verified, err
	}
	if head.Seq != v.LastSeq || (v.Events > 0 && head.Hash != v.Head) {
		return v.Verified, &Mismatch{Seq: head.Seq, Position: head.Position,
			Why: fmt.Sprintf("the chain's head is seq %d (hash %s), but its last event is seq %d (hash %s): events at its end are missing", head.Seq, head.Hash, v.LastSeq, v.Head)}
	}
	return v.Verified, nil
}

// VerifyFile recomputes the chain of an export (NDJSON, one event a line,
// in chain order) and returns what it verified, the first *Mismatch, or a
// *FormatError when r is not such an export. Each line's hash is
// recomputed from the line itself, every member but hash included, as an
// auditor would with any other language.
func VerifyFile(r io.Reader) (Verified, error) {
	var v verifier
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		raw, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return v.Verified, fmt.Errorf("read line %d: %w", n, err)
		}
		if line := bytes.TrimSpace(raw); len(line) > 0 {
			if err := v.line(n, line); err != nil {
				return v.Verified, err
			}
		}
		if errors.Is(err, io.EOF) {
			return v.Verified, nil
		}
	}
}

func (v *verifier) line(n int, raw []byte) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return &FormatError{Line: n, Why: "not a JSON object: " + err.Error()}
	}
	var link struct {
		Seq      *int64  `json:"seq"`
		Position *int64  `json:"position"`
		PrevHash *string `json:"prev_hash"`
		Hash     *string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &link); err != nil {
		return &FormatError{Line: n, Why: err.Error()}
	}
	switch {
	case link.Seq == nil:
		return &FormatError{Line: n, Why: "it has no seq"}
	case link.Position == nil:
		return &FormatError{Line: n, Why: "it has no position"}
	case link.PrevHash == nil:
		return &FormatError{Line: n, Why: "it has no prev_hash"}
	case link.Hash == nil:
		return &FormatError{Line: n, Why: "it has no hash"}
	}
	delete(members, "hash")
	content, err := json.Marshal(members)
	if err != nil {
		return &FormatError{Line: n, Why: err.Error()}
	}
	sum, err := sumCanonical(content)
	if err != nil {
		return &Mismatch{Seq: *link.Seq, Position: *link.Position, Line: n, Why: err.Error()}
	}
	return v.next(n, *link.Seq, *link.Position, *link.PrevHash, *link.Hash, sum)
}
