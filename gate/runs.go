package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	json "github.com/segmentio/encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// The gate's tables and their SQL. `scopes` holds each scope's snapshot
// (the state its events fold to, and its version), so that a decision's
// cost does not grow with the scope's history. `runs` is the durable
// queue: a row per accepted or blocked run, its status mirrored from the
// scope's events (runChanges), the claimant's epoch and its lease; its
// partial unique index allows one active run per scope. Both are written
// only by the scope writer (writer.go), in the transaction of the events.

// queueSnapshots queues into b the read of the snapshots of the scopes
// where names (a condition on scope_id, with arg as $1), each handed to
// found; a scope with no snapshot has no history yet. It is the one place
// a snapshot is decoded.
func queueSnapshots(b *pgx.Batch, where string, arg any, found func(scope domain.ScopeID, version int64, state domain.ScopeState)) {
	b.Queue(`SELECT scope_id, version, state FROM scopes WHERE `+where, arg).Query(func(rows pgx.Rows) error {
		var id string
		var version int64
		var raw []byte
		_, err := pgx.ForEachRow(rows, []any{&id, &version, &raw}, func() error {
			var state domain.ScopeState
			if err := json.Unmarshal(raw, &state); err != nil {
				return fmt.Errorf("decode scope %s: %w", id, err)
			}
			found(domain.ScopeID(id), version, state)
			return nil
		})
		if err != nil {
			return fmt.Errorf("load scopes: %w", err)
		}
		return nil
	})
}

// The statuses of the queries that the partial indexes of runs serve, as
// SQL literals: the planner matches an index's predicate against a
// literal, never against a parameter of a cached generic plan, which
// would scan the table instead.
const (
	queuedSQL  = "'" + string(domain.StatusQueued) + "'"
	runningSQL = "'" + string(domain.StatusRunning) + "'"
)

// queueNow queues into b the read of the database's clock into now: the
// clock deadlines and leases run on.
func queueNow(b *pgx.Batch, now *time.Time) {
	b.Queue(`SELECT clock_timestamp()`).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(now); err != nil {
			return fmt.Errorf("read the database's clock: %w", err)
		}
		*now = now.UTC()
		return nil
	})
}

// scopeSave is a scope's snapshot after a transaction.
type scopeSave struct {
	scope    domain.ScopeID
	tenantID string
	version  int64
	state    domain.ScopeState
}

// deferScopeSaves holds back the upsert of scopes' snapshots, in one
// statement.
func deferScopeSaves(tx *eventstore.Tx, saves []scopeSave) error {
	n := len(saves)
	ids, tenants, versions, states := make([]string, n), make([]string, n), make([]int64, n), make([]string, n)
	for i, sv := range saves {
		next, err := json.Marshal(sv.state)
		if err != nil {
			return fmt.Errorf("encode scope %s: %w", sv.scope, err)
		}
		ids[i], tenants[i], versions[i], states[i] = string(sv.scope), sv.tenantID, sv.version, string(next)
	}
	tx.Defer(`INSERT INTO scopes (scope_id, tenant_id, version, state)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::json[])
		ON CONFLICT (scope_id) DO UPDATE SET version = excluded.version, state = excluded.state`,
		ids, tenants, versions, states)
	return nil
}

// runChanges are what a transaction's events change in the runs table,
// gathered by kind so that each kind is one statement.
type runChanges struct {
	// New rows: accepted runs (queued, with their provider and claim_by)
	// and blocked ones.
	ids, scopes, tenants, types, surfaces, statuses []string
	providers                                       []*string
	created                                         []time.Time
	claimBy                                         []*time.Time
	// Started runs: their holder, epoch and finish_by (and a first lease).
	startedIDs, workers []string
	epochs              []int64
	finishBy            []*time.Time
	// Ended runs and their terminal status.
	endedIDs, endStatuses []string
}

