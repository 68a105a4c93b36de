package projections

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
)

const (
	nextSchema   = "projections_next"
	verifySchema = "projections_verify"
	replayPage   = 5000
)

// allTables is every table of the projections schema, checkpoints first.
func allTables() []string {
	tables := []string{"projection_checkpoints"}
	for _, p := range All() {
		tables = append(tables, p.Tables...)
	}
	return tables
}

// Replayer rebuilds and verifies read models from the event history.
type Replayer struct {
	Pool  *pgxpool.Pool
	Store *eventstore.Store
	// Progress receives a line now and then on long replays; may be nil.
	Progress io.Writer
}

// ReplayStats reports a replay.
type ReplayStats struct {
	Events    int
	Elapsed   time.Duration
	PerSecond float64
}

// Rebuild replays the whole history into fresh read models in a schema
// beside the live one, then swaps them in one transaction: dashboards see
// the old models until the swap and the new ones after it, never empty
// tables. Live projectors pause only for the swap and resume on the new
// models from their own checkpoints.
func (r *Replayer) Rebuild(ctx context.Context) (ReplayStats, error) {
	stats, err := r.replayInto(ctx, nextSchema, nil)
	if err != nil {
		return stats, err
	}
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return stats, fmt.Errorf("begin swap: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, swapLock); err != nil {
		return stats, fmt.Errorf("pause projectors: %w", err)
	}
	if err := r.catchUp(ctx, tx, nextSchema); err != nil {
		return stats, err
	}
	_, err = tx.Exec(ctx, `ALTER SCHEMA `+LiveSchema+` RENAME TO projections_old;
		ALTER SCHEMA `+nextSchema+` RENAME TO `+LiveSchema+`;
		DROP SCHEMA projections_old CASCADE`)
	if err != nil {
		return stats, fmt.Errorf("swap schemas: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return stats, fmt.Errorf("commit swap: %w", err)
	}
	return stats, nil
}

// Difference is a read-model table whose rebuilt rows differ from the live ones.
type Difference struct {
	Table       string
	OnlyLive    int
	OnlyRebuilt int
}

// Verify replays the history into scratch tables, brings them to exactly
// the live projectors' checkpoints and compares them with the live read
// models. It returns the tables that differ (none: the models are true).
func (r *Replayer) Verify(ctx context.Context) ([]Difference, ReplayStats, error) {
	// Replay in bulk only as far as every live projector has come, so that
	// the scratch models are never ahead of the live ones they are compared to.
	cap, err := r.slowestCheckpoint(ctx)
	if err != nil {
		return nil, ReplayStats{}, err
	}
	stats, err := r.replayInto(ctx, verifySchema, &cap)
	if err != nil {
		return nil, stats, err
	}
	defer r.Pool.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+verifySchema+` CASCADE`) //nolint:errcheck
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return nil, stats, fmt.Errorf("begin compare: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, swapLock); err != nil {
		return nil, stats, fmt.Errorf("pause projectors: %w", err)
	}
	if err := r.catchUp(ctx, tx, verifySchema); err != nil {
		return nil, stats, err
	}
	var diffs []Difference
	for _, table := range allTables() {
		cols := "*"
		if table == "projection_checkpoints" {
			cols = "projector, tx_id::text, position"
		}
		d := Difference{Table: table}
		q := fmt.Sprintf(`SELECT (SELECT count(*) FROM (SELECT %[1]s FROM %[2]s.%[4]s EXCEPT ALL SELECT %[1]s FROM %[3]s.%[4]s) a),
			(SELECT count(*) FROM (SELECT %[1]s FROM %[3]s.%[4]s EXCEPT ALL SELECT %[1]s FROM %[2]s.%[4]s) b)`,
			cols, LiveSchema, verifySchema, table)
		if err := tx.QueryRow(ctx, q).Scan(&d.OnlyLive, &d.OnlyRebuilt); err != nil {
			return nil, stats, fmt.Errorf("compare %s: %w", table, err)
		}
		if d.OnlyLive > 0 || d.OnlyRebuilt > 0 {
			diffs = append(diffs, d)
		}
	}
	return diffs, stats, nil
}

// replayInto recreates schema with the live tables' definitions and
// applies the whole history to it with every projector.
func (r *Replayer) replayInto(ctx context.Context, schema string, upTo *checkpoint) (ReplayStats, error) {
	ddl := `DROP SCHEMA IF EXISTS ` + schema + ` CASCADE; CREATE SCHEMA ` + schema + `;`
	for _, t := range allTables() {
		ddl += fmt.Sprintf(` CREATE TABLE %s.%s (LIKE %s.%s INCLUDING ALL);`, schema, t, LiveSchema, t)
	}
	if _, err := r.Pool.Exec(ctx, ddl); err != nil {
		return ReplayStats{}, fmt.Errorf("create %s: %w", schema, err)
	}
	start := time.Now()
	lastReport := start
	total := 0
	// Read the next page while the projectors apply the current one.
	type page struct {
		events  []eventstore.Event
		decoded decodedPage
		err     error
	}
	pages := make(chan page, 1)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	sendErr := func(err error) {
		select {
		case pages <- page{err: err}:
		case <-readCtx.Done():
		}
	}
	go func() {
		defer close(pages)
		var after int64
		for {
			events, err := r.Store.ReadAll(readCtx, after, replayPage)
			if err == nil && upTo != nil {
				events = upTo.cut(events)
			}
			if err != nil || len(events) == 0 {
				if err != nil {
					sendErr(err)
				}
				return
			}
			decoded, err := decodePage(r.Store.Registry(), events)
			if err != nil {
				sendErr(err)
				return
			}
			select {
			case pages <- page{events: events, decoded: decoded}:
			case <-readCtx.Done():
				return
			}
			after = events[len(events)-1].Position
		}
	}()
	for pg := range pages {
		if pg.err != nil {
			return ReplayStats{}, pg.err
		}
		if err := r.applyPage(ctx, schema, pg.events, pg.decoded); err != nil {
			return ReplayStats{}, err
		}
		total += len(pg.events)
		if r.Progress != nil && time.Since(lastReport) > time.Second {
			lastReport = time.Now()
			fmt.Fprintf(r.Progress, "replayed %d events (%.0f events/s)\n", total, float64(total)/time.Since(start).Seconds())
		}
	}
	elapsed := time.Since(start)
	stats := ReplayStats{Events: total, Elapsed: elapsed}
	if elapsed > 0 {
		stats.PerSecond = float64(total) / elapsed.Seconds()
	}
	return stats, nil
}

