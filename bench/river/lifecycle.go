package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// Lifecycle mode: N jobs are inserted one per client.Insert by -c
// goroutines (as users clicking would, never InsertMany), worked by a
// no-op worker in this process with -workers slots, and timed from insert
// to finished.
//
// Isolation from the earlier unique-insert phases on the same database:
// nothing is truncated. The jobs have a kind of their own
// (lifecycleKind) and a queue of their own (lifecycleQueue), the client
// works only that queue (so the provider_sync jobs left "available" in
// the default queue by the unique phase are never fetched), and every
// figure is read back by the ids that this run's inserts returned. Two
// lifecycle runs must not run at once on one database: they would work
// each other's jobs.
const (
	lifecycleKind  = "provider_sync_lifecycle"
	lifecycleQueue = "lifecycle"
	// lifecycleTimeout bounds the wait for the jobs to finish.
	lifecycleTimeout = 5 * time.Minute
)

// River's fetch settings in lifecycle mode. River's defaults would make the
// comparison unfair:
//
//   - FetchCooldown (default 100ms) is the least time between two fetches
//     of a producer, and a fetch takes at most MaxWorkers - active jobs, so
//     with 16 workers and jobs that take no time River could not work more
//     than ~160 jobs a second, whatever the database can do. opsgate's
//     worker has no such floor: it claims again as soon as a slot frees
//     or a wake-up arrives. 2ms is the value River's own benchmark
//     (cmd/river/riverbench) uses to measure its throughput; it caps this
//     queue at 16/2ms = 8000 jobs a second, above what this machine does.
//     The same value also rate-limits River's insert NOTIFY (one per queue
//     per FetchCooldown), which is River's normal behaviour.
//   - FetchPollInterval (default 1s) is the fallback fetch when no
//     notification arrives. Because River's insert NOTIFY is rate-limited,
//     the last jobs of a burst can depend on it, and a 1s fallback against
//     opsgate's 100ms (OPSGATE_POLL_INTERVAL's default, which the bench
//     does not change) would penalise River's tail for a setting, so it is
//     set to the same 100ms.
//
// Both can be changed with -fetch-cooldown and -fetch-poll. Everything else
// is River's default (including the batch completer, see the caveat at
// runLifecycle).
const (
	lifecycleFetchCooldown     = 2 * time.Millisecond
	lifecycleFetchPollInterval = 100 * time.Millisecond
)

// LifecycleArgs is a provider sync job, not unique: each insert is a new
// job.
type LifecycleArgs struct {
	ConnectionID string `json:"connection_id"`
	Operation    string `json:"operation"`
}

// Kind names the job kind.
func (LifecycleArgs) Kind() string { return lifecycleKind }

// InsertOpts puts the jobs on the lifecycle queue.
func (LifecycleArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: lifecycleQueue}
}

// noopWorker finishes every job at once.
type noopWorker struct {
	river.WorkerDefaults[LifecycleArgs]
}

func (noopWorker) Work(context.Context, *river.Job[LifecycleArgs]) error { return nil }

type lifecycleConfig struct {
	jobs, inserters, workers         int
	fetchCooldown, fetchPollInterval time.Duration
}

