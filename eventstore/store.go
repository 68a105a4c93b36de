package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// Store appends events to PostgreSQL and reads them back.
type Store struct {
	pool     *pgxpool.Pool
	registry *Registry
	route    Route
	onCommit func(topics []string)
}

// Route returns the topics an event of eventType is announced on besides
// TopicEvents (or none): a commit wakes the subscribers of the topics of
// its events (see WithCommitHook and Notifier).
type Route func(eventType string) []string

// Option configures a Store.
type Option func(*Store)

// WithCommitHook calls fn after every committed transaction of the store
// that appended events, with the topics of its events (for example
// Notifier.Committed, to wake subscribers).
func WithCommitHook(fn func(topics []string)) Option {
	return func(s *Store) { s.onCommit = fn }
}

// New returns a store over pool that encodes payloads with registry and
// announces each commit on TopicEvents and on the topics route gives its
// events. The route is required: a waiter on a topic the store never
// announces would wait for its poll interval every time.
func New(pool *pgxpool.Pool, registry *Registry, route Route, opts ...Option) *Store {
	if route == nil {
		panic("eventstore: New needs a route (return nil for events that travel on TopicEvents alone)")
	}
	s := &Store{pool: pool, registry: registry, route: route}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Registry returns the registry the store decodes with.
func (s *Store) Registry() *Registry { return s.registry }

// Pool returns the connection pool of the store.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// InTx runs fn in one READ COMMITTED transaction and commits if fn returns
// nil. Everything fn appends is published with the commit: the event log
// is what subscribers read.
// The transaction begins with its first round trip: a first batch
// carries the BEGIN with it.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer conn.Release()
	tx := &Tx{conn: conn, store: s}
	defer tx.rollback(context.WithoutCancel(ctx))
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if tx.tx == nil && tx.deferred.Len() == 0 {
		return nil // nothing to send: nothing to commit
	}
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if s.onCommit != nil && len(tx.topics) > 0 {
		s.onCommit(tx.topics)
	}
	return nil
}

// Tx is an open store transaction.
//
// Statements whose answer nobody waits for (whatever the caller passes to
// Defer) are held back and sent
// together, in one round trip, just before the transaction's next
// statement, or with its COMMIT in the commit's round trip. Program order
// is kept; an error of a held-back statement is returned by the call that
// sends it (at the latest, by InTx's commit, which then does not commit).
// A subscription's transaction is one too (subscriberTx), without a store:
// it reads and writes, and never appends.
type Tx struct {
	conn     *pgxpool.Conn
	tx       pgx.Tx // nil until the first round trip
	store    *Store
	deferred pgx.Batch
	topics   []string // of the events appended so far
	// committed is set when the COMMIT went with held-back statements
	// (commit), which pgx's transaction does not know of.
	committed bool
}

var readCommitted = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// ready prepares the transaction for a statement of its own: it begins
// the transaction, or sends the held-back statements, if either is due.
func (t *Tx) ready(ctx context.Context) error {
	if t.deferred.Len() > 0 {
		if err := t.SendBatch(ctx, &pgx.Batch{}).Close(); err != nil {
			return fmt.Errorf("held-back statements: %w", err)
		}
		return nil
	}
	if t.tx == nil {
		tx, err := t.conn.BeginTx(ctx, readCommitted)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		t.tx = tx
	}
	return nil
}

// commit commits the transaction. Statements still held back are sent
// with the COMMIT in one round trip (the BEGIN too, when the transaction
// has not begun): a statement that fails there fails the commit, and the
// COMMIT is then not run.
func (t *Tx) commit(ctx context.Context) error {
	if t.deferred.Len() == 0 {
		return t.tx.Commit(ctx)
	}
	var b pgx.Batch
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
	if err := t.SendBatch(ctx, &b).Close(); err != nil {
		return err
	}
	t.committed = true
	return nil
}

// rollback ends the transaction if it began and was not committed.
func (t *Tx) rollback(ctx context.Context) {
	if t.tx != nil && !t.committed {
		_ = t.tx.Rollback(ctx) // a no-op after Commit
	}
}