// add notes what event changes in runs; this switch is the only place a
// run's lifecycle is mirrored into the table. Deduped and busy answers
// change nothing.
func (c *runChanges) add(event domain.Event) {
	switch e := event.(type) {
	case domain.StartAccepted:
		provider := e.Connection.Provider
		c.insert(e.RunID, e.StartInfo, domain.StatusQueued, e.At, &provider, e.ClaimBy)
	case domain.StartBlocked:
		c.insert(e.RunID, e.StartInfo, domain.StatusBlocked, e.At, nil, nil)
	case domain.RunStarted:
		c.startedIDs, c.workers, c.epochs = append(c.startedIDs, e.RunID), append(c.workers, e.WorkerID), append(c.epochs, e.Epoch)
		c.finishBy = append(c.finishBy, e.FinishBy)
	case domain.RunSucceeded:
		c.end(e.RunID, domain.StatusSucceeded)
	case domain.RunFailed:
		c.end(e.RunID, domain.StatusFailed)
	case domain.RunCancelled:
		c.end(e.RunID, domain.StatusCancelled)
	}
}

func (c *runChanges) insert(id string, s domain.StartInfo, status domain.RunStatus, at time.Time, provider *string, claimBy *time.Time) {
	c.ids, c.scopes, c.tenants = append(c.ids, id), append(c.scopes, string(s.ScopeID)), append(c.tenants, s.TenantID)
	c.types, c.surfaces, c.statuses = append(c.types, s.Type), append(c.surfaces, s.Surface), append(c.statuses, string(status))
	c.providers, c.created, c.claimBy = append(c.providers, provider), append(c.created, at), append(c.claimBy, claimBy)
}

func (c *runChanges) end(id string, status domain.RunStatus) {
	c.endedIDs, c.endStatuses = append(c.endedIDs, id), append(c.endStatuses, string(status))
}

// deferTo holds back the statements of the changes in tx; a started run's
// first lease is of length lease, from the database's clock.
func (c *runChanges) deferTo(tx *eventstore.Tx, lease time.Duration) {
	if len(c.ids) > 0 {
		tx.Defer(`INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at, provider, claim_by)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::timestamptz[])`,
			c.ids, c.scopes, c.tenants, c.types, c.surfaces, c.statuses, c.created, c.providers, c.claimBy)
	}
	if len(c.startedIDs) > 0 {
		tx.Defer(`UPDATE runs SET status = $5, epoch = u.epoch, worker_id = u.worker_id, finish_by = u.finish_by, lease_us = $4::bigint,
				lease_expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond'
			FROM unnest($1::text[], $2::bigint[], $3::text[], $6::timestamptz[]) AS u(id, epoch, worker_id, finish_by) WHERE runs.id = u.id`,
			c.startedIDs, c.epochs, c.workers, lease.Microseconds(), string(domain.StatusRunning), c.finishBy)
	}
	if len(c.endedIDs) > 0 {
		tx.Defer(`UPDATE runs SET status = u.status, lease_expires_at = NULL
			FROM unnest($1::text[], $2::text[]) AS u(id, status) WHERE runs.id = u.id`, c.endedIDs, c.endStatuses)
	}
}

// runRow is a run as the runs table knows it: where it lives and who
// holds it.
type runRow struct {
	id           string
	scope        domain.ScopeID
	tenantID     string
	surface      string
	typ          string
	connectionID string // "" for a run on its tenant's scope
	status       domain.RunStatus
	epoch        int64
	holder       string // the claimant's id while running
}

// scopesOfRuns lists the scopes of the runs $1 (text[]) names.
const scopesOfRuns = `SELECT scope_id FROM runs WHERE id = ANY($1::text[])`

