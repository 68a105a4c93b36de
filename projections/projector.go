// Package projections builds opsgate's read models from the event history:
// the Operations monitoring view, the job queue view and notifications.
//
// Each projector is a consumer of the event log (eventstore.Feed): it
// queues the row changes of a batch's events in the feed's transaction,
// where its checkpoint (the last event applied, in subscriber order:
// transaction id, then position) moves with them, and it is handed only
// the events after its checkpoint, so a redelivered batch changes nothing
// and a projector killed mid-batch resumes with no gap and no double
// count. One feed per process reads and decodes each event once for every
// projector.
//
// Read models live in the PostgreSQL schema "projections". Rebuild replays
// the history into a fresh schema beside it and swaps the two in one
// transaction; Verify replays into a scratch schema and compares.
package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/eventstore"
)

// LiveSchema is the schema that holds the read models dashboards read.
const LiveSchema = "projections"

// Projector turns events into read-model rows.
type Projector struct {
	// Name is the projector's checkpoint (see eventstore.Feed).
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

// Consumer returns p as a consumer of the event log: the net row changes
// of a batch's events (batchWriter) go into the feed's transaction, with
// p's checkpoint.
// onApplied, if set, is called for each event as it is applied, with its
// recorded time (the lag metric).
func Consumer(p Projector, onApplied func(projector string, recordedAt time.Time)) eventstore.Consumer {
	return eventstore.Consumer{Name: p.Name, Apply: func(_ context.Context, b *pgx.Batch, events []eventstore.Delivery) error {
		w := newBatchWriter(LiveSchema)
		for _, d := range events {
			if d.Payload != nil { // an event this binary does not know is passed over
				p.Apply(w, d.Event, d.Payload)
			}
			if onApplied != nil {
				onApplied(p.Name, d.RecordedAt)
			}
		}
		w.queue(b)
		return nil
	}}
}

// Consumers returns every projector as a consumer (see Consumer).
func Consumers(onApplied func(projector string, recordedAt time.Time)) []eventstore.Consumer {
	var out []eventstore.Consumer
	for _, p := range All() {
		out = append(out, Consumer(p, onApplied))
	}
	return out
}

// Names returns the names of every projector: their checkpoints.
func Names() []string {
	var out []string
	for _, p := range All() {
		out = append(out, p.Name)
	}
	return out
}

// applyInTx applies to the tables in schema the events (in subscriber
// order) that come after cp, in one round trip, and returns the point
// after them.
func applyInTx(ctx context.Context, tx pgx.Tx, reg *eventstore.Registry, schema string, p Projector, events []eventstore.Event, cp eventstore.Checkpoint) (eventstore.Checkpoint, error) {
	var b pgx.Batch
	w := sqlWriter{b: &b, schema: schema}
	for _, e := range events {
		if !cp.Before(e) {
			continue
		}
		payload, err := reg.Decode(e)
		if err != nil && !errors.Is(err, eventstore.ErrUnknownEventType) {
			return cp, fmt.Errorf("%s: %w", p.Name, err)
		}
		if payload != nil {
			p.Apply(w, e, payload)
		}
		cp = eventstore.PointOf(e)
	}
	if b.Len() == 0 {
		return cp, nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return cp, fmt.Errorf("%s: apply up to position %d: %w", p.Name, cp.Position, err)
	}
	return cp, nil
}
