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
	Tables []string
	// Apply changes the read model for one event. It runs in the
	// projector's transaction with search_path set to the target schema,
	// so it names tables unqualified. Payload is the decoded event.
	Apply func(ctx context.Context, tx pgx.Tx, e eventstore.Event, payload eventstore.Payload) error
}

// All returns every projector.
func All() []Projector {
	return []Projector{operationsProjector(), queueProjector(), notificationsProjector()}
}

// applyInTx applies events (in subscriber order) that are past p's
// checkpoint, moves the checkpoint, and returns how many it applied.
func applyInTx(ctx context.Context, tx pgx.Tx, reg *eventstore.Registry, schema string, p Projector, events []eventstore.Event) (int, error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1 || ', public', true), pg_advisory_xact_lock_shared($2)`, schema, swapLock); err != nil {
		return 0, fmt.Errorf("%s: prepare: %w", p.Name, err)
	}
	var cpTx, cpPos int64
	err := tx.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM projection_checkpoints WHERE projector = $1 FOR UPDATE`, p.Name).Scan(&cpTx, &cpPos)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%s: read checkpoint: %w", p.Name, err)
	}
	applied := 0
	var last *eventstore.Event
	for i := range events {
		e := &events[i]
		if int64(e.TxID) < cpTx || (int64(e.TxID) == cpTx && e.Position <= cpPos) {
			continue // applied before: redelivery
		}
		payload, err := reg.Decode(*e)
		if errors.Is(err, eventstore.ErrUnknownEventType) {
			payload = nil // an event this binary does not know; move past it
		} else if err != nil {
			return 0, fmt.Errorf("%s: %w", p.Name, err)
		}
		if payload != nil {
			if err := p.Apply(ctx, tx, *e, payload); err != nil {
				return 0, fmt.Errorf("%s: apply %s at %d: %w", p.Name, e.Type, e.Position, err)
			}
		}
		applied++
		last = e
	}
	if last == nil {
		return 0, nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO projection_checkpoints (projector, tx_id, position, updated_at)
		VALUES ($1, $2::bigint::text::xid8, $3, clock_timestamp())
		ON CONFLICT (projector) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, updated_at = excluded.updated_at`,
		p.Name, int64(last.TxID), last.Position)
	if err != nil {
		return 0, fmt.Errorf("%s: save checkpoint: %w", p.Name, err)
	}
	return applied, nil
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
// commit together, once per batch.
func (r *Runner) Run(ctx context.Context, p Projector) error {
	var wake <-chan struct{}
	if r.Wake != nil {
		wake = r.Wake()
	}
	sub, err := eventstore.NewSubscriber(r.Pool, eventstore.SubscriberConfig{
		ConsumerGroup: "projector." + p.Name,
		PollInterval:  r.PollInterval,
		Wake:          wake,
		Logger:        r.Logger,
		BatchSize:     500,
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, eventstore.TopicEvents)
	if err != nil {
		return fmt.Errorf("%s: subscribe: %w", p.Name, err)
	}
	for msg := range msgs {
		if err := r.handle(msg.Context(), p, msg); err != nil {
			if ctx.Err() == nil {
				r.Logger.Error("projector failed; message will be redelivered", "projector", p.Name, "err", err)
			}
			msg.Nack()
			continue
		}
		msg.Ack()
	}
	return ctx.Err()
}

func (r *Runner) handle(ctx context.Context, p Projector, msg *message.Message) error {
	e, err := eventstore.DecodeMessage(msg)
	if err != nil {
		return err
	}
	wtx, ok := watermillsql.TxFromContext(ctx)
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
	// A savepoint, so that a failed event rolls back alone and is redelivered.
	sp, err := pgxTx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: savepoint: %w", p.Name, err)
	}
	n, err := applyInTx(ctx, sp, r.Registry, LiveSchema, p, []eventstore.Event{e})
	if err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	if err := sp.Commit(ctx); err != nil {
		return fmt.Errorf("%s: release savepoint: %w", p.Name, err)
	}
	if n > 0 && r.OnApplied != nil {
		r.OnApplied(p.Name, e.RecordedAt)
	}
	return nil
}
