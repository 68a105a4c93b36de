package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/executorclient"
)

// executorProvider is the provider of the connections only external
// executors run (the built-in worker runs "simulated").
const executorProvider = "acme"

// Both sides execute with the same number of slots: the built-in worker
// with OPSGATE_WORKER_CONCURRENCY=16, the external side with two
// executors of eight.
const (
	executorCount = 2
	executorSlots = 8
)

// executorScenarios compares external executors, claiming over HTTP with
// the reference client, with the built-in worker, claiming in process,
// on a database of their own:
//
//   - backlog: runs queued while nothing executes, then executed with
//     handlers that do no work; the figure is runs claimed and completed
//     per second, and the percentiles are claim-to-completion times. The
//     two sides alternate in rounds so that both see the same machine.
//   - pickup: starts paced at 50 a second while the executors wait in
//     long polls (the worker in its claim loop); the percentiles are the
//     times from acceptance (the run's created_at) until the claim
//     reached the executor's HTTP client, or the worker's RunStarted.
func executorScenarios(ctx context.Context, cfg config, bin, base string, rep *report) error {
	own, err := startAside(ctx, bin, base, "api,projector")
	if err != nil {
		return err
	}
	defer own.close()
	c, dbURL := own.client, own.dbURL
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	progress("executors: %d simulated and %d %s connections", cfg.backlog, cfg.backlog, executorProvider)
	fx, err := setup(ctx, c, cfg.backlog)
	if err != nil {
		return err
	}
	external, err := createConnections(ctx, c, fx, executorProvider, cfg.backlog)
	if err != nil {
		return err
	}
	vacuumAnalyze(ctx, pool)
	var registered struct{ Token string }
	if _, err := c.do(ctx, "POST", "/api/v1/admin/executors", adminToken,
		map[string]any{"name": "bench", "providers": []string{executorProvider}}, &registered); err != nil || registered.Token == "" {
		return fmt.Errorf("register an executor: %v", err)
	}
	runners := &executorPool{client: executorclient.New(own.url, registered.Token)}
	stopLive, err := keepLive(ctx, pool, own.url, registered.Token)
	if err != nil {
		return err
	}
	defer stopLive()

	var builtinRounds, externalRounds []stats
	var builtinIDs, externalIDs []string
	for round := 1; round <= cfg.rounds; round++ {
		progress("executors: backlog round %d of %d, built-in worker (%d runs)", round, cfg.rounds, cfg.backlog)
		ids, err := queue(ctx, c, fx, fx.conns)
		if err != nil {
			return err
		}
		worker, err := startProcess(bin, dbURL, freeAddr(), freeAddr(), "worker")
		if err != nil {
			return err
		}
		st, err := executed(ctx, pool, ids)
		worker.stop()
		if err != nil {
			return fmt.Errorf("built-in worker: %w (log: %s)", err, worker.log)
		}
		builtinRounds, builtinIDs = append(builtinRounds, st), append(builtinIDs, ids...)

		progress("executors: backlog round %d of %d, %d executors over HTTP (%d runs)", round, cfg.rounds, executorCount, cfg.backlog)
		if ids, err = queue(ctx, c, fx, external); err != nil {
			return err
		}
		runners.start(ctx, nil)
		st, err = executed(ctx, pool, ids)
		runners.stop()
		if err != nil {
			return fmt.Errorf("executors: %w", err)
		}
		externalRounds, externalIDs = append(externalRounds, st), append(externalIDs, ids...)
	}
	builtin, ext := median(builtinRounds), median(externalRounds)
	rep.Results["executor_backlog_builtin"], rep.Results["executor_backlog_http"] = builtin, ext
	rep.Ratios["executor_backlog_http_vs_builtin"] = ratio(ext.Throughput, builtin.Throughput)

	progress("executors: pickup of %d runs accepted while the built-in worker waits", cfg.pickups)
	worker, err := startProcess(bin, dbURL, freeAddr(), freeAddr(), "worker")
	if err != nil {
		return err
	}
	defer worker.stop()
	ids, st := pacedStarts(ctx, c, fx, fx.conns, cfg.pickups)
	if err := waitUntil(ctx, pool, `SELECT count(*) = cardinality($1::text[]) FROM projections.ops_runs WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids); err != nil {
		return fmt.Errorf("built-in pickup: %w", err)
	}
	lat, err := durations(ctx, pool, `SELECT extract(epoch FROM started_at - created_at)::float8 FROM projections.ops_runs WHERE id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	rep.Results["executor_pickup_builtin"] = summarise(lat, st.Errors, time.Duration(st.Seconds*float64(time.Second)))
	builtinIDs = append(builtinIDs, ids...)

	progress("executors: pickup of %d runs accepted while %d executors long-poll over HTTP", cfg.pickups, executorCount)
	var mu sync.Mutex
	var pickups []time.Duration
	runners.start(ctx, func(c executorclient.Claim) {
		d := time.Since(c.Run.CreatedAt)
		mu.Lock()
		pickups = append(pickups, d)
		mu.Unlock()
	})
	ids, st = pacedStarts(ctx, c, fx, external, cfg.pickups)
	err = waitUntil(ctx, pool, `SELECT count(*) = cardinality($1::text[]) FROM projections.ops_runs WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids)
	runners.stop()
	if err != nil {
		return fmt.Errorf("executor pickup: %w", err)
	}
	rep.Results["executor_pickup_http"] = summarise(pickups, st.Errors+len(ids)-len(pickups), time.Duration(st.Seconds*float64(time.Second)))
	externalIDs = append(externalIDs, ids...)

	rep.Checks["executor_runs_claimed_once"] = claimedOnce(ctx, pool, builtinIDs, externalIDs)
	return nil
}

// executorPool is the external side: executorCount reference clients
// with executorSlots slots each, in this process, over HTTP.
type executorPool struct {
	client *executorclient.Client
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// start runs the executors until stop; each claim is passed to seen (if
// set) as it arrives, and its run succeeds at once.
func (p *executorPool) start(ctx context.Context, seen func(executorclient.Claim)) {
	ctx, p.cancel = context.WithCancel(ctx)
	for range executorCount {
		r := &executorclient.Runner{Client: p.client, Concurrency: executorSlots, Wait: 20 * time.Second,
			Handler: func(_ context.Context, c executorclient.Claim) executorclient.Result {
				if seen != nil {
					seen(c)
				}
				return executorclient.Succeeded(nil)
			}}
		p.done.Go(func() {
			if err := r.Run(ctx); err != nil {
				progress("executor stopped: %v", err)
			}
		})
	}
}

func (p *executorPool) stop() {
	p.cancel()
	p.done.Wait()
}

// queue accepts one inventory sync on each of conns and returns the runs.
func queue(ctx context.Context, c *client, fx *fixture, conns []string) ([]string, error) {
	ids := make([]string, len(conns))
	st := load(ctx, 8, 0, len(conns), func(ctx context.Context, _, i int) error {
		id, err := accept(ctx, c, fx, conns[i])
		ids[i] = id
		return err
	})
	if st.Errors > 0 {
		return nil, fmt.Errorf("queue runs: %s", st.FirstError)
	}
	return ids, nil
}

// pacedStarts accepts n inventory syncs over conns at 50 a second.
func pacedStarts(ctx context.Context, c *client, fx *fixture, conns []string, n int) ([]string, stats) {
	ids := make([]string, n)
	st := pacedLoadFn(ctx, 4, 0, n, 80*time.Millisecond, 0, func(ctx context.Context, _, i int) error {
		id, err := accept(ctx, c, fx, conns[i%len(conns)])
		ids[i] = id
		return err
	})
	return slices.DeleteFunc(ids, func(id string) bool { return id == "" }), st
}

func accept(ctx context.Context, c *client, fx *fixture, conn string) (string, error) {
	var res struct {
		Outcome string
		Run     struct{ ID string }
	}
	if _, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", fx.token, nil, &res); err != nil {
		return "", err
	}
	if res.Outcome != "accepted" {
		return "", fmt.Errorf("start on %s answered %q: %w", conn, res.Outcome, errNotAccepted)
	}
	return res.Run.ID, nil
}

// executed waits until every run of ids has finished and summarises the
// execution: runs per second from the first claim to the last
// completion, and claim-to-completion percentiles.
func executed(ctx context.Context, pool *pgxpool.Pool, ids []string) (stats, error) {
	if err := waitUntil(ctx, pool, `SELECT count(*) = cardinality($1::text[]) FROM projections.ops_runs
		WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids); err != nil {
		return stats{}, err
	}
	var span float64
	var failed int
	if err := pool.QueryRow(ctx, `SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8, count(*) FILTER (WHERE status <> 'succeeded')
		FROM projections.ops_runs WHERE id = ANY($1)`, ids).Scan(&span, &failed); err != nil {
		return stats{}, fmt.Errorf("read the runs: %w", err)
	}
	lat, err := durations(ctx, pool, `SELECT extract(epoch FROM finished_at - started_at)::float8 FROM projections.ops_runs WHERE id = ANY($1) AND status = 'succeeded'`, ids)
	if err != nil {
		return stats{}, err
	}
	return summarise(lat, failed, time.Duration(span*float64(time.Second))), nil
}

func durations(ctx context.Context, pool *pgxpool.Pool, query string, ids []string) ([]time.Duration, error) {
	rows, err := pool.Query(ctx, query, ids)
	if err != nil {
		return nil, fmt.Errorf("read durations: %w", err)
	}
	defer rows.Close()
	var out []time.Duration
	for rows.Next() {
		var seconds float64
		if err := rows.Scan(&seconds); err != nil {
			return nil, err
		}
		out = append(out, time.Duration(seconds*float64(time.Second)))
	}
	return out, rows.Err()
}

// waitUntil polls query (a boolean of ids) until it holds, for at most
// two minutes. The figures never depend on when it noticed (they are read
// from the rows afterwards), so it looks only every 50ms, to weigh as
// little as possible on the load it waits for.
func waitUntil(ctx context.Context, pool *pgxpool.Pool, query string, ids []string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var done bool
		if err := pool.QueryRow(ctx, query, ids).Scan(&done); err == nil && done {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("runs not finished after two minutes")
}

// claimedOnce checks in the store that every run was claimed exactly once
// (one RunStarted each) and by the side it was meant for.
func claimedOnce(ctx context.Context, pool *pgxpool.Pool, builtin, external []string) string {
	var wrong int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT r.id, count(e.*) AS claims, bool_and(e.payload->>'worker_id' LIKE 'executor:%') AS external
			FROM unnest($1::text[] || $2::text[]) r(id)
			LEFT JOIN events e ON e.event_type = 'RunStarted' AND e.payload->>'run_id' = r.id
			GROUP BY r.id) c
		WHERE c.claims <> 1 OR c.external <> (c.id = ANY($2))`, builtin, external).Scan(&wrong)
	switch {
	case err != nil:
		return "UNKNOWN: " + err.Error()
	case wrong > 0:
		return fmt.Sprintf("VIOLATED: %d runs not claimed exactly once by their side", wrong)
	}
	return fmt.Sprintf("%d runs, each claimed exactly once", len(builtin)+len(external))
}

// median is the round of median throughput.
func median(rounds []stats) stats {
	sorted := append([]stats(nil), rounds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Throughput < sorted[j].Throughput })
	return sorted[len(sorted)/2]
}