// Defer holds back a statement that returns nothing the caller needs, to
// be sent with the transaction's next round trip.
func (t *Tx) Defer(sql string, args ...any) {
	t.deferred.Queue(sql, args...)
}

// Exec runs a statement in the transaction (state kept beside the events).
func (t *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.ready(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.tx.Exec(ctx, sql, args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.ready(ctx); err != nil {
		return nil, err
	}
	return t.tx.Query(ctx, sql, args...)
}

// QueryRow runs a query returning one row in the transaction.
func (t *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.ready(ctx); err != nil {
		return errRow{err}
	}
	return t.tx.QueryRow(ctx, sql, args...)
}

// SendBatch sends the statements of b in one round trip within the
// transaction (state kept beside the events), after the held-back ones
// and, in the transaction's first round trip, its BEGIN; the caller
// closes the results before its next statement. Read b's results through
// the callbacks of its queued queries (or Close), not by position.
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	all := &pgx.Batch{}
	if t.tx == nil {
		all.BeginTx(readCommitted)
	}
	all.QueuedQueries = append(all.QueuedQueries, t.deferred.QueuedQueries...)
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	t.deferred = pgx.Batch{}
	if t.tx == nil {
		br := t.conn.SendBatch(ctx, all)
		t.tx = br.Tx()
		return br
	}
	return t.tx.SendBatch(ctx, all)
}

// errRow carries the error of readying the transaction to a caller that
// expected a row.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// streamVersion returns the version of stream's newest event, 0 for none.
func (t *Tx) streamVersion(ctx context.Context, stream string) (int64, error) {
	var v int64
	err := t.QueryRow(ctx,
		`SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, stream).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("version of %s: %w", stream, err)
	}
	return v, nil
}

// Record is a payload with the metadata it is recorded with.
type Record struct {
	Payload  Payload
	Metadata Metadata
}

// Records returns payloads as records that share md.
func Records(md Metadata, payloads ...Payload) []Record {
	recs := make([]Record, len(payloads))
	for i, p := range payloads {
		recs[i] = Record{Payload: p, Metadata: md}
	}
	return recs
}

// AppendOption says what Append may assume of the stream's version.
type AppendOption func(*appendOptions)

type appendOptions struct {
	expect int64 // AnyVersion: no check
	at     int64 // >= 0: the stream is at this version, read nothing
}

// ExpectVersion makes Append check that the stream is at version v
// (NoStream: it does not exist yet); a mismatch, also one caused by a
// concurrent append, is a *VersionConflictError.
func ExpectVersion(v int64) AppendOption {
	return func(o *appendOptions) { o.expect = v }
}

// AtVersion tells Append that the stream is at version v, for a caller
// that holds the stream's lock and knows its version (from a snapshot kept
// in the same transactions): the version is not read. A wrong version
// still fails, with a *VersionConflictError, on the unique key of stream
// and version, and aborts the transaction.
func AtVersion(v int64) AppendOption {
	return func(o *appendOptions) { o.at = v }
}

// Append appends recs to stream within the transaction, as the versions
// after the stream's current one. By default it checks nothing about the stream's version;
// see ExpectVersion and AtVersion.
func (t *Tx) Append(ctx context.Context, stream string, recs []Record, opts ...AppendOption) ([]Event, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	o := appendOptions{expect: AnyVersion, at: -1}
	for _, opt := range opts {
		opt(&o)
	}
	current := o.at
	if current < 0 {
		var err error
		if current, err = t.streamVersion(ctx, stream); err != nil {
			return nil, err
		}
	}
	if o.expect != AnyVersion && current != o.expect {
		return nil, &VersionConflictError{Stream: stream, Expected: o.expect, Actual: current}
	}
	return t.insert(ctx, stream, current, recs)
}

// StreamAppend is records to append to one stream at its known version
// (see AtVersion).
type StreamAppend struct {
	Stream  string
	At      int64
	Records []Record
}

// DeferAppendStreams appends to several streams at once, each after its
// known version (the caller holds every stream's lock and knows its
// version, see AtVersion), in one statement, for a caller that needs
// nothing back of the events: the INSERT is held back (Defer) and sent
// with the transaction's next round trip, at the latest with the
// commit's, so that it costs no round trip of its own. Callers append under their
// streams' locks (Tx.Lock, QueueLocks), so a version conflict, which
// would fail the call that sends it, does not happen.
func (t *Tx) DeferAppendStreams(appends []StreamAppend) error {
	events, recs := eventsOf(appends)
	if len(events) == 0 {
		return nil
	}
	args, err := t.encodeEvents(events, recs)
	if err != nil {
		return err
	}
	t.Defer(insertSQL, args...)
	t.announce(events)
	return nil
}

// eventsOf returns the events of appends (stream, version and metadata
// set) and their records, in order.
func eventsOf(appends []StreamAppend) ([]Event, []Record) {
	var events []Event
	var recs []Record
	for _, a := range appends {
		for i, rec := range a.Records {
			events = append(events, Event{StreamID: a.Stream, StreamVersion: a.At + int64(i) + 1, Metadata: rec.Metadata})
		}
		recs = append(recs, a.Records...)
	}
	return events, recs
}

func (t *Tx) insert(ctx context.Context, stream string, current int64, recs []Record) ([]Event, error) {
	events := make([]Event, len(recs))
	for i, rec := range recs {
		events[i] = Event{StreamID: stream, StreamVersion: current + int64(i) + 1, Metadata: rec.Metadata}
	}
	if err := t.insertEvents(ctx, events, recs); err != nil {
		return nil, err
	}
	return events, nil
}

// insertSQL inserts events from arrays of columns: the same statement
// whatever their number, so that it is prepared once.
const insertSQL = `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[], $6::text[], $7::json[], $8::json[])`

// encodeEvents gives events (stream, version and metadata set) their ids,
// types and payloads from their records, and returns insertSQL's
// arguments.
func (t *Tx) encodeEvents(events []Event, recs []Record) ([]any, error) {
	n := len(recs)
	streams, ids, types, tenants := make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
	versions, schemas := make([]int64, n), make([]int32, n)
	payloads, metadata := make([]string, n), make([]Metadata, n)
	for i, rec := range recs {
		name, version, data, err := t.store.registry.encode(rec.Payload)
		if err != nil {
			return nil, fmt.Errorf("append to %s: %w", events[i].StreamID, err)
		}
		e := &events[i]
		e.ID, e.Type, e.SchemaVersion, e.Data = ulid.Make().String(), name, version, data
		streams[i], versions[i], ids[i], types[i], schemas[i] = e.StreamID, e.StreamVersion, e.ID, name, int32(version)
		if tenant := rec.Metadata.TenantID; tenant != "" {
			tenants[i] = &tenant
		}
		payloads[i], metadata[i] = string(data), rec.Metadata
	}
	return []any{streams, versions, ids, types, schemas, tenants, payloads, metadata}, nil
}

// insertEvents inserts events (stream, version and metadata set; the
// payload of each is its record's) in one statement, and sets each
// event's position, transaction and recorded time from its answer.
func (t *Tx) insertEvents(ctx context.Context, events []Event, recs []Record) error {
	stream := events[0].StreamID
	args, err := t.encodeEvents(events, recs)
	if err != nil {
		return err
	}
	at := make(map[streamVersion]int, len(events))
	for i, e := range events {
		at[streamVersion{e.StreamID, e.StreamVersion}] = i
	}
	rows, err := t.Query(ctx, insertSQL+`
		RETURNING stream_id, stream_version, position, (tx_id::text)::bigint, recorded_at`, args...)
	if err != nil {
		return fmt.Errorf("append to %s: %w", stream, err)
	}
	for rows.Next() {
		var k streamVersion
		var position, txID int64
		var recorded time.Time
		if err := rows.Scan(&k.stream, &k.version, &position, &txID, &recorded); err != nil {
			rows.Close()
			return fmt.Errorf("append to %s: %w", stream, err)
		}
		e := &events[at[k]]
		e.Position, e.TxID, e.RecordedAt = position, uint64(txID), recorded
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_id_stream_version_key" {
			e := events[0]
			// The exact version is in a transaction we cannot see.
			return &VersionConflictError{Stream: e.StreamID, Expected: e.StreamVersion - 1, Actual: e.StreamVersion}
		}
		return fmt.Errorf("append to %s: %w", stream, err)
	}
	t.announce(events)
	return nil
}

// streamVersion names an event by its place in its stream.
type streamVersion struct {
	stream  string
	version int64
}

// announce notes the topics of events, for the commit hook.
func (t *Tx) announce(events []Event) {
	if !slices.Contains(t.topics, TopicEvents) {
		t.topics = append(t.topics, TopicEvents)
	}
	for _, e := range events {
		for _, topic := range t.store.route(e.Type) {
			if !slices.Contains(t.topics, topic) {
				t.topics = append(t.topics, topic)
			}
		}
	}
}

// ReadStream returns stream's events from fromVersion on (1 is the first),
// in version order.
func (s *Store) ReadStream(ctx context.Context, stream string, fromVersion int64) ([]Event, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version`, stream, fromVersion)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return events, nil
}

