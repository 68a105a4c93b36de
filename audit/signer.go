package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/opsgate/opsgate/eventstore"
)

// signerLock names the lock a signing pass holds (an eventstore stream
// lock, tried): one process signs at a time, any other takes over at its
// next pass.
const signerLock = "audit-checkpoint-signer"

// SignerConfig configures the checkpoint signer.
type SignerConfig struct {
	Key *Key
	// Origin is the origins' prefix (OPSGATE_AUDIT_ORIGIN, "opsgate").
	Origin string
	// StateDir keeps the last checkpoint signed of each tenant, outside the
	// database: a rewritten database cannot get a rewrite signed. It
	// defaults to the key file's name + ".checkpoints".
	StateDir string
	// Interval is the time between passes (5 s by default: a tree that
	// grew is signed within seconds, and a busy tenant gets at most one
	// checkpoint per interval).
	Interval time.Duration
	// OnSigned and OnRefused, if set, count checkpoints signed and refused.
	OnSigned, OnRefused func()
}

// CheckpointSigner signs a checkpoint of each tenant's tree that grew,
// once it has checked that the new tree extends the last one it signed.
type CheckpointSigner struct {
	pool   *pgxpool.Pool
	cfg    SignerConfig
	logger *slog.Logger
}

// NewCheckpointSigner returns the signer of the trees in pool.
func NewCheckpointSigner(pool *pgxpool.Pool, cfg SignerConfig, logger *slog.Logger) *CheckpointSigner {
	if cfg.StateDir == "" {
		cfg.StateDir = cfg.Key.file + ".checkpoints"
	}
	if cfg.Origin == "" {
		cfg.Origin = "opsgate"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	return &CheckpointSigner{pool: pool, cfg: cfg, logger: logger}
}

// RefusedError means a tenant's tree does not extend the last checkpoint
// signed for it: the history was rewritten or rolled back. Nothing is
// signed for that tenant until it does.
type RefusedError struct {
	Chain string
	Why   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused to sign the tree of tenant %s: %s", e.Chain, e.Why)
}

// Run signs until ctx ends, a pass every interval.
func (s *CheckpointSigner) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("audit checkpoints", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass signs a checkpoint of each tenant whose tree grew since its last
// one, unless another process is signing (then it signs nothing). A
// refused tenant is logged and counted; the others are signed. It returns
// how many were signed.
func (s *CheckpointSigner) Pass(ctx context.Context) (int, error) {
	signed := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		lock := eventstore.QueueLocks(&b, eventstore.Streams(signerLock), eventstore.Try)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil || !lock.Held(0) {
			return err
		}
		grown, err := grownTrees(ctx, tx)
		if err != nil {
			return err
		}
		for _, g := range grown {
			err := s.sign(ctx, tx, g)
			var refused *RefusedError
			switch {
			case errors.As(err, &refused):
				s.logger.Error("audit checkpoint refused", "tenant", refused.Chain, "why", refused.Why)
				if s.cfg.OnRefused != nil {
					s.cfg.OnRefused()
				}
			case errors.Is(err, ErrTreeIncomplete):
				// The backfill has not reached it yet (or its links were
				// removed: opsgate audit verify says which).
				s.logger.Warn("audit checkpoint not signed: the tree is not complete", "tenant", g.chain, "err", err)
			case err != nil:
				return err
			default:
				signed++
				if s.cfg.OnSigned != nil {
					s.cfg.OnSigned()
				}
			}
		}
		return nil
	})
	if err != nil {
		return signed, fmt.Errorf("sign checkpoints: %w", err)
	}
	return signed, nil
}

// grown is a tenant's tree that grew past its last checkpoint.
type grown struct {
	chain string
	size  int64
	last  []byte // the last checkpoint's note (nil for none)
}