// runLifecycle prints, as JSON:
//
//   - count: jobs that reached state completed; errors: failed inserts
//     plus jobs finalized in any other state;
//   - seconds: from the moment the first insert started (after a warm-up,
//     see below) to the latest finalized_at of the jobs; throughput:
//     count / seconds;
//   - p50/p95/p99_ms: per job, finalized_at - created_at from river_job,
//     read in one query at the end. created_at is Postgres's now() at the
//     start of the insert transaction (River leaves it to the database);
//     finalized_at is this process's time.Now() when the worker returned.
//     The two clocks are the same only if Postgres runs on this host (the
//     bench's does, on 127.0.0.1); the estimated offset is printed on
//     stderr.
//
// Caveat: River's finalized_at is stamped when the worker returns, but
// the row becomes completed only when River's batch completer writes it,
// every 50ms under load and up to every 250ms when fewer than 100
// completions wait. The "durable" figures (the same, with the time this
// process received the job's completed event, which River sends after
// that write) go to stderr so the difference can be seen.
//
// Completion is detected with River's event subscription rather than by
// polling river_job: the completer sends the events after its update has
// been committed, so the last one is the moment every job is finished in
// the database, without a 20ms poll's granularity or its load on a
// two-core machine. The channel is sized for every job (River drops an
// event only when a subscriber's channel is full), and the result is
// checked against river_job at the end anyway.
func runLifecycle(dbURL string, lc lifecycleConfig) error {
	if lc.inserters < 1 || lc.workers < 1 {
		return errors.New("-c and -workers must be at least 1")
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return err
	}
	// The inserters, plus River's own: the notifier's LISTEN connection,
	// the producer's fetches, the completer, leader election and
	// maintenance, and this function's queries.
	cfg.MaxConns = int32(lc.inserters + 8)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	workers := river.NewWorkers()
	river.AddWorker(workers, noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     lc.fetchCooldown,
		FetchPollInterval: lc.fetchPollInterval,
		// River's default logger writes to stdout, which carries the JSON.
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Queues:  map[string]river.QueueConfig{lifecycleQueue: {MaxWorkers: lc.workers}},
		Workers: workers,
	})
	if err != nil {
		return err
	}
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: lc.jobs + 16,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
	})
	defer unsubscribe()
	if err := client.Start(ctx); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_ = client.Stop(stopCtx)
		}
	}()

	deadline := time.NewTimer(lifecycleTimeout)
	defer deadline.Stop()

	// Warm-up, outside the measurement: open the inserters' connections
	// (opsgate's server has a warm pool too) and take one job through the
	// whole path, so that the LISTEN connection, the producer and the
	// completer are running before the clock starts.
	if err := warmPool(ctx, pool, lc.inserters); err != nil {
		return err
	}
	warm, err := client.Insert(ctx, LifecycleArgs{ConnectionID: "warm-up", Operation: "inventory.sync"}, nil)
	if err != nil {
		return fmt.Errorf("warm-up insert: %w", err)
	}
	for done := false; !done; {
		select {
		case ev, ok := <-events:
			if !ok {
				return errors.New("subscription closed during warm-up")
			}
			done = ev.Job != nil && ev.Job.ID == warm.Job.ID && ev.Job.FinalizedAt != nil
		case <-deadline.C:
			return errors.New("warm-up job not finished in time")
		}
	}
	skew, rtt, err := clockOffset(ctx, pool)
	if err != nil {
		return err
	}
	deadline.Reset(lifecycleTimeout)

	var (
		mu         sync.Mutex
		ids        []int64
		insertErrs atomic.Int64
		seq        atomic.Int64
		wg         sync.WaitGroup
		insertsEnd = make(chan struct{})
	)
	run := time.Now().UnixNano()
	start := time.Now()
	for range lc.inserters {
		wg.Go(func() {
			var local []int64
			for {
				n := seq.Add(1)
				if n > int64(lc.jobs) {
					break
				}
				args := LifecycleArgs{ConnectionID: fmt.Sprintf("conn-%d-%d", run, n), Operation: "inventory.sync"}
				res, err := client.Insert(ctx, args, nil)
				if err != nil {
					insertErrs.Add(1)
					continue
				}
				local = append(local, res.Job.ID)
			}
			mu.Lock()
			ids = append(ids, local...)
			mu.Unlock()
		})
	}
	go func() {
		wg.Wait()
		close(insertsEnd)
	}()

	// Events can arrive before the insert that made the job has returned
	// its id, so they are all kept, and the ids still pending are worked
	// out once every insert has returned.
	received := make(map[int64]time.Time, lc.jobs)
	var pending map[int64]struct{}
	for pending == nil || len(pending) > 0 {
		select {
		case ev, ok := <-events:
			if !ok {
				return errors.New("subscription closed before the jobs finished")
			}
			if ev.Job == nil || ev.Job.FinalizedAt == nil { // e.g. failed, to be retried
				continue
			}
			received[ev.Job.ID] = time.Now()
			delete(pending, ev.Job.ID)
		case <-insertsEnd:
			insertsEnd = nil
			pending = make(map[int64]struct{}, len(ids))
			for _, id := range ids {
				if _, ok := received[id]; !ok {
					pending[id] = struct{}{}
				}
			}
		case <-deadline.C:
			return fmt.Errorf("%d of %d jobs not finished after %s", len(pending), len(ids), lifecycleTimeout)
		}
	}

	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = client.Stop(stopCtx)
	cancel()
	stopped = true
	if err != nil {
		return fmt.Errorf("stop the client: %w", err)
	}

	// One query for every job of this run.
	rows, err := pool.Query(ctx, `SELECT id, state, created_at, finalized_at FROM river_job WHERE id = ANY($1) AND kind = $2`, ids, lifecycleKind)
	if err != nil {
		return fmt.Errorf("read the jobs: %w", err)
	}
	var (
		latencies, durable []time.Duration
		lastFinalized      time.Time
		lastDurable        time.Time
		notCompleted, seen int
	)
	for rows.Next() {
		var (
			id        int64
			state     string
			createdAt time.Time
			finalized *time.Time
		)
		if err := rows.Scan(&id, &state, &createdAt, &finalized); err != nil {
			rows.Close()
			return err
		}
		seen++
		if state != "completed" || finalized == nil {
			notCompleted++
			continue
		}
		latencies = append(latencies, finalized.Sub(createdAt))
		durable = append(durable, received[id].Sub(createdAt))
		if finalized.After(lastFinalized) {
			lastFinalized = *finalized
		}
		if received[id].After(lastDurable) {
			lastDurable = received[id]
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if seen != len(ids) {
		return fmt.Errorf("%d jobs inserted, %d read back", len(ids), seen)
	}

	// finalized_at and start are both this process's wall clock.
	elapsed, durableElapsed := lastFinalized.Sub(start), lastDurable.Sub(start)
	if len(latencies) == 0 {
		elapsed, durableElapsed = time.Since(start), time.Since(start)
	}
	p, d := percentiles(latencies), percentiles(durable)
	fmt.Fprintf(os.Stderr, "river lifecycle: %d jobs, %d inserters, %d workers, fetch cooldown %s, poll %s; "+
		"Postgres clock offset %+.2fms (rtt %.2fms); durable (completed event received): %.3fs, %.0f jobs/s, p50 %.2fms p95 %.2fms p99 %.2fms\n",
		lc.jobs, lc.inserters, lc.workers, lc.fetchCooldown, lc.fetchPollInterval,
		ms(skew), ms(rtt), durableElapsed.Seconds(), float64(len(durable))/durableElapsed.Seconds(), d[0], d[1], d[2])
	return json.NewEncoder(os.Stdout).Encode(result{
		Count: len(latencies), Errors: int(insertErrs.Load()) + notCompleted, Seconds: elapsed.Seconds(),
		Throughput: float64(len(latencies)) / elapsed.Seconds(),
		P50ms:      p[0], P95ms: p[1], P99ms: p[2],
	})
}

// warmPool opens n connections at once and gives them back to the pool.
func warmPool(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { conns[i], errs[i] = pool.Acquire(ctx) })
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Release()
		}
	}
	return errors.Join(errs...)
}

// clockOffset estimates Postgres's clock minus this process's clock, from
// the sample with the shortest round trip of a few.
func clockOffset(ctx context.Context, pool *pgxpool.Pool) (offset, rtt time.Duration, err error) {
	rtt = time.Hour
	for range 5 {
		var db time.Time
		t0 := time.Now()
		if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
			return 0, 0, err
		}
		t1 := time.Now()
		if r := t1.Sub(t0); r < rtt {
			rtt, offset = r, db.Sub(t0.Add(r/2))
		}
	}
	return offset, rtt, nil
}

// percentiles returns p50, p95 and p99 in milliseconds, the same way as
// the insert mode.
func percentiles(d []time.Duration) [3]float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var out [3]float64
	for i, p := range []float64{.50, .95, .99} {
		if len(d) > 0 {
			out[i] = float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