// ReadTenant returns up to limit events recorded for tenantID after the
// event at afterPosition (0: from the beginning), in the order subscribers
// see them: by transaction id, then position, and only events of
// transactions older than every transaction of this database still in
// flight (opsgate_horizon, see migrations/00005_horizon.sql). An event
// that commits late is therefore returned late, after events that reached
// the store before it, but never skipped by a reader that pages with the
// last position it saw.
func (s *Store) ReadTenant(ctx context.Context, tenantID string, afterPosition int64, limit int) ([]Event, error) {
	return s.readAll(ctx, tenantID, afterPosition, limit)
}

func (s *Store) readAll(ctx context.Context, tenantID string, afterPosition int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 100
	}
	afterTx, afterPos, err := s.after(ctx, afterPosition)
	if err != nil {
		return nil, err
	}
	where := `(tx_id, position) > ($1::bigint::text::xid8, $2) AND tx_id < (SELECT opsgate_horizon())`
	args := []any{afterTx, afterPos, limit}
	if tenantID != "" {
		where += ` AND tenant_id = $4`
		args = append(args, tenantID)
	}
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE `+where+` ORDER BY events.tx_id, events.position LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("read after %d: %w", afterPosition, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read after %d: %w", afterPosition, err)
	}
	return events, nil
}

