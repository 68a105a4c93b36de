// Package projections builds opsgate's read models from the event history:
// the Operations monitoring view, the job queue view and notifications.
//
// Each projector is a watermill-sql subscriber with its own consumer group.
// It applies an event and moves its checkpoint (the last event applied, in
// subscriber order: transaction id, then position) in one transaction, and
// skips events at or before its checkpoint, so a redelivered message
// changes nothing and a projector killed mid-batch resumes with no gap and
// no double count.
//
// Read models live in the PostgreSQL schema "projections". Rebuild replays
// the history into a fresh schema beside it and swaps the two in one
// transaction; Verify replays into a scratch schema and compares.
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
)

// LiveSchema is the schema that holds the read models dashboards read.
const LiveSchema = "projections"

// swapLock is the advisory lock projectors hold shared while they apply an
// event and a rebuild holds exclusively while it swaps schemas.
const swapLock = 727_100

// Projector turns events into read-model rows.
type Projector struct {
	// Name is the projector's consumer group and checkpoint key.
	Name string
	// Tables are the tables it owns in the projections schema.
	Tables []*table
	// Apply writes the row changes that project one event (payload is
	// the event decoded). Changes only write, so that many events can
	// travel in one round trip live, and be folded in memory on replay.
	Apply func(w rowWriter, e eventstore.Event, payload eventstore.Payload)
}

// TableNames returns the names of the tables p owns.
func (p Projector) TableNames() []string {
	names := make([]string, len(p.Tables))
	for i, t := range p.Tables {
		names[i] = t.name
	}
	return names
}

// All returns every projector.
func All() []Projector {
	return []Projector{operationsProjector(), queueProjector(), notificationsProjector()}
}

// decoder turns a stored event into its payload (*eventstore.Registry, or
// decodedAs for a message whose payload was decoded with it).
type decoder interface {
	Decode(e eventstore.Event) (eventstore.Payload, error)
}

// decodedAs is the decoder of one event already decoded (nil: a type this
// binary does not know).
type decodedAs struct{ payload eventstore.Payload }

func (d decodedAs) Decode(eventstore.Event) (eventstore.Payload, error) {
	if d.payload == nil {
		return nil, eventstore.ErrUnknownEventType
	}
	return d.payload, nil
}

// applyInTx applies the events (in subscriber order) that are past p's
// checkpoint in schema, moves the checkpoint, and returns how many it
// applied: a few round trips whatever the number of events.
func applyInTx(ctx context.Context, tx pgx.Tx, reg decoder, schema string, p Projector, events []eventstore.Event) (int, error) {
	cp, err := enter(ctx, tx, schema, p)
	if err != nil {
		return 0, err
	}
	var b pgx.Batch
	next, n, err := queueEvents(&b, reg, p, events, cp)
	if err != nil || n == 0 {
		return 0, err
	}
	queueCheckpoint(&b, "projection_checkpoints", p.Name, next)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return 0, fmt.Errorf("%s: apply up to position %d: %w", p.Name, next.pos, err)
	}
	return n, nil
}

// enter prepares tx to project into schema for p: it sets the search_path,
// takes the swap lock shared (held until the transaction ends, so no
// rebuild swaps schemas under it) and returns p's checkpoint in schema.
func enter(ctx context.Context, tx pgx.Tx, schema string, p Projector) (checkpoint, error) {
	// The checkpoint is read in a round trip of its own, after the lock,
	// and not in the lock's batch: pgx prepares a batch's statements before
	// it runs any of them, and preparing a statement locks the tables it
	// names, so the projector would hold the checkpoint table while it
	// waits for the swap lock, and deadlock with a rebuild that holds the
	// swap lock and drops the old tables.
	if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1 || ', public', true), pg_advisory_xact_lock_shared($2)`, schema, swapLock); err != nil {
		return checkpoint{}, fmt.Errorf("%s: lock: %w", p.Name, err)
	}
	var cp checkpoint
	err := tx.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM `+pgx.Identifier{schema, "projection_checkpoints"}.Sanitize()+` WHERE projector = $1`, p.Name).
		Scan(&cp.tx, &cp.pos)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return checkpoint{}, fmt.Errorf("%s: read checkpoint: %w", p.Name, err)
	}
	return cp, nil
}

