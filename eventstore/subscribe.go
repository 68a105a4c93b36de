package eventstore

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
)

func encodeMessage(e Event) (*message.Message, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode message for event %s: %w", e.ID, err)
	}
	msg := message.NewMessage(e.ID, body)
	msg.Metadata.Set("event_type", e.Type)
	msg.Metadata.Set("stream_id", e.StreamID)
	return msg, nil
}

// decodeMessageBody returns the event of a message payload.
func decodeMessageBody(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("decode event message: %w", err)
	}
	return e, nil
}

// ReaderApplicationName is the application_name of connections that never
// append events (subscribers: projectors, the worker's and the process
// manager's subscriptions). Readers do not wait for their transactions
// (see migrations/00005_horizon.sql), so a subscriber's own transaction
// does not hold back the others. Never append events on such a connection.
const ReaderApplicationName = "opsgate_reader"

// SubscriberConfig configures a watermill subscriber on the store's topics.
type SubscriberConfig struct {
	// ConsumerGroup names the reader; each group sees every event once
	// acknowledged (at least once in all).
	ConsumerGroup string
	// PollInterval is how long an idle subscriber waits before it looks
	// again, unless Wake fires first. Default 100ms.
	PollInterval time.Duration
	// BatchSize is the number of events read per query. Default 100.
	BatchSize int
	// Wake, if set, is a channel that receives when new events may have been
	// committed (for example from LISTEN/NOTIFY); an idle subscriber then
	// looks at once instead of waiting for PollInterval.
	Wake <-chan struct{}
	// AckDeadline bounds how long a message may stay unacknowledged before
	// it is redelivered. Default 30s.
	AckDeadline time.Duration
	// BeforeAck, if set, runs on the subscriber's goroutine after the last
	// message of a batch was acknowledged and before the subscriber
	// records the acknowledgement in its transaction and commits: a
	// handler that queued its writes in that transaction sends them here.
	// An error rolls the transaction back; the batch is delivered again.
	BeforeAck func() error
	Logger    *slog.Logger
}

// NewSubscriber returns a watermill-sql subscriber over the store's tables.
func NewSubscriber(pool *pgxpool.Pool, cfg SubscriberConfig) (*watermillsql.Subscriber, error) {
	if cfg.ConsumerGroup == "" {
		return nil, fmt.Errorf("new subscriber: consumer group is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.AckDeadline <= 0 {
		cfg.AckDeadline = 30 * time.Second
	}
	var logger watermill.LoggerAdapter = watermill.NopLogger{}
	if cfg.Logger != nil {
		logger = watermillLogger(cfg.Logger)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	ack := cfg.AckDeadline
	drained := &atomic.Bool{}
	sub, err := watermillsql.NewSubscriber(watermillsql.BeginnerFromPgx(pool), watermillsql.SubscriberConfig{
		ConsumerGroup:  cfg.ConsumerGroup,
		AckDeadline:    &ack,
		PollInterval:   cfg.PollInterval,
		ResendInterval: cfg.PollInterval,
		RetryInterval:  time.Second,
		BackoffManager: &wakeBackoff{
			inner:   watermillsql.NewDefaultBackoffManager(cfg.PollInterval, time.Second),
			poll:    cfg.PollInterval,
			wake:    cfg.Wake,
			drained: drained,
		},
		SchemaAdapter:  readCommittedSchema{watermillsql.DefaultPostgreSQLSchema{SubscribeBatchSize: cfg.BatchSize}},
		OffsetsAdapter: ackingOffsets{beforeAck: cfg.BeforeAck, batchSize: cfg.BatchSize, drained: drained},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("new subscriber %s: %w", cfg.ConsumerGroup, err)
	}
	return sub, nil
}

// wakeBackoff is watermill's default backoff, except that an idle
// subscriber waits for a wake-up (bounded by the poll interval) instead of
// sleeping the whole interval. watermill calls HandleError between queries,
// so blocking here is the subscriber's idle wait. A subscriber is idle
// when its query found nothing, and also after a batch shorter than the
// batch size: that batch took everything there was to read, so another
// query right away would only find nothing (a commit meanwhile has left a
// wake-up, which ends the wait at once).
type wakeBackoff struct {
	inner   watermillsql.BackoffManager
	poll    time.Duration
	wake    <-chan struct{}
	drained *atomic.Bool
}

// HandleError runs after each query's transaction has ended.
func (b *wakeBackoff) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if errors.Is(err, context.Canceled) {
		return b.poll // the subscription is stopping: nothing to report
	}
	d := b.inner.HandleError(logger, noMsg, err)
	drained := b.drained.Swap(false)
	if err != nil || (!noMsg && !drained) || b.wake == nil {
		return d
	}
	timer := time.NewTimer(b.poll)
	defer timer.Stop()
	select {
	case <-b.wake:
	case <-timer.C:
	}
	return 0
}

// ackingOffsets is watermill's PostgreSQL offsets adapter, called when
// watermill asks for the query that acknowledges a batch: that is after
// the batch's last message was acknowledged and before the query runs in
// the batch's transaction. It calls beforeAck there, and notes whether the
// batch drained what there was to read.
type ackingOffsets struct {
	watermillsql.DefaultPostgreSQLOffsetsAdapter
	beforeAck func() error
	batchSize int
	drained   *atomic.Bool
}

func (o ackingOffsets) AckMessageQuery(params watermillsql.AckMessageQueryParams) (watermillsql.Query, error) {
	if o.beforeAck != nil {
		if err := o.beforeAck(); err != nil {
			return watermillsql.Query{}, err
		}
	}
	rows := params.Rows
	allAcked := len(rows) > 0 && rows[len(rows)-1].Offset == params.LastRow.Offset
	o.drained.Store(allAcked && len(rows) < o.batchSize)
	return o.DefaultPostgreSQLOffsetsAdapter.AckMessageQuery(params)
}

// readCommittedSchema is watermill's PostgreSQL schema with READ COMMITTED
// subscriber transactions, reading below this database's horizon
// (opsgate_horizon) rather than below the oldest transaction of the whole
// server, so that a long transaction in another database does not hold
// our subscribers back. Its select reads below pg_snapshot_xmin within a
// single statement, which needs no wider snapshot; handlers that write in
// the subscriber's transaction (TxFromContext) then see every commit made
// before each of their statements, as the rest of opsgate does.
type readCommittedSchema struct {
	watermillsql.DefaultPostgreSQLSchema
}

func (readCommittedSchema) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelReadCommitted
}

// watermillLogger logs watermill's routine info lines (subscribe, stop,
// back off) at debug level; its warnings and errors stay as they are.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}

// SelectQuery is watermill's, with the server-wide horizon replaced by
// this database's.
func (s readCommittedSchema) SelectQuery(params watermillsql.SelectQueryParams) (watermillsql.Query, error) {
	q, err := s.DefaultPostgreSQLSchema.SelectQuery(params)
	if err != nil {
		return q, err
	}
	const serverWide = "pg_snapshot_xmin(pg_current_snapshot())"
	if !strings.Contains(q.Query, serverWide) {
		return q, fmt.Errorf("watermill's select query no longer reads below %s; review readCommittedSchema", serverWide)
	}
	q.Query = strings.Replace(q.Query, serverWide, "(SELECT opsgate_horizon())", 1) // an InitPlan: evaluated once per query
	return q, nil
}
