package eventstore

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Subscribers read the event log itself: the events table is the topic
// (watermill-sql's schema adapter below describes it), and each reader's
// offset is its checkpoint in feed_checkpoints (the offsets adapter). An
// event is thus written once, by the append, and a subscription moves the
// checkpoints of every consumer it reads for in its own transaction.

// TopicEvents is the topic of every appended event: the events table.
const TopicEvents = "events"

// ReaderApplicationName is the application_name of connections that never
// append events (subscribers: projectors, the process manager). Readers do
// not wait for their transactions (see migrations/00005_horizon.sql), so a
// subscriber's own transaction does not hold back the others. Never append
// events on such a connection.
const ReaderApplicationName = "opsgate_reader"

// SubscriberConfig configures a watermill subscriber on the event log.
type SubscriberConfig struct {
	// Consumers name the readers the subscription reads for: it reads after
	// the least advanced of their checkpoints, holds their checkpoint rows
	// (so that no other transaction reads for any of them meanwhile) and
	// moves every one of them to the last event it acknowledged. At least
	// one.
	Consumers []string
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
	// message of a batch was acknowledged and before the subscriber moves
	// the checkpoints in its transaction and commits: a handler that queued
	// its writes in that transaction sends them here. An error rolls the
	// transaction back; the batch is delivered again.
	BeforeAck func() error
	Logger    *slog.Logger
}

