package projections_test

import (
	"context"
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

// offsetsAtEnd reports whether every projector's consumer group has
// acknowledged the newest message of the events topic.
func (f *fixture) offsetsAtEnd() bool {
	f.t.Helper()
	var behind int
	err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM unnest($1::text[]) g
		LEFT JOIN watermill_offsets_events o ON o.consumer_group = 'projector.' || g
		WHERE o.offset_acked IS DISTINCT FROM (SELECT max("offset") FROM watermill_events)`, projectorNames).Scan(&behind)
	if err != nil {
		f.t.Fatalf("read offsets: %v", err)
	}
	return behind == 0
}

// TestRedeliveryChangesNothing makes watermill deliver again events the
// projectors applied before (offsets rewound to the start, deleted, or
// rewound halfway) and checks that no row, count or checkpoint moves.
func TestRedeliveryChangesNothing(t *testing.T) {
	t.Parallel()
	seed := workloadSeed(t)
	t.Logf("seed %d (rerun with PROJECTIONS_SEED=%d)", seed, seed)
	f := newFixture(t)
	ps := f.startProjectors()
	w := newWorld(f, 3)
	w.run(seed, 150, 3, nil)
	// Make sure every kind of row exists: counts, an active run, a notification.
	wt := w.tenants[0]
	conn := f.connection(wt.owner, wt.tenant.ID, "Fresh").ID
	var active string
	for i := 0; i < 3; i++ {
		res := f.start(connStart(wt.owner, domain.SurfaceInventorySync, conn))
		w.record(res)
		if res.Outcome == domain.OutcomeAccepted || res.Outcome == domain.OutcomeDeduped {
			active = res.Run.ID
		}
	}
	if active == "" || w.deduped[active] != 2 {
		t.Fatalf("inventory sync %q deduped %d times, want 2", active, w.deduped[active])
	}
	w.record(f.start(connStart(wt.owner, domain.SurfaceComplianceSnapshot, conn)))
	f.waitCaughtUp(30 * time.Second)
	waitFor(t, 30*time.Second, "offsets to reach the end", f.offsetsAtEnd)
	ps.stop(t)
	before := f.snapshot()
	for table, rows := range before {
		if len(rows) == 0 {
			t.Fatalf("the workload left %s empty", table)
		}
	}

	// operations: back to the very start; queue: offsets forgotten;
	// notifications: back to the middle of the history.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := f.pool.Exec(f.ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`UPDATE watermill_offsets_events SET offset_acked = 0, last_processed_transaction_id = '0' WHERE consumer_group = 'projector.operations'`)
	exec(`DELETE FROM watermill_offsets_events WHERE consumer_group = 'projector.queue'`)
	exec(`UPDATE watermill_offsets_events o SET offset_acked = m."offset", last_processed_transaction_id = m.transaction_id
		FROM (SELECT "offset", transaction_id FROM watermill_events ORDER BY transaction_id, "offset"
		      OFFSET (SELECT count(*) / 2 FROM watermill_events) LIMIT 1) m
		WHERE o.consumer_group = 'projector.notifications'`)
	if f.offsetsAtEnd() {
		t.Fatal("offsets were not rewound")
	}

	var redelivered atomic.Int64
	ps = f.startProjectorsWith(f.runner(func(string, time.Time) { redelivered.Add(1) }))
	waitFor(t, 30*time.Second, "the rewound offsets to reach the end again", f.offsetsAtEnd)
	ps.stop(t)
	if n := redelivered.Load(); n != 0 {
		t.Errorf("%d redelivered events were applied again", n)
	}
	diffSnapshots(t, "after redelivery", before, f.snapshot())
	w.checkAgainstWriteSide()

	// The projectors carry on exactly once after the redelivery.
	ps = f.startProjectors()
	res := f.expect(domain.OutcomeDeduped, connStart(wt.owner, domain.SurfaceInventorySync, conn))
	w.record(res)
	if v := f.getRun(active); v.DedupedCount != w.deduped[active] {
		t.Errorf("deduped_count %d after one more dedupe, want %d", v.DedupedCount, w.deduped[active])
	}
	f.waitCaughtUp(30 * time.Second)
	w.checkAgainstWriteSide()
	f.verifyClean("after redelivery")
	_ = ps
}

// TestKilledMidBatchResumesExactly kills the projectors again and again in
// the middle of a batch while a burst of starts is being written and
// projected, then lets them finish: no event is lost and none is counted
// twice.
//
// Not parallel: its 500-message batch transactions hold back the
// subscribers of every other database on the server while they last.
func TestKilledMidBatchResumesExactly(t *testing.T) {
	seed := workloadSeed(t)
	t.Logf("seed %d (rerun with PROJECTIONS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	f := newFixture(t)
	tn := f.tenant("Burst")
	owner := f.user("owner", domain.RoleOwner, tn.ID)
	op := f.user("operator", domain.RoleOperator, tn.ID)
	const writers, perWriter, connsPerWriter = 8, 250, 3
	conns := make([][]string, writers)
	for i := range conns {
		for j := 0; j < connsPerWriter; j++ {
			conns[i] = append(conns[i], f.connection(owner, tn.ID, "Graph").ID)
		}
	}
	w := &world{f: f, outcomes: map[domain.Outcome]int{}, deduped: map[string]int{}, scopeBusy: map[string]int{},
		ops: map[string]int{}, rejected: map[string]int{}}

	// The burst: 2,000 starts on 24 connections, mostly deduped or busy,
	// now and then the active run finishes so that new runs are accepted.
	var writing sync.WaitGroup
	var writeErr atomic.Value
	surfaces := []domain.Surface{domain.SurfaceInventorySync, domain.SurfaceInventorySync, domain.SurfaceInventorySync, domain.SurfaceComplianceSnapshot}
	for i := 0; i < writers; i++ {
		writing.Add(1)
		go func(i int) {
			defer writing.Done()
			r := rand.New(rand.NewSource(seed + int64(i) + 1))
			active := map[string]string{}
			for j := 0; j < perWriter; j++ {
				conn := pick(r, conns[i])
				if id := active[conn]; id != "" && r.Intn(40) == 0 {
					var err error
					if r.Intn(2) == 0 {
						_, err = f.svc.CancelRun(f.ctx, apptest.As(owner), id)
					} else {
						var c gate.Claim
						if c, err = f.svc.BeginRun(f.ctx, id, "w", leaseLong); err == nil {
							err = f.svc.Succeed(f.ctx, worker, c)
						}
					}
					if err != nil {
						writeErr.Store(err)
						return
					}
					delete(active, conn)
				}
				resp, err := f.svc.Start(f.ctx, connStart(op, pick(r, surfaces), conn))
				if err != nil {
					writeErr.Store(err)
					return
				}
				w.record(resp.Result)
				if resp.Result.Outcome == domain.OutcomeAccepted {
					active[conn] = resp.Result.Run.ID
				}
			}
		}(i)
	}
	began := time.Now()
	wroteAll := make(chan struct{})
	go func() { writing.Wait(); close(wroteAll) }()

	// Kill rounds: each round runs every projector and kills them all when
	// the operations projector has applied k events of this round, which
	// is inside a batch (up to 500 messages in one transaction) as long as
	// the backlog is longer than k.
	kills := 0
	for round := 0; round < 5; round++ {
		k := int64(50 + rng.Intn(350))
		var applied atomic.Int64
		var killOnce sync.Once
		killed := make(chan struct{})
		kctx, kill := context.WithCancel(f.ctx)
		r := f.runner(func(name string, _ time.Time) {
			if name == "operations" && applied.Add(1) == k {
				killOnce.Do(func() { kill(); close(killed) })
			}
		})
		cpBefore := f.checkpoint("operations")
		ps := f.startProjectorsIn(kctx, r)
		caughtUp := false
		waitFor(t, 60*time.Second, "a kill or a catch-up", func() bool {
			select {
			case <-killed:
				return true
			default:
			}
			select {
			case <-wroteAll:
				ok, err := projections.NewReader(f.pool, 0, nil).CatchUp(f.ctx, "operations")
				if err != nil {
					t.Fatalf("catch up: %v", err)
				}
				caughtUp = ok
				return ok
			default:
				return false
			}
		})
		ps.stop(t)
		kill()
		if caughtUp {
			t.Logf("round %d: caught up before %d events", round, k)
			break
		}
		kills++
		t.Logf("round %d: killed after %d events; checkpoint %v -> %v", round, k, cpBefore, f.checkpoint("operations"))
	}
	if kills == 0 {
		t.Error("the projectors were never killed mid-batch")
	}
	t.Logf("kill rounds done after %v", time.Since(began))
	<-wroteAll
	t.Logf("burst written after %v", time.Since(began))
	if err := writeErr.Load(); err != nil {
		t.Fatalf("burst: %v", err)
	}
	t.Logf("burst outcomes %v", w.outcomes)

	f.startProjectors()
	f.waitCaughtUp(60 * time.Second)
	t.Logf("caught up after %v", time.Since(began))
	w.checkAgainstWriteSide()
	f.verifyClean("after kills")
	t.Logf("verified after %v", time.Since(began))
	total := 0
	for _, n := range w.outcomes {
		total += n
	}
	if got := f.count(`SELECT coalesce(sum(deduped_count + scope_busy_count), 0) + count(*) FROM projections.ops_runs`); got != total {
		t.Errorf("ops_runs accounts for %d starts, the gate answered %d", got, total)
	}
}

// checkpoint returns a projector's checkpoint as "tx/position" ("" for none).
func (f *fixture) checkpoint(name string) string {
	f.t.Helper()
	var cp string
	err := f.pool.QueryRow(f.ctx, `SELECT tx_id::text || '/' || position FROM projections.projection_checkpoints WHERE projector = $1`, name).Scan(&cp)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		f.t.Fatalf("read checkpoint: %v", err)
	}
	return cp
}

// TestFailedBatchIsAppliedOnceLater: a projector's statements for a batch
// go to the database in one round trip just before the batch is
// acknowledged. When that round trip fails, the whole batch (rows,
// checkpoint and watermill's offset) rolls back and is delivered again:
// once the failure is gone every event is applied exactly once.
func TestFailedBatchIsAppliedOnceLater(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := f.pool.Exec(f.ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A switch that makes every write to ops_runs fail while it is on.
	// A sequence counts the failures: it moves even in a rolled-back transaction.
	exec(`CREATE TABLE public.fail_ops_runs (on_ bool)`)
	exec(`INSERT INTO public.fail_ops_runs VALUES (true)`)
	exec(`CREATE SEQUENCE public.fail_ops_runs_count`)
	exec(`CREATE FUNCTION public.fail_ops_runs() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF EXISTS (SELECT 1 FROM public.fail_ops_runs WHERE on_) THEN
				PERFORM nextval('public.fail_ops_runs_count');
				RAISE EXCEPTION 'ops_runs is failing on purpose';
			END IF;
			RETURN NEW;
		END $$`)
	exec(`CREATE TRIGGER fail_ops_runs BEFORE INSERT OR UPDATE ON projections.ops_runs FOR EACH ROW EXECUTE FUNCTION public.fail_ops_runs()`)

	var applied atomic.Int64
	f.startProjectorsWith(f.runner(func(p string, _ time.Time) {
		if p == "operations" {
			applied.Add(1)
		}
	}))
	tn := f.tenant("Failing")
	owner := f.user("owner", domain.RoleOwner, tn.ID)
	conn := f.connection(owner, tn.ID, "Graph").ID
	f.waitCaughtUp(30 * time.Second) // the tenant's events write no ops_runs row
	before := applied.Load()
	first := f.start(connStart(owner, domain.SurfaceInventorySync, conn))
	f.start(connStart(owner, domain.SurfaceInventorySync, conn)) // deduped: an update of the same row
	waitFor(t, 30*time.Second, "the operations projector to fail twice", func() bool {
		return f.count(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.fail_ops_runs_count`) >= 2
	})
	f.waitCaughtUp(30*time.Second, "queue")
	// The queue projector moved on; operations keeps failing and applies nothing.
	if n := f.count(`SELECT count(*) FROM projections.ops_runs`); n != 0 {
		t.Fatalf("%d ops_runs rows while every write to it fails", n)
	}
	if n := applied.Load() - before; n != 0 {
		t.Fatalf("the operations projector reported %d events applied while its writes fail", n)
	}

	exec(`UPDATE public.fail_ops_runs SET on_ = false`)
	f.waitCaughtUp(30 * time.Second)
	run := f.getRun(first.Run.ID)
	if run.DedupedCount != 1 {
		t.Errorf("deduped count %d after the failed batches, want 1", run.DedupedCount)
	}
	if n, events := applied.Load(), f.count(`SELECT count(*) FROM events`); n != int64(events) {
		t.Errorf("the operations projector applied %d events, want each of the %d once", n, events)
	}
	exec(`DROP TRIGGER fail_ops_runs ON projections.ops_runs`)
	f.verifyClean("after the failed batches")
}

