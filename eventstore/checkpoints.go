package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/internal/pg"
)

// The consumers' checkpoints and their SQL: feed_checkpoints holds, per
// consumer, the point in subscriber order (transaction id, position) of
// the last event it applied. Feeds move them (the offsets adapter below);
// the read-your-writes barrier, the metrics and the projections' rebuild
// read and set them through the functions here.

// Checkpoint is a point in subscriber order: the last event a consumer
// applied.
type Checkpoint struct {
	TxID     uint64
	Position int64
}

// PointOf is the point of e in subscriber order.
func PointOf(e Event) Checkpoint { return Checkpoint{TxID: e.TxID, Position: e.Position} }

// Before reports whether c comes before e in subscriber order, that is
// whether a consumer at c has yet to apply e.
func (c Checkpoint) Before(e Event) bool { return c.Precedes(PointOf(e)) }

// String is c as transaction id/position.
func (c Checkpoint) String() string {
	return strconv.FormatUint(c.TxID, 10) + "/" + strconv.FormatInt(c.Position, 10)
}

// Precedes reports whether c comes before d in subscriber order.
func (c Checkpoint) Precedes(d Checkpoint) bool {
	return d.TxID > c.TxID || (d.TxID == c.TxID && d.Position > c.Position)
}

// ReadCheckpoints returns the checkpoints of consumers (a consumer without
// one is at the beginning of the log).
func ReadCheckpoints(ctx context.Context, q pg.Querier, consumers []string) (map[string]Checkpoint, error) {
	return readCheckpoints(ctx, q, `SELECT consumer, (tx_id::text)::bigint, position FROM feed_checkpoints WHERE consumer = ANY($1::text[])`, consumers)
}

func readCheckpoints(ctx context.Context, q pg.Querier, query string, consumers []string) (map[string]Checkpoint, error) {
	rows, err := q.Query(ctx, query, consumers)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Checkpoint, len(consumers))
	for rows.Next() {
		var name string
		var txID int64
		var c Checkpoint
		if err := rows.Scan(&name, &txID, &c.Position); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", err)
		}
		c.TxID = uint64(txID)
		out[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

// Head returns the point of the newest event in subscriber order (ok
// false when the log is empty), whether or not it is below the horizon
// yet: what a reader that must see every commit made so far waits for.
func Head(ctx context.Context, q pg.Querier) (c Checkpoint, ok bool, err error) {
	var txID int64
	err = q.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1`).Scan(&txID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read the head of the log: %w", err)
	}
	c.TxID = uint64(txID)
	return c, true, nil
}

// Reached reports whether consumer has applied every event up to c.
func Reached(ctx context.Context, q pg.Querier, consumer string, c Checkpoint) (bool, error) {
	var done bool
	err := q.QueryRow(ctx, `SELECT coalesce((SELECT (tx_id, position) >= ($2::bigint::text::xid8, $3)
		FROM feed_checkpoints WHERE consumer = $1), false)`, consumer, int64(c.TxID), c.Position).Scan(&done)
	if err != nil {
		return false, fmt.Errorf("read the checkpoint of %s: %w", consumer, err)
	}
	return done, nil
}

// SetCheckpoint puts consumer's checkpoint at c, for a caller that
// applied every event up to c itself (a rebuild of its read model).
func SetCheckpoint(ctx context.Context, q pg.Querier, consumer string, c Checkpoint) error {
	_, err := q.Exec(ctx, `INSERT INTO feed_checkpoints (consumer, tx_id, position) VALUES ($1, $2::bigint::text::xid8, $3)
		ON CONFLICT (consumer) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, updated_at = clock_timestamp()`,
		consumer, int64(c.TxID), c.Position)
	if err != nil {
		return fmt.Errorf("move the checkpoint of %s: %w", consumer, err)
	}
	return nil
}

// LockStrength is how LockCheckpoints holds the checkpoints.
type LockStrength string

const (
	// ForShare lets other readers hold them too; no feed moves them.
	ForShare LockStrength = "SHARE"
	// ForUpdate holds them alone.
	ForUpdate LockStrength = "UPDATE"
)

// LockCheckpoints locks the checkpoints of consumers in tx, in name order
// as every feed does, and returns them: until tx ends, no feed applies
// anything for them (a feed that reads for one waits at its first
// statement). A consumer without a checkpoint is left out.
func LockCheckpoints(ctx context.Context, tx pg.Querier, consumers []string, strength LockStrength) (map[string]Checkpoint, error) {
	return readCheckpoints(ctx, tx, `SELECT consumer, (tx_id::text)::bigint, position FROM feed_checkpoints
		WHERE consumer = ANY($1::text[]) ORDER BY consumer FOR `+string(strength), consumers)
}

// SlowestCheckpoint returns the least advanced checkpoint of consumers,
// read in one statement while feeds move on; the beginning of the log if
// one of them has none.
func SlowestCheckpoint(ctx context.Context, q pg.Querier, consumers []string) (Checkpoint, error) {
	var c Checkpoint
	var n int
	var txID int64
	err := q.QueryRow(ctx, `SELECT count(*) OVER (), (tx_id::text)::bigint, position FROM feed_checkpoints
		WHERE consumer = ANY($1::text[]) ORDER BY tx_id, position LIMIT 1`, consumers).Scan(&n, &txID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read checkpoints: %w", err)
	}
	if n < len(consumers) {
		return Checkpoint{}, nil
	}
	c.TxID = uint64(txID)
	return c, nil
}

// ConsumerLags returns how far each of consumers trails the log: the age
// of the oldest event after its checkpoint, 0 when it has applied every
// event. A consumer without a checkpoint is left out.
func (s *Store) ConsumerLags(ctx context.Context, consumers []string) (map[string]time.Duration, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.consumer, coalesce(extract(epoch FROM clock_timestamp() - (
			SELECT e.recorded_at FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
			ORDER BY e.tx_id, e.position LIMIT 1)), 0)::float8
		FROM feed_checkpoints c WHERE c.consumer = ANY($1::text[])`, consumers)
	if err != nil {
		return nil, fmt.Errorf("read consumer lags: %w", err)
	}
	defer rows.Close()
	lags := make(map[string]time.Duration, len(consumers))
	for rows.Next() {
		var name string
		var seconds float64
		if err := rows.Scan(&name, &seconds); err != nil {
			return nil, fmt.Errorf("read consumer lags: %w", err)
		}
		lags[name] = time.Duration(seconds * float64(time.Second))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read consumer lags: %w", err)
	}
	return lags, nil
}

