package audit

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// The chain's tables and their SQL: audit_chain holds each event's link in
// its tenant's chain (seq, the hash before it, its own hash), and
// audit_chain_heads each chain's last link. The chainer writes them
// (queueLinks, in the feed's transaction); auditors read them (History).

// SeqOf returns the seq in chain of the event at position (0 for
// position 0: before the first), ErrNotChained if it has none.
func (h *History) SeqOf(ctx context.Context, chain string, position int64) (int64, error) {
	if position <= 0 {
		return 0, nil
	}
	var seq int64
	err := h.pool.QueryRow(ctx, `SELECT seq FROM audit_chain WHERE position = $1 AND chain = $2`, position, chain).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotChained
	}
	if err != nil {
		return 0, fmt.Errorf("find event %d in chain %q: %w", position, chain, err)
	}
	return seq, nil
}

// Lines yields the events of chain after afterSeq, in chain order, with
// their links, from one statement: rows arrive as they are read, so a
// history of any length streams in constant memory. Stop early by
// breaking out of the loop; ending ctx ends the statement.
func (h *History) Lines(ctx context.Context, chain string, afterSeq int64) iter.Seq2[Line, error] {
	return h.lines(ctx, chain, afterSeq, 0)
}

// lines is Lines up to limit lines (0: all), each with its stored tree
// hashes.
func (h *History) lines(ctx context.Context, chain string, afterSeq, limit int64) iter.Seq2[Line, error] {
	return func(yield func(Line, error) bool) {
		rows, err := h.pool.Query(ctx, `SELECT c.seq, e.position, e.event_id, e.stream_id, e.stream_version, e.event_type,
				e.schema_version, e.recorded_at, e.payload, e.metadata, c.prev_hash, c.hash, c.tree_hashes
			FROM audit_chain c JOIN events e ON e.position = c.position
			WHERE c.chain = $1 AND c.seq > $2 ORDER BY c.seq LIMIT nullif($3, 0)`, chain, afterSeq, limit)
		if err != nil {
			yield(Line{}, fmt.Errorf("read chain %q: %w", chain, err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var l Line
			var md eventstore.Metadata
			var prev, hash []byte
			if err := rows.Scan(&l.Seq, &l.Position, &l.EventID, &l.Stream, &l.Version, &l.Type, &l.SchemaVersion,
				&l.RecordedAt, (*[]byte)(&l.Data), &md, &prev, &hash, &l.tree); err != nil {
				yield(Line{}, fmt.Errorf("read chain %q: %w", chain, err))
				return
			}
			l.RecordedAt, l.Metadata = l.RecordedAt.UTC(), Metadata(md)
			l.PrevHash, l.Hash = hexHash(prev), hexHash(hash)
			if !yield(l, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Line{}, fmt.Errorf("read chain %q: %w", chain, err))
		}
	}
}

// Hashed is an event as auditors read it, with its hash in its tenant's
// chain (nil until the chainer linked it).
type Hashed struct {
	Record
	Hash *string `json:"hash"`
}

// WithHashes returns events as auditors read them, with their hashes, in
// one query.
func (h *History) WithHashes(ctx context.Context, events []eventstore.Event) ([]Hashed, error) {
	positions := make([]int64, len(events))
	for i, e := range events {
		positions[i] = e.Position
	}
	hashes, err := h.hashes(ctx, positions)
	if err != nil {
		return nil, err
	}
	out := make([]Hashed, len(events))
	for i, e := range events {
		out[i] = Hashed{Record: RecordOf(e)}
		if hash, ok := hashes[e.Position]; ok {
			out[i].Hash = &hash
		}
	}
	return out, nil
}

// hashes returns the hashes of the events at positions that are chained.
func (h *History) hashes(ctx context.Context, positions []int64) (map[int64]string, error) {
	rows, err := h.pool.Query(ctx, `SELECT position, hash FROM audit_chain WHERE position = ANY($1::bigint[])`, positions)
	if err != nil {
		return nil, fmt.Errorf("read hashes: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]string, len(positions))
	for rows.Next() {
		var p int64
		var hash []byte
		if err := rows.Scan(&p, &hash); err != nil {
			return nil, fmt.Errorf("read hashes: %w", err)
		}
		out[p] = hexHash(hash)
	}
	return out, rows.Err()
}

// Head is the last chained event of a chain: what an auditor keeps to
// detect a later rewrite of the whole chain, and how far the chainer got.
type Head struct {
	Seq      int64  `json:"seq"`
	Position int64  `json:"position"`
	Hash     string `json:"hash"`
}

// HeadOf returns chain's head (zero before its first event).
func (h *History) HeadOf(ctx context.Context, chain string) (Head, error) {
	var hd Head
	var hash []byte
	err := h.pool.QueryRow(ctx, `SELECT seq, position, hash FROM audit_chain_heads WHERE chain = $1`, chain).Scan(&hd.Seq, &hd.Position, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Head{Hash: ZeroHash}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("read the head of chain %q: %w", chain, err)
	}
	hd.Hash = hexHash(hash)
	return hd, nil
}

// readHeads returns the heads of chains, as q sees them (a chain with no
// link yet is absent).
func readHeads(ctx context.Context, q pg.Querier, chains []string) (map[string]head, error) {
	heads := make(map[string]head, len(chains))
	rows, err := q.Query(ctx, `SELECT chain, seq, hash FROM audit_chain_heads WHERE chain = ANY($1::text[])`, chains)
	if err != nil {
		return nil, fmt.Errorf("read chain heads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var chain string
		var h head
		var hash []byte
		if err := rows.Scan(&chain, &h.seq, &hash); err != nil {
			return nil, fmt.Errorf("read chain heads: %w", err)
		}
		h.hash = hexHash(hash)
		heads[chain] = h
	}
	return heads, rows.Err()
}

// queueLinks queues into b the links of a batch of events (by position),
// with the tree hashes of their leaves, and, the last link of each chain being its new head, the heads.
func queueLinks(b *pgx.Batch, positions []int64, chains []string, seqs []int64, prevs, hashes, trees [][]byte) {
	b.Queue(`INSERT INTO audit_chain (position, chain, seq, prev_hash, hash, tree_hashes)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[], $6::bytea[])`,
		positions, chains, seqs, prevs, hashes, trees)
	b.Queue(`INSERT INTO audit_chain_heads (chain, seq, position, hash)
		SELECT DISTINCT ON (chain) chain, seq, position, hash
		FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[]) AS l(position, chain, seq, hash)
		ORDER BY chain, seq DESC
		ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, position = excluded.position, hash = excluded.hash`,
		positions, chains, seqs, hashes)
}