const selectEvents = `SELECT position, (tx_id::text)::bigint, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata, recorded_at FROM events`

func scanEvent(row pgx.CollectableRow) (Event, error) {
	var e Event
	var txID int64
	// The payload as bytes: the column holds valid JSON, so there is nothing to check.
	err := row.Scan(&e.Position, &txID, &e.StreamID, &e.StreamVersion, &e.ID, &e.Type, &e.SchemaVersion, (*[]byte)(&e.Data), &e.Metadata, &e.RecordedAt)
	e.TxID = uint64(txID)
	return e, err
}

// History yields every event below the reading horizon (see ReadAll), in
// subscriber order, from one statement: one consistent view however long
// the history, streamed rather than paged. It is the replay's read, so
// events come with what a fold needs (position, transaction, type, schema
// version and payload) and nothing else. Stop early by breaking out of
// the loop.
func (s *Store) History(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		rows, err := s.pool.Query(ctx, `SELECT position, (tx_id::text)::bigint, event_type, schema_version, payload
			FROM events WHERE tx_id < (SELECT opsgate_horizon()) ORDER BY events.tx_id, events.position`)
		if err != nil {
			yield(Event{}, fmt.Errorf("read history: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var e Event
			var txID int64
			if err := rows.Scan(&e.Position, &txID, &e.Type, &e.SchemaVersion, (*[]byte)(&e.Data)); err != nil {
				yield(Event{}, fmt.Errorf("read history: %w", err))
				return
			}
			e.TxID = uint64(txID)
			if !yield(e, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Event{}, fmt.Errorf("read history: %w", err))
		}
	}
}

// ReadCorrelated returns the events whose metadata names correlationID, in
// commit order (position order within one aggregate's serialised history).
func (s *Store) ReadCorrelated(ctx context.Context, correlationID string, limit int) ([]Event, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE metadata->>'correlation_id' = $1 ORDER BY position LIMIT $2`, correlationID, limit)
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", correlationID, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", correlationID, err)
	}
	return events, nil
}

// LastCorrelated returns the newest event of one of types whose metadata
// names correlationID (pgx.ErrNoRows if none).
func (s *Store) LastCorrelated(ctx context.Context, correlationID string, types ...string) (Event, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE metadata->>'correlation_id' = $1 AND event_type = ANY($2)
		ORDER BY position DESC LIMIT 1`, correlationID, types)
	if err != nil {
		return Event{}, fmt.Errorf("read the last event of %s: %w", correlationID, err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEvent)
	if err != nil {
		return Event{}, fmt.Errorf("read the last event of %s: %w", correlationID, err)
	}
	return e, nil
}

// LastBefore returns the newest event of type eventType in stream before
// version beforeVersion (ok false if there is none).
func (s *Store) LastBefore(ctx context.Context, stream string, beforeVersion int64, eventType string) (e Event, ok bool, err error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE stream_id = $1 AND stream_version < $2 AND event_type = $3
		ORDER BY stream_version DESC LIMIT 1`, stream, beforeVersion, eventType)
	if err != nil {
		return Event{}, false, fmt.Errorf("read %s before %d of %s: %w", eventType, beforeVersion, stream, err)
	}
	e, err = pgx.CollectExactlyOneRow(rows, scanEvent)
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, false, nil
	}
	if err != nil {
		return Event{}, false, fmt.Errorf("read %s before %d of %s: %w", eventType, beforeVersion, stream, err)
	}
	return e, true, nil
}

// ReadUpTo returns up to limit events after from and at or before upTo
// (points in subscriber order), in the order of ReadTenant. It does not
// stop at the horizon: the caller vouches that everything up to upTo was
// committed (a consumer's checkpoint), so it can be read back even while
// other transactions hold the horizon lower.
func (s *Store) ReadUpTo(ctx context.Context, from, upTo Checkpoint, limit int) ([]Event, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE (tx_id, position) > ($1::bigint::text::xid8, $2)
		AND (tx_id, position) <= ($3::bigint::text::xid8, $4) ORDER BY events.tx_id, events.position LIMIT $5`,
		int64(from.TxID), from.Position, int64(upTo.TxID), upTo.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("read after %d: %w", from.Position, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read after %d: %w", from.Position, err)
	}
	return events, nil
}

// after returns the point in commit order of the event at position (the
// beginning for 0), for reading on from it.
func (s *Store) after(ctx context.Context, position int64) (txID, pos int64, err error) {
	if position <= 0 {
		return 0, -1, nil
	}
	err = s.pool.QueryRow(ctx, `SELECT (tx_id::text)::bigint FROM events WHERE position = $1`, position).Scan(&txID)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("read after %d: %w", position, ErrUnknownPosition)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read after %d: %w", position, err)
	}
	return txID, position, nil
}

// ReadTenantOfType returns tenantID's events of type eventType, in
// position order: the few events of a kind that concern others of the
// tenant's streams (a connection made default names the previous one).
func (s *Store) ReadTenantOfType(ctx context.Context, tenantID, eventType string) ([]Event, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE tenant_id = $1 AND event_type = $2 ORDER BY position`, tenantID, eventType)
	if err != nil {
		return nil, fmt.Errorf("read %s of tenant %s: %w", eventType, tenantID, err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("read %s of tenant %s: %w", eventType, tenantID, err)
	}
	return events, nil
}

// PointOf returns the point in subscriber order of the event at position,
// ErrUnknownPosition if there is none.
func (s *Store) PointOf(ctx context.Context, position int64) (Checkpoint, error) {
	var txID int64
	err := s.pool.QueryRow(ctx, `SELECT (tx_id::text)::bigint FROM events WHERE position = $1`, position).Scan(&txID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, ErrUnknownPosition
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("find event %d: %w", position, err)
	}
	return Checkpoint{TxID: uint64(txID), Position: position}, nil
}