// TestKilledConnectionRecoversAtOnce: when the connection of a projector's
// batch dies (the database restarted, or the backend was terminated), the
// projector starts the batch again in a new transaction within a second
// or so, instead of redelivering the message into the dead transaction
// until watermill's ack deadline (30 s) runs out.
func TestKilledConnectionRecoversAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors()
	tn := f.tenant("Severed")
	owner := f.user("owner", domain.RoleOwner, tn.ID)
	conn := f.connection(owner, tn.ID, "Graph").ID
	f.waitCaughtUp(30 * time.Second)

	// Hold the swap lock, so that each projector's next batch waits in its
	// first statement; then terminate those backends, as a restart would.
	holder, err := f.pool.Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	if _, err := holder.Exec(f.ctx, `SELECT pg_advisory_lock($1)`, swapLock); err != nil {
		t.Fatal(err)
	}
	f.start(connStart(owner, domain.SurfaceInventorySync, conn))
	waiting := func() []int32 {
		rows, err := f.pool.Query(f.ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, swapLock)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	waitFor(t, 30*time.Second, "every projector to wait for the swap lock", func() bool { return len(waiting()) == len(projectorNames) })
	for _, pid := range waiting() {
		if _, err := f.pool.Exec(f.ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := holder.Exec(f.ctx, `SELECT pg_advisory_unlock($1)`, swapLock); err != nil {
		t.Fatal(err)
	}

	now := projections.NewReader(f.pool, 0, nil)
	waitFor(t, 5*time.Second, "every projector to apply the start after its connection was killed", func() bool {
		for _, name := range projectorNames {
			if ok, err := now.CatchUp(f.ctx, name); err != nil || !ok {
				return false
			}
		}
		return true
	})
	f.verifyClean("after the killed connections")
}

// swapLock is the advisory lock a rebuild takes to swap schemas, and each
// projector batch shared (projections.swapLock).
const swapLock = 727_100
