package projections_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

// waitingFeeds returns the backends of feeds waiting for checkpoints
// another transaction holds.
func (f *fixture) waitingFeeds(t testing.TB) []int32 {
	t.Helper()
	rows, err := f.Pool.Query(f.Ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
		AND application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%feed_checkpoints%'`, eventstore.ReaderApplicationName)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// TestConsumersAtDifferentPointsShareAFeed: a feed reads from the least
// advanced of its consumers' checkpoints, so the others are handed nothing
// they applied before; and two feeds reading for overlapping consumers at
// once (two processes) take turns on them. Every event is applied once
// per projector, and nothing applied before moves.
func TestConsumersAtDifferentPointsShareAFeed(t *testing.T) {
	t.Parallel()
	seed := workloadSeed(t)
	t.Logf("seed %d (rerun with PROJECTIONS_SEED=%d)", seed, seed)
	f := newFixture(t)
	// The notifications projector runs alone first: the other two are at
	// the beginning of the log when every projector shares a feed.
	var alone atomic.Int64
	ps := f.startProjectorsWith(t, f.runner(func(string, time.Time) { alone.Add(1) }), "notifications")
	w := newWorld(t, f, 3)
	w.run(t, seed, 150, 3, nil)
	f.waitCaughtUp(t, 30*time.Second, "notifications")
	ps.stop(t)
	before := f.snapshot(t)["ops_notifications"]
	if len(before) == 0 {
		t.Fatal("the workload left no notification")
	}

	var mu sync.Mutex
	applied := map[string]int{}
	count := func(name string, _ time.Time) {
		mu.Lock()
		applied[name]++
		mu.Unlock()
	}
	// Two feeds at once, as two processes of the projector role would run
	// them, and a third for the operations projector alone.
	r := f.runner(count)
	ps = f.startFeeds(t, f.Ctx, f.feed(r), f.feed(r), f.feed(r, "operations"))
	w.run(t, seed+1, 150, 3, nil)
	f.waitCaughtUp(t, 30*time.Second)
	ps.stop(t)

	events := f.Count(t, `SELECT count(*) FROM events`)
	mu.Lock()
	defer mu.Unlock()
	if applied["operations"] != events || applied["queue"] != events {
		t.Errorf("operations applied %d and queue %d of %d events, want each once", applied["operations"], applied["queue"], events)
	}
	if got := int(alone.Load()) + applied["notifications"]; got != events {
		t.Errorf("notifications applied %d events alone and %d shared, want %d in all", alone.Load(), applied["notifications"], events)
	}
	after := f.snapshot(t)["ops_notifications"]
	for _, row := range before {
		if !slices.Contains(after, row) {
			t.Errorf("a notification applied before changed: %s", row)
		}
	}
	w.checkAgainstWriteSide(t)
	f.verifyClean(t, "after the shared feeds")
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
	const writers, perWriter, connsPerWriter = 8, 250, 3
	// Each connection has a provider of its own: a writer begins the run
	// active on one of its connections, and a claim takes the oldest queued
	// run of a provider.
	var providers []string
	for i := 0; i < writers*connsPerWriter; i++ {
		providers = append(providers, fmt.Sprintf("burst-%d", i))
	}
	f := newFixture(t, apptest.Providers(providers...))
	tn := f.Tenant(t, f.workspace.ID, "Burst")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	op := f.Member(t, "operator", tn.ID, domain.RoleOperator).ID
	conns := make([][]string, writers)
	for i := range conns {
		for j := 0; j < connsPerWriter; j++ {
			provider := apptest.Provider(providers[i*connsPerWriter+j])
			conns[i] = append(conns[i], f.Connection(t, owner, tn.ID, "Graph", provider).ID)
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
						_, err = f.Gate.CancelRun(f.Ctx, apptest.As(owner), id)
					} else {
						var c apptest.Claim
						if c, err = f.BeginRun(t, id, "w", leaseLong); err == nil {
							err = f.Succeed(apptest.Worker, c)
						}
					}
					if err != nil {
						writeErr.Store(err)
						return
					}
					delete(active, conn)
				}
				resp, err := f.Gate.Start(f.Ctx, apptest.ConnStart(op, pick(r, surfaces), conn))
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
		kctx, kill := context.WithCancel(f.Ctx)
		r := f.runner(func(name string, _ time.Time) {
			if name == "operations" && applied.Add(1) == k {
				killOnce.Do(func() { kill(); close(killed) })
			}
		})
		cpBefore := f.checkpoint(t, "operations")
		ps := f.startProjectorsIn(t, kctx, r)
		caughtUp := false
		apptest.WaitFor(t, 60*time.Second, "a kill or a catch-up", func() bool {
			select {
			case <-killed:
				return true
			default:
			}
			select {
			case <-wroteAll:
				ok, err := projections.NewReader(f.Pool, 0, nil).CatchUp(f.Ctx, "operations")
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
		t.Logf("round %d: killed after %d events; checkpoint %v -> %v", round, k, cpBefore, f.checkpoint(t, "operations"))
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

	f.startProjectors(t)
	f.waitCaughtUp(t, 60*time.Second)
	t.Logf("caught up after %v", time.Since(began))
	w.checkAgainstWriteSide(t)
	f.verifyClean(t, "after kills")
	t.Logf("verified after %v", time.Since(began))
	total := 0
	for _, n := range w.outcomes {
		total += n
	}
	if got := f.Count(t, `SELECT coalesce(sum(deduped_count + scope_busy_count), 0) + count(*) FROM projections.ops_runs`); got != total {
		t.Errorf("ops_runs accounts for %d starts, the gate answered %d", got, total)
	}
}

// checkpoint returns a projector's checkpoint as "tx/position" ("" for none).
func (f *fixture) checkpoint(t testing.TB, name string) string {
	t.Helper()
	var cp string
	err := f.Pool.QueryRow(f.Ctx, `SELECT tx_id::text || '/' || position FROM feed_checkpoints WHERE consumer = $1`, name).Scan(&cp)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("read checkpoint: %v", err)
	}
	return cp
}

// TestFailedBatchIsAppliedOnceLater: the projectors' statements for a
// batch go to the database in one round trip just before the batch is
// acknowledged. When that round trip fails, the whole batch (every
// projector's rows and checkpoints) rolls back and is delivered again:
// once the failure is gone every event is applied exactly once.
func TestFailedBatchIsAppliedOnceLater(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := f.Pool.Exec(f.Ctx, sql); err != nil {
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
	f.startProjectorsWith(t, f.runner(func(p string, _ time.Time) {
		if p == "operations" {
			applied.Add(1)
		}
	}))
	tn := f.Tenant(t, f.workspace.ID, "Failing")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	conn := f.Connection(t, owner, tn.ID, "Graph").ID
	f.waitCaughtUp(t, 30*time.Second) // the tenant's events write no ops_runs row
	first := f.Start(t, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn))
	f.Start(t, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn)) // deduped: an update of the same row
	apptest.WaitFor(t, 30*time.Second, "the operations projector to fail twice", func() bool {
		return f.Count(t, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.fail_ops_runs_count`) >= 2
	})
	// The batch fails as a whole: no projector moves while one fails.
	if n := f.Count(t, `SELECT count(*) FROM projections.ops_runs`); n != 0 {
		t.Fatalf("%d ops_runs rows while every write to it fails", n)
	}
	if n := f.Count(t, `SELECT count(*) FROM projections.ops_queue`); n != 0 {
		t.Fatalf("%d ops_queue rows committed by a failed batch", n)
	}

	exec(`UPDATE public.fail_ops_runs SET on_ = false`)
	f.waitCaughtUp(t, 30*time.Second)
	run := f.getRun(t, first.Run.ID)
	if run.DedupedCount != 1 {
		t.Errorf("deduped count %d after the failed batches, want 1", run.DedupedCount)
	}
	// Each failed try counted its events too (applied is called as each is
	// queued): the count is at least the events, and the rows say once.
	if n, events := applied.Load(), f.Count(t, `SELECT count(*) FROM events`); n < int64(events) {
		t.Errorf("the operations projector applied %d events, want each of the %d", n, events)
	}
	exec(`DROP TRIGGER fail_ops_runs ON projections.ops_runs`)
	f.verifyClean(t, "after the failed batches")
}

// TestKilledConnectionRecoversAtOnce: when the connection of a projector's
// batch dies (the database restarted, or the backend was terminated), the
// projector starts the batch again in a new transaction within a second
// or so, instead of redelivering the message into the dead transaction
// until watermill's ack deadline (30 s) runs out.
func TestKilledConnectionRecoversAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)
	tn := f.Tenant(t, f.workspace.ID, "Severed")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	conn := f.Connection(t, owner, tn.ID, "Graph").ID
	f.waitCaughtUp(t, 30*time.Second)

	// Hold the projectors' checkpoints, so that the feed's next batch waits
	// in its first statement; then terminate its backend, as a restart would.
	holder, err := f.Pool.Begin(f.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(f.Ctx) //nolint:errcheck
	if _, err := holder.Exec(f.Ctx, `SELECT 1 FROM feed_checkpoints WHERE consumer = ANY($1::text[]) ORDER BY consumer FOR UPDATE`, projectorNames); err != nil {
		t.Fatal(err)
	}
	f.Start(t, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn))
	apptest.WaitFor(t, 30*time.Second, "the feed to wait for the checkpoints", func() bool { return len(f.waitingFeeds(t)) == 1 })
	for _, pid := range f.waitingFeeds(t) {
		if _, err := f.Pool.Exec(f.Ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
			t.Fatal(err)
		}
	}
	if err := holder.Rollback(f.Ctx); err != nil {
		t.Fatal(err)
	}

	now := projections.NewReader(f.Pool, 0, nil)
	apptest.WaitFor(t, 5*time.Second, "every projector to apply the start after its connection was killed", func() bool {
		for _, name := range projectorNames {
			if ok, err := now.CatchUp(f.Ctx, name); err != nil || !ok {
				return false
			}
		}
		return true
	})
	f.verifyClean(t, "after the killed connections")
}
