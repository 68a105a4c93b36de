package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lifecycle measures runs from start to succeeded with the simulated
// provider at zero latency: n connections of their own, each started
// once (every start is accepted, as each of River's inserts is a new job),
// by clients at concurrency conc; the figure is n over the time from the
// first start to the last run's end, and the percentiles are each run's
// time from acceptance (created_at) to its end (finished_at).
func lifecycle(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, n, conc int) (stats, error) {
	progress("lifecycle: creating %d connections", n)
	conns, err := createConnections(ctx, c, fx, "simulated", n)
	if err != nil {
		return stats{}, err
	}
	if _, workerDrained := drain(ctx, pool, time.Minute); workerDrained >= time.Minute {
		return stats{}, errors.New("lifecycle: earlier runs did not end within a minute")
	}
	vacuumAnalyze(ctx, pool)
	ids := make([]string, n)
	began := time.Now()
	cpu0 := cpuTimes()
	statements := os.Getenv("OPSGATE_BENCH_STATEMENTS") != "" && statementsReset(ctx, pool)
	st := load(ctx, conc, 0, n, func(ctx context.Context, _, i int) error {
		id, err := accept(ctx, c, fx, conns[i])
		ids[i] = id
		return err
	})
	if st.Errors > 0 {
		return stats{}, fmt.Errorf("lifecycle: %d starts failed, the first: %s", st.Errors, st.FirstError)
	}
	// Every run ended (a cheap look at the active ones), then every end is
	// in the Operations view.
	if err := waitUntil(ctx, pool, `SELECT count(*) = 0 FROM runs WHERE status IN ('queued', 'running')
		AND cardinality($1::text[]) > 0`, ids); err != nil {
		return stats{}, fmt.Errorf("lifecycle: %w", err)
	}
	if err := waitUntil(ctx, pool, `SELECT count(*) = cardinality($1::text[]) FROM projections.ops_runs
		WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids); err != nil {
		return stats{}, fmt.Errorf("lifecycle: %w", err)
	}
	progress("lifecycle: cpu %s", cpuShare(cpu0, cpuTimes(), time.Since(began), runtime.NumCPU()))
	if statements {
		statementsTop(ctx, pool, 25)
	}
	var last time.Time
	var failed int
	if err := pool.QueryRow(ctx, `SELECT max(finished_at), count(*) FILTER (WHERE status <> 'succeeded')
		FROM projections.ops_runs WHERE id = ANY($1)`, ids).Scan(&last, &failed); err != nil {
		return stats{}, fmt.Errorf("lifecycle: %w", err)
	}
	lat, err := durations(ctx, pool, `SELECT extract(epoch FROM finished_at - created_at)::float8 FROM projections.ops_runs
		WHERE id = ANY($1) AND status = 'succeeded'`, ids)
	if err != nil {
		return stats{}, err
	}
	return summarise(lat, failed, last.Sub(began)), nil
}

// lifecycleWatched is lifecycle with a client long-polling the change feed
// all along, and, with h, the webhook receiver's deliveries of the
// phase's changes: the lifecycle's figure, the feed's delays and the
// deliveries' (once every change of the phase arrived, or a minute).
// What the server's metrics say of the phase goes to rep's checks, under
// names ending in suffix.
func lifecycleWatched(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, n int, h *hooks, rep *report, suffix string) (life, feed, delivery stats, err error) {
	if h != nil {
		drainWebhooks(ctx, pool, time.Minute)
	}
	before := scrape(c.base)
	defer func() { metricsOfPhase(before, scrape(c.base), rep, suffix) }()
	from := latestChange(ctx, pool)
	w, err := watchFeed(ctx, c, fx)
	if err != nil {
		return life, feed, delivery, fmt.Errorf("lifecycle: follow the change feed: %w", err)
	}
	life, err = lifecycle(ctx, c, pool, fx, n, 32)
	feed = w.stop(ctx, pool, time.Minute)
	if err != nil {
		return life, feed, delivery, err
	}
	recordFromCommit(ctx, pool, w.seen, rep, "change_feed_delay_from_commit"+suffix)
	if h != nil {
		delivery = h.collect(ctx, pool, from, time.Minute)
		recordFromCommit(ctx, pool, h.receivedAfter(from), rep, "webhook_delivery_delay_from_commit"+suffix)
	}
	return life, feed, delivery, nil
}

// errNotAccepted is a start answered otherwise than accepted.
var errNotAccepted = errors.New("not accepted")

// riverLifecycle runs the River peer's lifecycle mode: n no-op jobs
// inserted one by one from conc goroutines and worked by workers slots.
func riverLifecycle(bin, dbURL string, n, conc, workers int) (stats, error) {
	if out, err := exec.Command(bin, "-db", dbURL, "-migrate").CombinedOutput(); err != nil {
		return stats{}, fmt.Errorf("river migrate: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-db", dbURL, "-lifecycle", strconv.Itoa(n), "-c", strconv.Itoa(conc),
		"-workers", strconv.Itoa(workers)).Output()
	if err != nil {
		return stats{}, fmt.Errorf("river lifecycle: %w", err)
	}
	var r struct {
		Count      int     `json:"count"`
		Errors     int     `json:"errors"`
		Seconds    float64 `json:"seconds"`
		Throughput float64 `json:"throughput"`
		P50ms      float64 `json:"p50_ms"`
		P95ms      float64 `json:"p95_ms"`
		P99ms      float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return stats{}, fmt.Errorf("river lifecycle output %q: %w", out, err)
	}
	return stats{Count: r.Count, Errors: r.Errors, Seconds: r.Seconds, Throughput: r.Throughput,
		P50ms: r.P50ms, P95ms: r.P95ms, P99ms: r.P99ms}, nil
}

// overload offers starts at rate per second for d, open loop (each start
// is sent on time whether or not the earlier ones were answered, up to
// inFlight at once), on random connections of conns with random
// operations, as impatient clients clicking again would. It returns the
// answers' latencies (every answer, shed ones included) and how many runs
// ended per second over the window, with the answers by status. It fails
// when a decided answer has no decision event of its outcome: a duplicate
// click answered under overload must leave its audit record.
func overload(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, conns []string, rate float64, d time.Duration) (stats, float64, map[int]int, error) {
	const inFlight = 1024
	var (
		mu        sync.Mutex
		latencies []time.Duration
		decided   []time.Duration // answers other than 503
		byStatus  = map[int]int{}
		errs      int
		firstErr  string
		wg        sync.WaitGroup
	)
	slots := make(chan struct{}, inFlight)
	var ended0 int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')`).Scan(&ended0); err != nil {
		return stats{}, 0, nil, err
	}
	var from int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&from); err != nil {
		return stats{}, 0, nil, err
	}
	rng := rand.New(rand.NewSource(1))
	interval := time.Duration(float64(time.Second) / rate)
	began := time.Now()
	cpu0 := cpuTimes()
	next := began
	dropped := 0
	for time.Since(began) < d {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		next = next.Add(interval)
		conn := conns[rng.Intn(len(conns))]
		op := operations[rng.Intn(len(operations))]
		select {
		case slots <- struct{}{}:
		default:
			dropped++ // the generator's own bound: counted as an error
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			t0 := time.Now()
			status, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conn+"/"+op, fx.token, nil, nil)
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && status < 500 {
				errs++
				if firstErr == "" {
					firstErr = err.Error()
				}
				return
			}
			byStatus[status]++
			latencies = append(latencies, lat)
			if status != 503 {
				decided = append(decided, lat)
			}
		})
	}
	window := time.Since(began)
	progress("overload: cpu %s", cpuShare(cpu0, cpuTimes(), window, runtime.NumCPU()))
	var ended1 int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')`).Scan(&ended1); err != nil {
		return stats{}, 0, nil, err
	}
	wg.Wait()
	if err := decisionsRecorded(ctx, pool, from, byStatus); err != nil {
		return stats{}, 0, nil, fmt.Errorf("overload at %.0f/s: %w", rate, err)
	}
	if d := summarise(decided, 0, window); len(decided) > 0 {
		progress("overload: %d decided answers p50 %.1f ms p99 %.1f ms; %d shed", d.Count, d.P50ms, d.P99ms, len(latencies)-len(decided))
	}
	st := summarise(latencies, errs+dropped, window)
	st.Throughput = float64(len(latencies)) / window.Seconds()
	if dropped > 0 && firstErr == "" {
		firstErr = fmt.Sprintf("%d starts not sent: %d already in flight", dropped, inFlight)
	}
	st.FirstError = firstErr
	return st, float64(ended1-ended0) / window.Seconds(), byStatus, nil
}

// decisionsRecorded checks that the events after position from hold one
// decision event per decided answer: 202 StartAccepted, 200 StartDeduped,
// 409 StartScopeBusy, 422 StartBlocked.
func decisionsRecorded(ctx context.Context, pool *pgxpool.Pool, from int64, byStatus map[int]int) error {
	rows, err := pool.Query(ctx, `SELECT event_type, count(*) FROM events
		WHERE position > $1 AND event_type LIKE 'Start%' GROUP BY event_type`, from)
	if err != nil {
		return fmt.Errorf("count decision events: %w", err)
	}
	defer rows.Close()
	recorded := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			return fmt.Errorf("count decision events: %w", err)
		}
		recorded[typ] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count decision events: %w", err)
	}
	for status, event := range map[int]string{202: "StartAccepted", 200: "StartDeduped", 409: "StartScopeBusy", 422: "StartBlocked"} {
		if recorded[event] != byStatus[status] {
			return fmt.Errorf("%d answers %d but %d %s events: a decision without its audit record", byStatus[status], status, recorded[event], event)
		}
	}
	return nil
}