// checkpoints is the watermill-sql offsets adapter of feed_checkpoints.
// watermill asks for the acknowledging query after the batch's last
// message was acknowledged and before it runs the query in the batch's
// transaction: it calls beforeAck there, and notes whether the batch
// drained what there was to read.
type checkpoints struct {
	consumers []string
	beforeAck func() error
	batchSize int
	drained   *atomic.Bool
}

// AckMessageQuery moves every consumer's checkpoint to the last
// acknowledged event, never back (a consumer another subscription read
// further for keeps its place).
func (c checkpoints) AckMessageQuery(params watermillsql.AckMessageQueryParams) (watermillsql.Query, error) {
	if c.beforeAck != nil {
		if err := c.beforeAck(); err != nil {
			return watermillsql.Query{}, err
		}
	}
	rows := params.Rows
	allAcked := len(rows) > 0 && rows[len(rows)-1].Offset == params.LastRow.Offset
	c.drained.Store(allAcked && len(rows) < c.batchSize)
	return watermillsql.Query{
		Query: `UPDATE feed_checkpoints SET tx_id = $1::bigint::text::xid8, position = $2, updated_at = clock_timestamp()
			WHERE consumer = ANY($3::text[]) AND (tx_id, position) < ($1::bigint::text::xid8, $2)`,
		Args: []any{params.LastRow.ExtraData["tx_id"], params.LastRow.Offset, c.consumers},
	}, nil
}

// BeforeSubscribingQueries gives every consumer a checkpoint at the
// beginning of the log if it has none.
func (c checkpoints) BeforeSubscribingQueries(watermillsql.BeforeSubscribingQueriesParams) ([]watermillsql.Query, error) {
	return []watermillsql.Query{{
		Query: `INSERT INTO feed_checkpoints (consumer, tx_id, position)
			SELECT unnest($1::text[]), '0', 0 ON CONFLICT (consumer) DO NOTHING`,
		Args: []any{c.consumers},
	}}, nil
}

// NextOffsetQuery is not used: SelectQuery reads the checkpoints itself.
func (checkpoints) NextOffsetQuery(watermillsql.NextOffsetQueryParams) (watermillsql.Query, error) {
	return watermillsql.Query{}, nil
}

// ConsumedMessageQuery returns none: nothing to record per message.
func (checkpoints) ConsumedMessageQuery(watermillsql.ConsumedMessageQueryParams) (watermillsql.Query, error) {
	return watermillsql.Query{}, nil
}

// SchemaInitializingQueries returns none: the migrations create the table.
func (checkpoints) SchemaInitializingQueries(watermillsql.OffsetsSchemaInitializingQueriesParams) ([]watermillsql.Query, error) {
	return nil, nil
}