// queueRunRows queues into b the read of the runs rows of ids into rows.
func queueRunRows(b *pgx.Batch, ids []string, rows map[string]*runRow) {
	b.Queue(`SELECT id, scope_id, tenant_id, surface, type, status, epoch, coalesce(worker_id, '') FROM runs
		WHERE id = ANY($1::text[])`, ids).Query(func(found pgx.Rows) error {
		var id, scope string
		var r runRow
		_, err := pgx.ForEachRow(found, []any{&id, &scope, &r.tenantID, &r.surface, &r.typ, &r.status, &r.epoch, &r.holder}, func() error {
			r.id, r.scope = id, domain.ScopeID(scope)
			r.connectionID, _ = r.scope.ConnectionID()
			row := r
			rows[id] = &row
			return nil
		})
		if err != nil {
			return fmt.Errorf("locate runs: %w", err)
		}
		return nil
	})
}

// claimable lists up to limit queued runs of providers (and types, nil:
// any) with their scopes, oldest first, read without any lock.
func claimable(ctx context.Context, q pg.Querier, providers, types []string, limit int) ([]candidate, error) {
	return collect(ctx, q, "find claimable runs", func(r pgx.CollectableRow, k *candidate) error { return r.Scan(&k.runID, &k.scope) },
		claimableSQL, providers, types, limit)
}

// claimableSQL reads the partial index runs_queued.
const claimableSQL = `SELECT id, scope_id FROM runs WHERE status = ` + queuedSQL + `
	AND provider = ANY($1) AND ($2::text[] IS NULL OR type = ANY($2)) ORDER BY created_at, id LIMIT $3`

// collect runs query and scans each of its rows with scan; what says
// what the query is for, in its errors.
func collect[T any](ctx context.Context, q pg.Querier, what string, scan func(row pgx.CollectableRow, into *T) error, query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) {
		var v T
		return v, scan(r, &v)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return list, nil
}

// extendLease moves the lease of runID at epoch, held by holder ("": by
// anyone), to lease from now on the database's clock; ok is false when
// there is no such lease.
func extendLease(ctx context.Context, q pg.Querier, runID string, epoch int64, holder string, lease time.Duration) (expires time.Time, ok bool, err error) {
	err = q.QueryRow(ctx, `UPDATE runs SET lease_expires_at = clock_timestamp() + $3 * interval '1 microsecond'
		WHERE id = $1 AND epoch = $2 AND status = $5 AND ($4 = '' OR worker_id = $4) RETURNING lease_expires_at`,
		runID, epoch, lease.Microseconds(), holder, string(domain.StatusRunning)).Scan(&expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("heartbeat run %s: %w", runID, err)
	}
	return expires.UTC(), true, nil
}

// readRun reads the runs row of runID; domain.ErrNotFound if none.
func readRun(ctx context.Context, q pg.Querier, runID string) (runRow, error) {
	rows := map[string]*runRow{}
	var b pgx.Batch
	queueRunRows(&b, []string{runID}, rows)
	if err := q.SendBatch(ctx, &b).Close(); err != nil {
		return runRow{}, fmt.Errorf("look up run %s: %w", runID, err)
	}
	r, ok := rows[runID]
	if !ok {
		return runRow{}, domain.ErrNotFound
	}
	return *r, nil
}

// leaseExpired is true of a runs row whose lease has expired: its expiry
// is past, and a whole lease has passed since a reaper first reached the
// database server after it started, and since it became the primary. No
// holder could renew its lease while the server was down, recovering from
// a crash or while the old primary failed, so after a restart or a
// promotion every lease gets its full length again before it may be
// reaped (migrations/00008_lease_length.sql, 00018_server_timelines.sql,
// 00021_server_starts.sql). Until a reaper has recorded reaching this
// start of the server, it was reached now. A promoted server is on a new
// timeline (timelines only grow: the newest row is the current timeline's,
// once a reaper has recorded when it first saw it; until then it began
// now).
const leaseExpired = `(lease_expires_at < clock_timestamp()
	AND greatest(coalesce((SELECT seen_at FROM server_starts WHERE started_at = pg_postmaster_start_time()), clock_timestamp()),
		(SELECT CASE WHEN c.now = '00000001' THEN NULL WHEN t.timeline = c.now THEN t.since
			ELSE clock_timestamp() END
		FROM (SELECT ` + currentTimeline + ` AS now) c
		LEFT JOIN server_timelines t ON t.timeline = (SELECT max(timeline) FROM server_timelines)))
		+ coalesce(lease_us, 0) * interval '1 microsecond' < clock_timestamp())`