// grownTrees returns the tenants' trees that grew past their last
// checkpoint.
func grownTrees(ctx context.Context, tx pgx.Tx) ([]grown, error) {
	rows, err := tx.Query(ctx, `SELECT h.chain, h.seq, k.note FROM audit_chain_heads h
		LEFT JOIN LATERAL (SELECT size, note FROM audit_checkpoints k WHERE k.chain = h.chain ORDER BY size DESC LIMIT 1) k ON true
		WHERE h.chain <> '' AND h.seq > coalesce(k.size, 0) ORDER BY h.chain`)
	if err != nil {
		return nil, fmt.Errorf("find grown trees: %w", err)
	}
	var out []grown
	var g grown
	var last *string
	_, err = pgx.ForEachRow(rows, []any{&g.chain, &g.size, &last}, func() error {
		g.last = nil
		if last != nil {
			g.last = []byte(*last)
		}
		out = append(out, g)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find grown trees: %w", err)
	}
	return out, nil
}

// sign signs g's tree in tx, after checking it extends both the last
// checkpoint in the database and the last one this signer kept.
func (s *CheckpointSigner) sign(ctx context.Context, tx pgx.Tx, g grown) error {
	reader := treeReader{ctx, tx, g.chain}
	root, err := tlog.TreeHash(g.size, reader)
	if err != nil {
		return err
	}
	next := Checkpoint{Origin: OriginOf(s.cfg.Origin, g.chain), Size: g.size, Root: root}
	kept, err := os.ReadFile(s.statePath(g.chain))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read the last checkpoint kept of tenant %s: %w", g.chain, err)
	}
	for _, prev := range []struct {
		where string
		note  []byte
	}{{inDatabase, g.last}, {"kept in " + s.cfg.StateDir, kept}} {
		if prev.note == nil {
			continue
		}
		old, err := OpenCheckpoint(prev.note, s.cfg.Key.Verifier)
		if errors.Is(err, ErrSignature) && prev.where == inDatabase {
			// Signed by an earlier key (a rotation), or not signed at all:
			// only what this key signed is trusted, the kept file first.
			s.logger.Warn("audit checkpoint in the database not signed by this key; checking against the kept one only",
				"tenant", g.chain, "size", g.size, "err", err)
			continue
		}
		if err != nil {
			return &RefusedError{g.chain, fmt.Sprintf("the last checkpoint %s does not open: %v", prev.where, err)}
		}
		if old.Origin != next.Origin {
			return &RefusedError{g.chain, fmt.Sprintf("the last checkpoint %s is of origin %q, not %q", prev.where, old.Origin, next.Origin)}
		}
		if err := Extends(old, next, reader); err != nil {
			return &RefusedError{g.chain, fmt.Sprintf("the tree does not extend the last checkpoint %s: %v", prev.where, err)}
		}
	}
	signed, err := s.cfg.Key.Sign(next)
	if err != nil {
		return err
	}
	// Kept first: a pass cut short after this leaves the file ahead of the
	// database, which the next pass checks against as well.
	if err := s.keep(g.chain, signed); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_checkpoints (chain, size, root, note) VALUES ($1, $2, $3, $4)`,
		g.chain, next.Size, next.Root[:], string(signed))
	if err != nil {
		return fmt.Errorf("record the checkpoint of tenant %s at size %d: %w", g.chain, next.Size, err)
	}
	return nil
}

const inDatabase = "in the database"

func (s *CheckpointSigner) statePath(chain string) string {
	return filepath.Join(s.cfg.StateDir, chain)
}

// keep replaces the kept checkpoint of chain, atomically.
func (s *CheckpointSigner) keep(chain string, signed []byte) error {
	if err := os.MkdirAll(s.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("keep the checkpoint of tenant %s: %w", chain, err)
	}
	if err := WriteFileAtomic(s.statePath(chain), signed); err != nil {
		return fmt.Errorf("keep the checkpoint of tenant %s: %w", chain, err)
	}
	return nil
}

// WriteFileAtomic writes data to name through a synced temporary file
// renamed over it: a reader sees the old content or the new, never part.
// Kept checkpoints (the signer's, a watcher's) are written so.
func WriteFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// Extends checks that the tree of next extends the tree of old, with a
// consistency proof read from r (the tree as it is now).
func Extends(old, next Checkpoint, r tlog.HashReader) error {
	if old.Size > next.Size {
		return fmt.Errorf("it has %d leaves, fewer than the %d of the earlier checkpoint: the history was cut", next.Size, old.Size)
	}
	var proof tlog.TreeProof
	if old.Size > 0 && old.Size < next.Size {
		var err error
		if proof, err = tlog.ProveTree(next.Size, old.Size, r); err != nil {
			return fmt.Errorf("prove size %d against size %d: %w", old.Size, next.Size, err)
		}
	}
	return CheckConsistency(old, next, proof)
}

// CheckConsistency checks with proof (tlog.ProveTree) that the tree of
// newer extends the tree of older.
func CheckConsistency(older, newer Checkpoint, proof tlog.TreeProof) error {
	switch {
	case older.Size > newer.Size:
		return fmt.Errorf("the newer tree has %d leaves, fewer than the %d of the older: the history was cut", newer.Size, older.Size)
	case older.Size == newer.Size && older.Root != newer.Root:
		return fmt.Errorf("both trees have %d leaves but different roots (%s, %s): the history was rewritten", older.Size, older.Root, newer.Root)
	case older.Size == 0 || older.Size == newer.Size:
		return nil
	}
	if err := tlog.CheckTree(proof, newer.Size, newer.Root, older.Size, older.Root); err != nil {
		return fmt.Errorf("the tree of %d leaves does not extend the tree of %d leaves: the history up to leaf %d was rewritten", newer.Size, older.Size, older.Size)
	}
	return nil
}