// applyPage applies one page of events with every projector, each in a
// transaction (and on a connection) of its own, in parallel.
func (r *Replayer) applyPage(ctx context.Context, schema string, events []eventstore.Event, decoded decodedPage) error {
	projectors := All()
	errs := make(chan error, len(projectors))
	for _, p := range projectors {
		go func() { errs <- r.applyProjectorPage(ctx, schema, p, events, decoded) }()
	}
	var first error
	for range projectors {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (r *Replayer) applyProjectorPage(ctx context.Context, schema string, p Projector, events []eventstore.Event, decoded decodedPage) error {
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin replay: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	// Replay writes are rebuildable: no need to wait for each flush.
	if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
		return err
	}
	if _, err := applyInTx(ctx, tx, decoded, schema, p, events); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// catchUp brings every projector in schema to the live projector's
// checkpoint; the caller holds the swap lock, so live checkpoints stand
// still meanwhile.
func (r *Replayer) catchUp(ctx context.Context, tx pgx.Tx, schema string) error {
	for _, p := range All() {
		var liveTx, livePos int64
		err := tx.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM `+LiveSchema+`.projection_checkpoints WHERE projector = $1`, p.Name).Scan(&liveTx, &livePos)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // the live projector has applied nothing yet
		}
		if err != nil {
			return fmt.Errorf("read live checkpoint of %s: %w", p.Name, err)
		}
		var after int64
		err = tx.QueryRow(ctx, `SELECT coalesce((SELECT position FROM `+schema+`.projection_checkpoints WHERE projector = $1), 0)`, p.Name).Scan(&after)
		if err != nil {
			return fmt.Errorf("read rebuilt checkpoint of %s: %w", p.Name, err)
		}
		live := checkpoint{tx: liveTx, pos: livePos}
		for {
			// Everything up to the live checkpoint was committed (the live
			// projector applied it), so read it without waiting for the
			// horizon, which other open transactions may hold lower.
			events, err := r.Store.ReadUpTo(ctx, after, uint64(live.tx), live.pos, replayPage)
			if err != nil {
				return err
			}
			upto := live.cut(events)
			if len(upto) == 0 {
				break
			}
			if _, err := applyInTx(ctx, tx, r.Store.Registry(), schema, p, upto); err != nil {
				return err
			}
			after = upto[len(upto)-1].Position
			if len(upto) < len(events) {
				break
			}
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', 'public', true)`); err != nil {
			return err
		}
	}
	return nil
}

// checkpoint is a point in subscriber order.
type checkpoint struct{ tx, pos int64 }

// cut returns the prefix of events at or before c.
func (c checkpoint) cut(events []eventstore.Event) []eventstore.Event {
	for i, e := range events {
		if int64(e.TxID) > c.tx || (int64(e.TxID) == c.tx && e.Position > c.pos) {
			return events[:i]
		}
	}
	return events
}

// slowestCheckpoint is the least advanced live checkpoint (the zero point
// if some projector has applied nothing).
func (r *Replayer) slowestCheckpoint(ctx context.Context) (checkpoint, error) {
	// One statement, so that the count and the least checkpoint are read
	// together while live projectors move on.
	var c checkpoint
	var n int
	err := r.Pool.QueryRow(ctx, `SELECT count(*) OVER (), (tx_id::text)::bigint, position FROM `+LiveSchema+`.projection_checkpoints
		ORDER BY tx_id, position LIMIT 1`).Scan(&n, &c.tx, &c.pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return checkpoint{}, nil
	}
	if err != nil {
		return c, fmt.Errorf("read live checkpoints: %w", err)
	}
	if n < len(All()) {
		return checkpoint{}, nil
	}
	return c, nil
}

// decodedPage holds the payloads of a page of events, decoded once (while
// the previous page is applied) for every projector.
type decodedPage map[int64]eventstore.Payload

func decodePage(reg *eventstore.Registry, events []eventstore.Event) (decodedPage, error) {
	page := make(decodedPage, len(events))
	for _, e := range events {
		p, err := reg.Decode(e)
		if err != nil && !errors.Is(err, eventstore.ErrUnknownEventType) {
			return nil, err
		}
		page[e.Position] = p
	}
	return page, nil
}

// Decode returns the payload decoded with the page.
func (d decodedPage) Decode(e eventstore.Event) (eventstore.Payload, error) {
	p, ok := d[e.Position]
	if !ok {
		return nil, fmt.Errorf("event at position %d is not in the decoded page", e.Position)
	}
	if p == nil {
		return nil, eventstore.ErrUnknownEventType
	}
	return p, nil
}