// currentTimeline is the primary's timeline, as the first eight digits of
// its current WAL file's name.
const currentTimeline = `substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`

// seeTimeline records when a reaper first reached this start of the
// server, and first saw the current timeline (a promoted server's), in
// the statement that reads expired leases.
const seeTimeline = `WITH started AS (INSERT INTO server_starts (started_at, seen_at)
	VALUES (pg_postmaster_start_time(), clock_timestamp()) ON CONFLICT (started_at) DO NOTHING),
seen AS (INSERT INTO server_timelines (timeline, since)
	SELECT t, clock_timestamp() FROM (SELECT ` + currentTimeline + ` AS t) c WHERE t <> '00000001'
	ON CONFLICT (timeline) DO NOTHING) `

// pastDeadline lists up to limit queued runs past their claim_by and up
// to limit running runs past their finish_by, soonest due first, from the
// partial indexes on either (migrations/00015_deadlines.sql). The
// statement is its own transaction: now() is the time it runs, and, being
// stable, bounds the index scans.
func pastDeadline(ctx context.Context, q pg.Querier, limit int) ([]string, error) {
	return collect(ctx, q, "find runs past a deadline", func(r pgx.CollectableRow, id *string) error { return r.Scan(id) },
		pastDeadlineSQL, limit)
}

// pastDeadlineSQL reads the partial indexes runs_claim_by and
// runs_finish_by.
const pastDeadlineSQL = `(SELECT id FROM runs WHERE status = ` + queuedSQL + ` AND claim_by IS NOT NULL AND claim_by < now()
		ORDER BY claim_by LIMIT $1)
	UNION ALL
	(SELECT id FROM runs WHERE status = ` + runningSQL + ` AND finish_by IS NOT NULL AND finish_by < now()
		ORDER BY finish_by LIMIT $1)`

// expiredLeases lists up to limit running runs whose lease expired,
// soonest expired first.
func expiredLeases(ctx context.Context, q pg.Querier, limit int) ([]heldLease, error) {
	return leases(ctx, q, expiredLeasesSQL, limit)
}

// expiredLeasesSQL reads the partial index runs_lease.
const expiredLeasesSQL = seeTimeline + `SELECT id, epoch FROM runs WHERE status = ` + runningSQL + ` AND ` + leaseExpired + `
	ORDER BY lease_expires_at LIMIT $1`

// leasesHeldBy lists the running runs holder holds.
func leasesHeldBy(ctx context.Context, q pg.Querier, holder string) ([]heldLease, error) {
	return leases(ctx, q, `SELECT id, epoch FROM runs WHERE status = `+runningSQL+` AND worker_id = $1`, holder)
}

func leases(ctx context.Context, q pg.Querier, query string, args ...any) ([]heldLease, error) {
	return collect(ctx, q, "find running runs", func(r pgx.CollectableRow, l *heldLease) error { return r.Scan(&l.runID, &l.epoch) }, query, args...)
}

// heldLease is a running run's lease at its epoch.
type heldLease struct {
	runID string
	epoch int64
}

// leaseNow reports, as of the scope's lock, whether l is still the run's
// lease and whether it has expired. FOR UPDATE: a heartbeat committing
// meanwhile is waited for and seen, and one arriving later waits for this
// transaction.
func leaseNow(ctx context.Context, tx *eventstore.Tx, l heldLease) (held, expired bool, err error) {
	err = tx.QueryRow(ctx, `SELECT `+leaseExpired+` FROM runs WHERE id = $1 AND epoch = $2 AND status = $3 FOR UPDATE`,
		l.runID, l.epoch, string(domain.StatusRunning)).Scan(&expired)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("check the lease of run %s: %w", l.runID, err)
	}
	return true, expired, nil
}
