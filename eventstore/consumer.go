package eventstore

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
	"github.com/opsgate/opsgate/internal/pg"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Consumer is one reader of a Feed: a projector, a process manager.
type Consumer struct {
	// Name is the consumer's checkpoint (feed_checkpoints).
	Name string
	// Apply handles the events of a batch that come after the consumer's
	// checkpoint, in subscriber order. Statements it queues in b are sent
	// in the feed's transaction once every consumer has handled the batch,
	// with the move of the checkpoints and the COMMIT, in one round trip: a
	// consumer that writes only through b applies each event exactly once.
	// An error fails the whole batch, which is delivered again (to every
	// consumer) later.
	Apply func(ctx context.Context, b *pgx.Batch, events []Delivery) error
	// Prepare, if set, runs before Apply with the same events, for a
	// consumer whose statements depend on rows it wrote before: it reads
	// them through q, in the feed's transaction, which holds the consumer's
	// checkpoint, so they are exactly as of the events' delivery. Its
	// statements are sent at once. after is the consumer's checkpoint,
	// which the events follow: a consumer that keeps what it wrote in
	// memory may trust it when after is where its last committed batch
	// left the checkpoint (no other process, and no rolled-back batch,
	// wrote since).
	Prepare func(ctx context.Context, q pg.Querier, after Checkpoint, events []Delivery) error
	// Committed, if set, is called once what Apply queued for a batch has
	// committed (for example to wake this process's readers of what it
	// wrote at once).
	Committed func()
}

// Delivery is an event of a feed with its payload decoded (nil for an
// event of a type this binary does not know).
type Delivery struct {
	Event
	Payload Payload
}

// Feed reads the event log once for several consumers: one watermill-sql
// subscription, one read and one decode of each event, every consumer's
// statements sent together, and every checkpoint moved in the same
// transaction. Consumers that other processes also read for take turns
// with them (see SubscriberConfig.Consumers).
type Feed struct {
	Pool      *pgxpool.Pool // a reader pool (ReaderApplicationName)
	Registry  *Registry
	Consumers []Consumer
	// Wake returns a channel that receives when events may have been
	// committed; nil polls only.
	Wake func() <-chan struct{}
	// PollInterval is the fallback poll of an idle feed.
	PollInterval time.Duration
	// BatchSize is the number of events read per transaction (default 500).
	BatchSize int
	Logger    *slog.Logger
	// Observe, if set, is told of each batch: the events applied, or the
	// error that failed it (it is delivered again).
	Observe func(events int, err error)
	// Tracer, if set, starts a span per batch the consumers apply.
	Tracer trace.Tracer
}

