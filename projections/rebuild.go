package projections

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/opsgate/opsgate/eventstore"
)

const (
	nextSchema   = "projections_next"
	verifySchema = "projections_verify"
	replayPage   = 5000
)

// allTables is every table of the projections schema.
func allTables() []string {
	var tables []string
	for _, p := range All() {
		tables = append(tables, p.TableNames()...)
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
// models from their checkpoints.
func (r *Replayer) Rebuild(ctx context.Context) (ReplayStats, error) {
	stats, replayed, err := r.replayInto(ctx, nextSchema, nil)
	if err != nil {
		return stats, err
	}
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return stats, fmt.Errorf("begin swap: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	live, err := pauseProjectors(ctx, tx, eventstore.ForUpdate)
	if err != nil {
		return stats, err
	}
	for _, p := range All() {
		at := live[p.Name]
		if replayed.Precedes(at) {
			// The live projector is ahead of the replay: bring the new
			// models to where it is.
			if err := r.catchUp(ctx, tx, nextSchema, p, replayed, at); err != nil {
				return stats, err
			}
			continue
		}
		// The replay is ahead of the live projector (or level with it): the
		// projector resumes after the replay.
		if err := eventstore.SetCheckpoint(ctx, tx, p.Name, replayed); err != nil {
			return stats, err
		}
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

// pauseProjectors locks the live projectors' checkpoints (FOR UPDATE or
// FOR SHARE), in name order as every feed does, and returns them: until tx
// ends, no projector applies anything, and a feed that reads for one
// waits at its first statement, before it touches a read model. A
// projector that never applied anything is at the zero point.
func pauseProjectors(ctx context.Context, tx pgx.Tx, strength eventstore.LockStrength) (map[string]eventstore.Checkpoint, error) {
	cps, err := eventstore.LockCheckpoints(ctx, tx, Names(), strength)
	if err != nil {
		return nil, fmt.Errorf("pause projectors: %w", err)
	}
	return cps, nil
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
	stats, replayed, err := r.replayInto(ctx, verifySchema, &cap)
	if err != nil {
		return nil, stats, err
	}
	defer r.Pool.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+verifySchema+` CASCADE`) //nolint:errcheck
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return nil, stats, fmt.Errorf("begin compare: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	live, err := pauseProjectors(ctx, tx, eventstore.ForShare)
	if err != nil {
		return nil, stats, err
	}
	for _, p := range All() {
		if err := r.catchUp(ctx, tx, verifySchema, p, replayed, live[p.Name]); err != nil {
			return nil, stats, err
		}
	}
	var diffs []Difference
	for _, table := range allTables() {
		d := Difference{Table: table}
		q := fmt.Sprintf(`SELECT (SELECT count(*) FROM (SELECT * FROM %[1]s.%[3]s EXCEPT ALL SELECT * FROM %[2]s.%[3]s) a),
			(SELECT count(*) FROM (SELECT * FROM %[2]s.%[3]s EXCEPT ALL SELECT * FROM %[1]s.%[3]s) b)`,
			LiveSchema, verifySchema, table)
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
// replays the history (up to upTo, if given) into it: every projector's
// changes are folded in memory, page by page, and the final rows written
// with COPY. PostgreSQL thus writes each row once, however many events
// shaped it. It returns the point of the last event replayed.
func (r *Replayer) replayInto(ctx context.Context, schema string, upTo *eventstore.Checkpoint) (ReplayStats, eventstore.Checkpoint, error) {
	// The tables are created without their indexes, which are built once
	// the rows are in: cheaper than maintaining them row by row.
	ddl := `DROP SCHEMA IF EXISTS ` + schema + ` CASCADE; CREATE SCHEMA ` + schema + `;`
	for _, t := range allTables() {
		ddl += fmt.Sprintf(` CREATE TABLE %s.%s (LIKE %s.%s INCLUDING ALL EXCLUDING INDEXES);`, schema, t, LiveSchema, t)
	}
	if _, err := r.Pool.Exec(ctx, ddl); err != nil {
		return ReplayStats{}, eventstore.Checkpoint{}, fmt.Errorf("create %s: %w", schema, err)
	}
	ctx, stop := context.WithCancel(ctx) // ends the reading if the fold fails
	defer stop()
	start := time.Now()
	lastReport := start
	// Each projector folds its own tables in a goroutine of its own; the
	// pages, decoded once, are handed to all of them in order.
	projectors := All()
	folds := make([]*fold, len(projectors))
	feeds := make([]chan *page, len(projectors))
	var folding sync.WaitGroup
	for i, p := range projectors {
		folds[i], feeds[i] = newFold(p.Tables...), make(chan *page, 8)
		folding.Go(func() {
			for pg := range feeds[i] {
				for k, e := range pg.events {
					if pg.payloads[k] != nil { // an event this binary does not know is passed over
						p.Apply(folds[i], e, pg.payloads[k])
					}
				}
			}
		})
	}
	total := 0
	var last *eventstore.Event
	var readErr error
	for pg := range r.readPages(ctx, upTo) {
		<-pg.ready
		if pg.err != nil {
			readErr = pg.err
			break
		}
		for _, feed := range feeds {
			feed <- pg
		}
		total += len(pg.events)
		last = &pg.events[len(pg.events)-1]
		if r.Progress != nil && time.Since(lastReport) > time.Second {
			lastReport = time.Now()
			fmt.Fprintf(r.Progress, "replayed %d events (%.0f events/s)\n", total, float64(total)/time.Since(start).Seconds())
		}
	}
	for _, feed := range feeds {
		close(feed)
	}
	folding.Wait()
	if readErr != nil {
		return ReplayStats{}, eventstore.Checkpoint{}, readErr
	}
	if r.Progress != nil {
		fmt.Fprintf(r.Progress, "folded %d events in %s; writing the rows\n", total, time.Since(start).Round(time.Millisecond))
	}
	if err := r.write(ctx, schema, projectors, folds); err != nil {
		return ReplayStats{}, eventstore.Checkpoint{}, err
	}
	if r.Progress != nil {
		fmt.Fprintf(r.Progress, "rows written after %s; building the indexes\n", time.Since(start).Round(time.Millisecond))
	}
	if err := r.index(ctx, schema); err != nil {
		return ReplayStats{}, eventstore.Checkpoint{}, err
	}
	var replayed eventstore.Checkpoint
	if last != nil {
		replayed = eventstore.PointOf(*last)
	}
	elapsed := time.Since(start)
	stats := ReplayStats{Events: total, Elapsed: elapsed}
	if elapsed > 0 {
		stats.PerSecond = float64(total) / elapsed.Seconds()
	}
	return stats, replayed, nil
}

// page is a page of the history with its payloads decoded (nil for an
// event type this binary does not know) once ready is closed.
type page struct {
	events   []eventstore.Event
	payloads []eventstore.Payload
	err      error
	ready    chan struct{}
}

func newPage() *page {
	return &page{events: make([]eventstore.Event, 0, replayPage), ready: make(chan struct{})}
}

// readPages reads the history in subscriber order, up to upTo if given,
// and decodes it on every core, a few pages ahead of the caller, which
// receives the pages in order. A page with err ends it.
func (r *Replayer) readPages(ctx context.Context, upTo *eventstore.Checkpoint) <-chan *page {
	ordered := make(chan *page, 4)
	undecoded := make(chan *page, 4)
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for pg := range undecoded {
				pg.payloads = make([]eventstore.Payload, len(pg.events))
				for i, e := range pg.events {
					p, err := r.Store.Registry().Decode(e)
					if err != nil && !errors.Is(err, eventstore.ErrUnknownEventType) {
						pg.err = err
						break
					}
					pg.payloads[i] = p
				}
				close(pg.ready)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(undecoded)
		send := func(pg *page) bool {
			select {
			case ordered <- pg:
			case <-ctx.Done():
				return false
			}
			if pg.err != nil {
				close(pg.ready)
				return false
			}
			undecoded <- pg
			return true
		}
		pg := newPage()
		for e, err := range r.Store.History(ctx) {
			if err != nil {
				send(&page{err: err, ready: make(chan struct{})})
				return
			}
			if upTo != nil && upTo.Before(e) {
				break
			}
			pg.events = append(pg.events, e)
			if len(pg.events) == replayPage {
				if !send(pg) {
					return
				}
				pg = newPage()
			}
		}
		if len(pg.events) > 0 {
			send(pg)
		}
	}()
	return ordered
}

// write copies the folded rows of each table into schema, in parallel
// (each table in a transaction of its own: schema is not live yet).
func (r *Replayer) write(ctx context.Context, schema string, projectors []Projector, folds []*fold) error {
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range projectors {
		for _, t := range p.Tables {
			f := folds[i]
			g.Go(func() error {
				conn, err := r.Pool.Acquire(gctx)
				if err != nil {
					return fmt.Errorf("copy %s: %w", t.name, err)
				}
				defer conn.Release()
				err = pgx.BeginFunc(gctx, conn, func(tx pgx.Tx) error {
					// Rebuildable rows: no need to wait for the flush.
					if _, err := tx.Exec(gctx, `SET LOCAL synchronous_commit = off`); err != nil {
						return err
					}
					_, err := tx.CopyFrom(gctx, pgx.Identifier{schema, t.name}, t.columns, f.copySource(t))
					return err
				})
				if err != nil {
					return fmt.Errorf("copy %s: %w", t.name, err)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// index gives the tables of schema the indexes and key constraints of
// their live counterparts, under the same names.
func (r *Replayer) index(ctx context.Context, schema string) error {
	rows, err := r.Pool.Query(ctx, `
		SELECT format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', $2::text, t.relname, c.conname, pg_get_constraintdef(c.oid))
		FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE n.nspname = $1 AND c.contype IN ('p', 'u', 'x')
		UNION ALL
		SELECT replace(pg_get_indexdef(i.indexrelid), format(' ON %I.', $1::text), format(' ON %I.', $2::text))
		FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)`,
		LiveSchema, schema)
	if err != nil {
		return fmt.Errorf("read the indexes of %s: %w", LiveSchema, err)
	}
	ddl, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read the indexes of %s: %w", LiveSchema, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, stmt := range ddl {
		g.Go(func() error {
			// One statement with its settings, in one implicit transaction.
			if _, err := r.Pool.Exec(gctx, `SET LOCAL maintenance_work_mem = '256MB'; `+stmt); err != nil {
				return fmt.Errorf("index %s: %s: %w", schema, stmt, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// catchUp applies to p's tables in schema the events after from and up
// to live (the live projector's checkpoint); the caller has paused the
// live projectors, so live stands still meanwhile.
func (r *Replayer) catchUp(ctx context.Context, tx pgx.Tx, schema string, p Projector, from, live eventstore.Checkpoint) error {
	after := from
	for after.Precedes(live) {
		// Everything up to the live checkpoint was committed (the live
		// projector applied it), so read it without waiting for the
		// horizon, which other open transactions may hold lower.
		events, err := r.Store.ReadUpTo(ctx, after, live, replayPage)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			break
		}
		if after, err = applyInTx(ctx, tx, r.Store.Registry(), schema, p, events, after); err != nil {
			return err
		}
	}
	return nil
}

// slowestCheckpoint is the least advanced live eventstore.Checkpoint (the zero point
// if some projector has applied nothing).
func (r *Replayer) slowestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	return eventstore.SlowestCheckpoint(ctx, r.Pool, Names())
}