// queueEvents queues into b the row changes of the events past cp (in
// subscriber order) and returns the checkpoint after them and how many
// there were. Events at or before cp were applied before: redelivery.
func queueEvents(b *pgx.Batch, reg decoder, p Projector, events []eventstore.Event, cp checkpoint) (checkpoint, int, error) {
	n := 0
	for _, e := range events {
		if !cp.before(e) {
			continue
		}
		payload, err := reg.Decode(e)
		if err != nil && !errors.Is(err, eventstore.ErrUnknownEventType) {
			return cp, 0, fmt.Errorf("%s: %w", p.Name, err)
		}
		if payload != nil { // an event this binary does not know is passed over
			p.Apply(sqlWriter{b}, e, payload)
		}
		cp = checkpoint{tx: int64(e.TxID), pos: e.Position}
		n++
	}
	return cp, n, nil
}

// queueCheckpoint queues the move of projector's checkpoint in table (a
// checkpoints table, named as the caller's search_path finds it) to cp.
func queueCheckpoint(b *pgx.Batch, table, projector string, cp checkpoint) {
	b.Queue(`INSERT INTO `+table+` (projector, tx_id, position, updated_at)
		VALUES ($1, $2::bigint::text::xid8, $3, clock_timestamp())
		ON CONFLICT (projector) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, updated_at = excluded.updated_at`,
		projector, cp.tx, cp.pos)
}

// Runner runs projectors as watermill subscribers.
type Runner struct {
	Pool     *pgxpool.Pool
	Registry *eventstore.Registry
	Logger   *slog.Logger
	// Wake returns a channel that receives when events may have been
	// committed; nil polls only.
	Wake func() <-chan struct{}
	// PollInterval is the fallback poll of an idle projector.
	PollInterval time.Duration
	// OnApplied is called after each applied event with its recorded time
	// (for the lag metric); may be nil.
	OnApplied func(projector string, recordedAt time.Time)
}