// Run reads until ctx ends. Each batch is handled in the subscriber's own
// transaction (watermill-sql's TxFromContext): the messages are decoded as
// they arrive; after the batch's last one, every consumer handles the
// events after its checkpoint, and the statements they queued are sent
// with watermill's move of the checkpoints and the COMMIT (subscriberTx).
// A failure anywhere rolls the batch back, to be delivered again in a new
// transaction.
func (f *Feed) Run(ctx context.Context) error {
	if len(f.Consumers) == 0 {
		return errors.New("feed: no consumer")
	}
	names := make([]string, len(f.Consumers))
	for i, c := range f.Consumers {
		names[i] = c.Name
	}
	var wake <-chan struct{}
	if f.Wake != nil {
		wake = f.Wake()
	}
	batch := f.BatchSize
	if batch <= 0 {
		batch = 500
	}
	s := &feedSession{feed: f, names: names}
	tracer := f.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	flushCtx := context.WithoutCancel(ctx)
	sub, err := NewSubscriber(f.Pool, SubscriberConfig{
		Consumers:    names,
		PollInterval: f.PollInterval,
		Wake:         wake,
		Logger:       f.Logger,
		BatchSize:    batch,
		BeforeAck: func() error {
			ctx, span := tracer.Start(flushCtx, "feed.batch", trace.WithAttributes(attribute.StringSlice("opsgate.consumers", names)))
			// The batch is over when its transaction ends, after this.
			end := func(n int, err error) {
				span.SetAttributes(attribute.Int("opsgate.events", n))
				if err != nil {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
				}
				span.End()
				if f.Observe != nil && (n > 0 || err != nil) {
					f.Observe(n, err)
				}
			}
			tx, n, committed, err := s.flush(ctx)
			if err != nil || tx == nil {
				end(n, err)
				return err
			}
			tx.ended = func(err error) {
				if err == nil {
					for _, c := range committed {
						c()
					}
				}
				end(n, err)
			}
			return nil
		},
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
	msgs, err := sub.Subscribe(subCtx, TopicEvents)
	if err != nil {
		return fmt.Errorf("feed %v: subscribe: %w", names, err)
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
		if err := s.handle(ctx, msg); err != nil {
			if ctx.Err() != nil {
				stopSub()
				return ctx.Err()
			}
			f.Logger.Error("feed failed; its batch will be delivered again", "consumers", names, "err", err)
		}
		// Acknowledged even when it failed: watermill redelivers a nacked
		// message in the same transaction until the ack deadline, and a
		// failure here may be that transaction's (its connection died with
		// the database). A failed batch is failed as a whole instead: the
		// session passes over every message after it, and the flush before
		// the batch's acknowledgement fails, which rolls the transaction
		// back; the subscriber delivers the batch again in a new transaction.
		msg.Ack()
	}
}

// feedSession is what a feed knows of the subscriber transaction it is
// working in: the consumers' checkpoints as of its start, then the events
// decoded since the last flush. The handler and the flush run on
// different goroutines (the flush on watermill's, between the last ack of
// a batch and its commit).
type feedSession struct {
	feed  *Feed
	names []string

	mu     sync.Mutex
	tx     *subscriberTx
	at     map[string]Checkpoint
	events []Delivery
	// failed is the error that failed the batch of transaction failedTx:
	// its later messages are passed over and its flush fails.
	failed   error
	failedTx *subscriberTx
}

func (s *feedSession) handle(ctx context.Context, msg *message.Message) error {
	e, payload, err := s.feed.Registry.DecodeMessage(msg)
	if errors.Is(err, ErrUnknownEventType) {
		err = nil // delivered with a nil payload: consumers pass it over
	}
	tx, txErr := txOf(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if txErr != nil {
		return txErr
	}
	if s.failed != nil {
		if s.failedTx == tx {
			return nil // the batch failed already: passed over, delivered again later
		}
		s.failed, s.failedTx = nil, nil
	}
	fail := func(err error) error {
		s.failed, s.failedTx, s.tx = err, tx, nil
		return err
	}
	if s.tx != tx {
		// A new transaction: whatever an earlier one gathered rolled back
		// with it. The subscription reads after the least advanced of the
		// consumers' checkpoints, so each consumer of several is handed
		// only the events after its own; the one consumer of a feed is
		// handed every event read, and its checkpoint is the one the
		// events were read after.
		var at map[string]Checkpoint
		var readErr error
		if len(s.names) > 1 {
			at, readErr = ReadCheckpoints(ctx, tx.tx, s.names)
		} else {
			var after Checkpoint
			after, readErr = afterOf(msg)
			at = map[string]Checkpoint{s.names[0]: after}
		}
		if readErr != nil {
			return fail(readErr)
		}
		s.tx, s.at, s.events = tx, at, nil
	}
	if err != nil {
		return fail(fmt.Errorf("message %s: %w", msg.UUID, err))
	}
	s.events = append(s.events, Delivery{Event: e, Payload: payload})
	return nil
}

// flush hands the batch to every consumer, whose statements are held in
// the subscriber's transaction, to be sent with watermill's move of the
// checkpoints and the COMMIT. It returns that transaction (nil if the
// batch had no events), the number of events, and the Committed hooks of
// the consumers that were handed some.
func (s *feedSession) flush(ctx context.Context) (*subscriberTx, int, []func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failed; err != nil {
		s.failed, s.failedTx = nil, nil
		return nil, 0, nil, err
	}
	if s.tx == nil || len(s.events) == 0 {
		return nil, 0, nil, nil
	}
	var committed []func()
	tx := s.tx
	// The consumers' statements are held back together, after every
	// Prepare (each reads as of the batch's start, not after the writes of
	// the consumers before it).
	var b pgx.Batch
	for _, c := range s.feed.Consumers {
		at := s.at[c.Name]
		first := len(s.events)
		for i, d := range s.events {
			if at.Before(d.Event) {
				first = i
				break
			}
		}
		if first == len(s.events) {
			continue // redelivered: applied before
		}
		if c.Prepare != nil {
			if err := c.Prepare(ctx, tx.tx, at, s.events[first:]); err != nil {
				s.tx, s.events = nil, nil
				return nil, 0, nil, fmt.Errorf("%s: %w", c.Name, err)
			}
		}
		if err := c.Apply(ctx, &b, s.events[first:]); err != nil {
			// The transaction rolls back: the next one starts afresh.
			s.tx, s.events = nil, nil
			return nil, 0, nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		if c.Committed != nil {
			committed = append(committed, c.Committed)
		}
	}
	tx.tx.deferred.QueuedQueries = append(tx.tx.deferred.QueuedQueries, b.QueuedQueries...)
	n := len(s.events)
	// What was gathered is the transaction's now: whether it commits or
	// not, a later batch is read in another one.
	s.tx, s.events = nil, nil
	return tx, n, committed, nil
}

// txOf returns the transaction a message of a subscriber was read in.
func txOf(msg *message.Message) (*subscriberTx, error) {
	wtx, ok := watermillsql.TxFromContext(msg.Context())
	if !ok {
		return nil, fmt.Errorf("message %s carries no subscriber transaction", msg.UUID)
	}
	tx, ok := wtx.(*subscriberTx)
	if !ok {
		return nil, fmt.Errorf("subscriber transaction is %T, not the event log's", wtx)
	}
	return tx, nil
}
