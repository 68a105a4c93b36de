package changes

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// ConsumerName is the changes consumer's checkpoint in feed_checkpoints.
const ConsumerName = "changes"

// Topic is announced (eventstore.NotifyChannel) when changes commit, to
// every process: long polls and streams of the feed wait for it.
const Topic = "changes"

// anyProcess names the announcements of a consumer without a notifier:
// every notifier acts on them.
const anyProcess = "changes-consumer"

// Consumer returns the feed consumer that derives changes from the
// events, in subscriber order: the runs and connections the batch's
// events touch are folded with the events, and the changes and the
// subjects' new state are written with the checkpoint, so each event is
// turned into changes exactly once. The subjects are those the previous
// batch left (known), or read in the feed's transaction (Prepare) when
// that batch was not this consumer's last. onChange, if set, is told of
// each change with the time its event was recorded (the delay metric).
// Each batch with changes announces Topic at its commit: to the other
// processes through NOTIFY, and to this one's subscribers through n (nil:
// through NOTIFY too) as soon as the commit returns. Webhooks follow the
// changes written (package webhooks): nothing of theirs is written here.
// recent (nil: none) is given each batch's changes once they committed.
func Consumer(onChange func(recordedAt time.Time), n *eventstore.Notifier, recent *Recent) eventstore.Consumer {
	var batch []derived
	var touched subjects
	var last eventstore.Checkpoint
	var first int64 // the sequence number of the batch's first change
	var k known
	announcement := anyProcess + ":" + Topic
	if n != nil {
		announcement = n.Announcement(Topic)
	}
	return eventstore.Consumer{
		Name: ConsumerName,
		Committed: func() {
			k.commit(last, touched)
			if len(batch) == 0 {
				return
			}
			if recent != nil {
				list := make([]Change, len(batch))
				for i, c := range batch {
					list[i] = c.change(first + int64(i))
				}
				recent.add(first, list)
			}
			if n != nil {
				n.Announced(Topic)
			}
		},
		Prepare: func(ctx context.Context, tx pg.Querier, after eventstore.Checkpoint, events []eventstore.Delivery) error {
			var runs, conns []string
			for _, d := range events {
				if e, ok := d.Payload.(domain.Event); ok {
					run, cs := subjectsOf(e)
					if run != "" {
						runs = append(runs, run)
					}
					conns = append(conns, cs...)
				}
			}
			touched, runs, conns = k.seed(after, runs, conns)
			var b pgx.Batch
			queueReadSubjects(&b, touched, runs, conns)
			if b.Len() > 0 {
				if err := tx.SendBatch(ctx, &b).Close(); err != nil {
					return fmt.Errorf("read the subjects of changes: %w", err)
				}
			}
			last = eventstore.PointOf(events[len(events)-1].Event)
			batch = batch[:0]
			for _, d := range events {
				e, ok := d.Payload.(domain.Event)
				if !ok {
					continue
				}
				if c, ok := touched.derive(d.ID, d.RecordedAt, d.Metadata.Actor, e); ok {
					batch = append(batch, c)
					if onChange != nil {
						onChange(d.RecordedAt)
					}
				}
			}
			return nil
		},
		Apply: func(_ context.Context, b *pgx.Batch, _ []eventstore.Delivery) error {
			if err := queueSubjects(b, touched); err != nil {
				return err
			}
			if len(batch) == 0 {
				return nil
			}
			n := len(batch)
			ids, tenants, types := make([]string, n), make([]string, n), make([]string, n)
			ats := make([]time.Time, n)
			runIDs, initiators := make([]*string, n), make([]*string, n)
			runs, conns := make([]*string, n), make([]*string, n)
			for i, c := range batch {
				ids[i], tenants[i], types[i], ats[i], initiators[i] = c.id, c.tenant, c.typ, c.at, c.initiator
				if c.runID != "" {
					runIDs[i] = &c.runID
				}
				runs[i], conns[i] = text(c.run), text(c.conn)
			}
			// Numbered in the batch's order, which is the events' commit
			// order, after the newest change (the checkpoint's row lock
			// makes this transaction the feed's only writer; changes are
			// never deleted). The numbers follow from the events alone: a
			// batch that a crash takes back (the feed commits without
			// waiting for the WAL flush) is numbered the same when it is
			// derived again, so a cursor a client was given, or a delivery
			// sent, still names the same change.
			b.Queue(`WITH added AS (
					INSERT INTO changes (seq, id, tenant_id, type, occurred_at, run_id, run, connection, initiator_id)
					SELECT h.seq + c.n, id, tenant_id, type, occurred_at, run_id, run, connection, initiator_id
					FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::json[], $7::json[], $8::text[])
						WITH ORDINALITY AS c (id, tenant_id, type, occurred_at, run_id, run, connection, initiator_id, n),
						(SELECT coalesce(max(seq), 0) AS seq FROM changes) h
					ORDER BY n
					RETURNING seq
				) SELECT min(seq) FROM added`, ids, tenants, types, ats, runIDs, runs, conns, initiators).QueryRow(func(row pgx.Row) error {
				return row.Scan(&first)
			})
			// Delivered at commit, to every process (this one's too if
			// it has no notifier).
			b.Queue(`SELECT pg_notify($1, $2)`, eventstore.NotifyChannel, announcement)
			return nil
		},
	}
}

func text(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// queueReadSubjects queues into b the read of the runs and connections
// ids, into s. A run is as its newest change carries it: every event that
// changes a run makes a change (derive), so the changes hold each run's
// state; a connection is as change_subjects holds it (not every event of
// a connection makes a change).
func queueReadSubjects(b *pgx.Batch, s subjects, runs, conns []string) {
	if len(runs) > 0 {
		queueRead(b, s.runs, "run", `SELECT r.id, c.run FROM unnest($1::text[]) AS r (id)
			CROSS JOIN LATERAL (SELECT run FROM changes WHERE run_id = r.id ORDER BY seq DESC LIMIT 1) c`, runs)
	}
	if len(conns) > 0 {
		queueRead(b, s.conns, "connection", `SELECT id, state FROM change_subjects WHERE id = ANY($1) AND kind = 'connection'`, conns)
	}
}

// queueRead queues into b query of ids, whose rows are an id and a JSON
// state (of a kind), each decoded and kept in into.
func queueRead[T any](b *pgx.Batch, into map[string]*T, kind, query string, ids []string) {
	b.Queue(query, ids).Query(func(rows pgx.Rows) error {
		var id string
		var state []byte
		_, err := pgx.ForEachRow(rows, []any{&id, &state}, func() error {
			var v T
			if err := json.Unmarshal(state, &v); err != nil {
				return fmt.Errorf("%s %s: %w", kind, id, err)
			}
			into[id] = &v
			return nil
		})
		return err
	})
}

// queueSubjects queues the upsert of the connections s holds (the runs
// are written with their changes).
func queueSubjects(b *pgx.Batch, s subjects) error {
	if len(s.conns) == 0 {
		return nil
	}
	var ids, states []string
	for id, c := range s.conns {
		state, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("connection %s: %w", id, err)
		}
		ids, states = append(ids, id), append(states, string(state))
	}
	b.Queue(`INSERT INTO change_subjects (id, kind, state) SELECT id, 'connection', state FROM unnest($1::text[], $2::json[]) AS s (id, state)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state`, ids, states)
	return nil
}