// Run runs p until ctx ends. Each batch of messages is applied in the
// subscriber's own transaction (watermill-sql's TxFromContext), so the
// read-model rows, the projector's checkpoint and watermill's offset all
// commit together, once per batch. The handler only queues each event's
// statements; they are sent in one round trip with the checkpoint just
// before watermill acknowledges the batch (SubscriberConfig.BeforeAck).
// A failure there rolls the whole batch back, to be delivered again.
func (r *Runner) Run(ctx context.Context, p Projector) error {
	var wake <-chan struct{}
	if r.Wake != nil {
		wake = r.Wake()
	}
	sess := &session{}
	flushCtx := context.WithoutCancel(ctx)
	sub, err := eventstore.NewSubscriber(r.Pool, eventstore.SubscriberConfig{
		ConsumerGroup: "projector." + p.Name,
		PollInterval:  r.PollInterval,
		Wake:          wake,
		Logger:        r.Logger,
		BatchSize:     500,
		BeforeAck:     func() error { return r.flush(flushCtx, p, sess) },
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	// The handler works in the subscriber's transaction, and the subscriber
	// ends that transaction as soon as its context ends, without waiting
	// for the handler: a connection used by two goroutines at once. So the
	// subscription's context ends only between messages, once ctx has.
	subCtx, stopSub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSub()
	msgs, err := sub.Subscribe(subCtx, eventstore.TopicEvents)
	if err != nil {
		return fmt.Errorf("%s: subscribe: %w", p.Name, err)
	}
	for {
		var msg *message.Message
		select {
		case <-ctx.Done():
		case msg = <-msgs:
		}
		if msg == nil || ctx.Err() != nil {
			// Neither ack nor nack: the batch's transaction rolls back
			// when the subscription ends, and is delivered again later.
			stopSub()
			return ctx.Err()
		}
		if err := r.handle(ctx, p, msg, sess); err != nil {
			if ctx.Err() != nil {
				stopSub()
				return ctx.Err()
			}
			r.Logger.Error("projector failed; its batch will be delivered again", "projector", p.Name, "err", err)
		}
		// Acknowledged even when it failed: watermill redelivers a nacked
		// message in the same transaction until the ack deadline, and a
		// failure here may be that transaction's (its connection died with
		// the database). A failed batch is failed as a whole instead: the
		// session fails every message after it, and the flush before the
		// batch's acknowledgement fails, which rolls the transaction back;
		// the subscriber delivers the batch again in a new transaction.
		msg.Ack()
	}
}

// session is what a projector knows of the subscriber transaction it is
// working in: entered once per transaction (search_path, shared swap
// lock, checkpoint), then the statements of the events handled since the
// last flush. The handler and the flush run on different goroutines (the
// flush on watermill's, between the last ack of a batch and its commit).
type session struct {
	mu      sync.Mutex
	tx      pgx.Tx
	cp      checkpoint // after the last event queued
	pending pgx.Batch
	queued  []time.Time // recorded times of the events queued
	// failed is the error that failed the batch of transaction failedTx:
	// its later messages are passed over and its flush fails.
	failed   error
	failedTx pgx.Tx
}

func (r *Runner) handle(ctx context.Context, p Projector, msg *message.Message, sess *session) error {
	e, payload, err := r.Registry.DecodeMessage(msg)
	if errors.Is(err, eventstore.ErrUnknownEventType) {
		err = nil // passed over by queueEvents
	}
	wtx, ok := watermillsql.TxFromContext(msg.Context())
	if !ok {
		return fmt.Errorf("%s: message %s carries no subscriber transaction", p.Name, msg.UUID)
	}
	var pgxTx pgx.Tx
	switch t := wtx.(type) {
	case *watermillsql.PgxTx:
		pgxTx = t.Tx
	case watermillsql.PgxTx:
		pgxTx = t.Tx
	default:
		return fmt.Errorf("%s: subscriber transaction is %T, not pgx", p.Name, wtx)
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.failed != nil {
		if sess.failedTx == pgxTx {
			return nil // the batch failed already: passed over, delivered again later
		}
		sess.failed, sess.failedTx = nil, nil
	}
	fail := func(err error) error {
		sess.failed, sess.failedTx, sess.tx = err, pgxTx, nil
		return err
	}
	if sess.tx != pgxTx {
		// A new transaction: whatever an earlier one queued rolled back with it.
		cp, err := enter(ctx, pgxTx, LiveSchema, p)
		if err != nil {
			return fail(err)
		}
		sess.tx, sess.cp, sess.pending, sess.queued = pgxTx, cp, pgx.Batch{}, nil
	}
	if err != nil {
		return fail(fmt.Errorf("%s: message %s: %w", p.Name, msg.UUID, err))
	}
	cp, n, err := queueEvents(&sess.pending, decodedAs{payload}, p, []eventstore.Event{e}, sess.cp)
	if err != nil {
		return fail(err)
	}
	sess.cp = cp
	if n > 0 {
		sess.queued = append(sess.queued, e.RecordedAt)
	}
	return nil
}

// flush sends the session's queued statements and the move of the
// checkpoint, in the subscriber's transaction, before it acknowledges.
func (r *Runner) flush(ctx context.Context, p Projector, sess *session) error {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if err := sess.failed; err != nil {
		sess.failed, sess.failedTx = nil, nil
		return err
	}
	if len(sess.queued) == 0 {
		return nil // only redeliveries: nothing to apply
	}
	b, queued := sess.pending, sess.queued
	sess.pending, sess.queued = pgx.Batch{}, nil
	queueCheckpoint(&b, "projection_checkpoints", p.Name, sess.cp)
	if err := sess.tx.SendBatch(ctx, &b).Close(); err != nil {
		sess.tx = nil // the transaction rolls back: enter the next one afresh
		return fmt.Errorf("%s: apply up to position %d: %w", p.Name, sess.cp.pos, err)
	}
	if r.OnApplied != nil {
		for _, at := range queued {
			r.OnApplied(p.Name, at)
		}
	}
	return nil
}