// NewSubscriber returns a watermill-sql subscriber of TopicEvents over the
// event log. Messages carry the event in their payload (its data) and
// metadata (the rest); Registry.DecodeMessage reads them.
func NewSubscriber(pool *pgxpool.Pool, cfg SubscriberConfig) (*watermillsql.Subscriber, error) {
	if len(cfg.Consumers) == 0 {
		return nil, fmt.Errorf("new subscriber: at least one consumer is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.AckDeadline <= 0 {
		cfg.AckDeadline = 30 * time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	var logger watermill.LoggerAdapter = watermill.NopLogger{}
	if cfg.Logger != nil {
		logger = watermillLogger(cfg.Logger)
	}
	ack := cfg.AckDeadline
	drained := &atomic.Bool{}
	sub, err := watermillsql.NewSubscriber(newSubscriberDB(pool), watermillsql.SubscriberConfig{
		ConsumerGroup:  fmt.Sprint(cfg.Consumers),
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
		SchemaAdapter:  eventLog{consumers: cfg.Consumers, batchSize: cfg.BatchSize},
		OffsetsAdapter: checkpoints{consumers: cfg.Consumers, beforeAck: cfg.BeforeAck, batchSize: cfg.BatchSize, drained: drained},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("new subscriber %v: %w", cfg.Consumers, err)
	}
	return sub, nil
}

// eventLog is the watermill-sql schema adapter of the events table.
type eventLog struct {
	consumers []string
	batchSize int
}

// SelectQuery reads, in subscriber order, the events after the least
// advanced checkpoint of the consumers (each row carries that
// checkpoint), below this database's reading horizon (opsgate_horizon:
// every transaction of this database still in flight, readers excepted,
// could yet commit an event before it). It locks the consumers'
// checkpoint rows first, in name order, so that subscriptions that read
// for overlapping consumers (in other processes) take turns, and never
// deadlock. The lower bound is given as scalar
// subqueries (parameters of the plan), which the index on (tx_id,
// position) can start from; a join with the checkpoint would filter every
// event of the log.
func (l eventLog) SelectQuery(watermillsql.SelectQueryParams) (watermillsql.Query, error) {
	return watermillsql.Query{
		Query: `WITH held AS (
				SELECT tx_id, position FROM feed_checkpoints WHERE consumer = ANY($1::text[]) ORDER BY consumer FOR UPDATE
			), after AS (
				SELECT tx_id, position FROM held ORDER BY tx_id, position LIMIT 1
			)
			SELECT e.position, (e.tx_id::text)::bigint, e.event_id, e.stream_id, e.stream_version, e.event_type,
				e.schema_version, e.payload, e.metadata, e.recorded_at,
				((SELECT tx_id FROM after)::text)::bigint, (SELECT position FROM after)
			FROM events e
			WHERE (e.tx_id, e.position) > ((SELECT tx_id FROM after), (SELECT position FROM after))
				AND e.tx_id < (SELECT opsgate_horizon())
			ORDER BY e.tx_id, e.position
			LIMIT $2`,
		Args: []any{l.consumers, l.batchSize},
	}, nil
}

// UnmarshalMessage turns an event row into a message: the event's data is
// the payload, the rest travels in the metadata.
func (eventLog) UnmarshalMessage(params watermillsql.UnmarshalMessageParams) (watermillsql.Row, error) {
	var e Event
	var txID, afterTx int64
	var md []byte
	var after Checkpoint
	err := params.Row.Scan(&e.Position, &txID, &e.ID, &e.StreamID, &e.StreamVersion, &e.Type, &e.SchemaVersion,
		(*[]byte)(&e.Data), &md, &e.RecordedAt, &afterTx, &after.Position)
	if err != nil {
		return watermillsql.Row{}, fmt.Errorf("scan event: %w", err)
	}
	e.TxID, after.TxID = uint64(txID), uint64(afterTx)
	msg := messageOf(e, md)
	msg.Metadata.Set(metaAfter, after.String())
	return watermillsql.Row{
		Offset: e.Position, UUID: []byte(e.ID), Payload: e.Data, Metadata: md, Msg: msg,
		ExtraData: map[string]any{"tx_id": txID},
	}, nil
}

// afterOf returns the checkpoint the batch of msg was read after.
func afterOf(msg *message.Message) (Checkpoint, error) {
	var c Checkpoint
	if _, err := fmt.Sscanf(msg.Metadata.Get(metaAfter), "%d/%d", &c.TxID, &c.Position); err != nil {
		return Checkpoint{}, fmt.Errorf("message %s: the checkpoint read after: %w", msg.UUID, err)
	}
	return c, nil
}

// messageOf is the message of e, whose metadata is md (JSON).
func messageOf(e Event, md []byte) *message.Message {
	msg := message.NewMessage(e.ID, message.Payload(e.Data))
	msg.Metadata = message.Metadata{
		metaType:          e.Type,
		metaPosition:      strconv.FormatInt(e.Position, 10),
		metaTxID:          strconv.FormatUint(e.TxID, 10),
		metaStream:        e.StreamID,
		metaStreamVersion: strconv.FormatInt(e.StreamVersion, 10),
		metaSchemaVersion: strconv.Itoa(e.SchemaVersion),
		metaRecordedAt:    e.RecordedAt.Format(time.RFC3339Nano),
		metaMetadata:      string(md),
	}
	return msg
}

// InsertQuery refuses: events are published by appending them.
func (eventLog) InsertQuery(watermillsql.InsertQueryParams) (watermillsql.Query, error) {
	return watermillsql.Query{}, errors.New("events are published by Tx.Append, not by a watermill publisher")
}

// SchemaInitializingQueries returns none: the migrations create the tables.
func (eventLog) SchemaInitializingQueries(watermillsql.SchemaInitializingQueriesParams) ([]watermillsql.Query, error) {
	return nil, nil
}

// SubscribeIsolationLevel is READ COMMITTED: the select reads below the
// horizon within one statement, which needs no wider snapshot, and
// handlers that write in the subscriber's transaction then see every
// commit made before each of their statements, as the rest of opsgate does.
func (eventLog) SubscribeIsolationLevel() stdsql.IsolationLevel { return stdsql.LevelReadCommitted }

// The metadata keys of an event message.
const (
	metaType          = "event_type"
	metaPosition      = "position"
	metaTxID          = "tx_id"
	metaStream        = "stream_id"
	metaStreamVersion = "stream_version"
	metaSchemaVersion = "schema_version"
	metaRecordedAt    = "recorded_at"
	metaMetadata      = "metadata"
	// metaAfter is the checkpoint the message's batch was read after.
	metaAfter = "after"
)

// EventOf returns the event a message of a subscriber carries, its data
// undecoded.
func EventOf(msg *message.Message) (Event, error) {
	md := msg.Metadata
	e := Event{ID: msg.UUID, Type: md.Get(metaType), StreamID: md.Get(metaStream), Data: json.RawMessage(msg.Payload)}
	var err error
	number := func(key string) int64 {
		n, perr := strconv.ParseInt(md.Get(key), 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("message %s: %s: %w", msg.UUID, key, perr)
		}
		return n
	}
	e.Position, e.TxID = number(metaPosition), uint64(number(metaTxID))
	e.StreamVersion, e.SchemaVersion = number(metaStreamVersion), int(number(metaSchemaVersion))
	if err != nil {
		return Event{}, err
	}
	if e.RecordedAt, err = time.Parse(time.RFC3339Nano, md.Get(metaRecordedAt)); err != nil {
		return Event{}, fmt.Errorf("message %s: recorded_at: %w", msg.UUID, err)
	}
	if raw := md.Get(metaMetadata); raw != "" {
		if err := json.Unmarshal([]byte(raw), &e.Metadata); err != nil {
			return Event{}, fmt.Errorf("message %s: metadata: %w", msg.UUID, err)
		}
	}
	return e, nil
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

// watermillLogger logs watermill's routine info lines (subscribe, stop,
// back off) at debug level; its warnings and errors stay as they are.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}
