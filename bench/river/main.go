// Command river is the peer of opsgate's benchmark: it inserts unique jobs
// with River (UniqueOpts by args) at a given concurrency for a given time
// and prints the latencies as JSON. With -lifecycle N it instead inserts N
// jobs, works them with a no-op worker and prints insert-to-finished
// figures in the same JSON shape (see lifecycle.go). It is a module of its
// own so that River never becomes a dependency of opsgate.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// SyncArgs is a provider sync job; unique by its arguments.
type SyncArgs struct {
	ConnectionID string `json:"connection_id"`
	Operation    string `json:"operation"`
}

// Kind names the job kind.
func (SyncArgs) Kind() string { return "provider_sync" }

type result struct {
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	P50ms      float64 `json:"p50_ms"`
	P95ms      float64 `json:"p95_ms"`
	P99ms      float64 `json:"p99_ms"`
}

func main() {
	dbURL := flag.String("db", os.Getenv("DATABASE_URL"), "database URL")
	concurrency := flag.Int("c", 8, "concurrent inserters")
	duration := flag.Duration("d", 5*time.Second, "how long to insert")
	migrateOnly := flag.Bool("migrate", false, "apply River's migrations and exit")
	lifecycle := flag.Int("lifecycle", 0, "if > 0, lifecycle mode: insert this many jobs with -c inserters, work them with -workers workers, and time insert to finished")
	workers := flag.Int("workers", 16, "lifecycle mode: MaxWorkers of the one queue worked")
	fetchCooldown := flag.Duration("fetch-cooldown", lifecycleFetchCooldown, "lifecycle mode: River's FetchCooldown (see lifecycle.go)")
	fetchPoll := flag.Duration("fetch-poll", lifecycleFetchPollInterval, "lifecycle mode: River's FetchPollInterval (see lifecycle.go)")
	flag.Parse()
	var err error
	if *lifecycle > 0 && !*migrateOnly {
		err = runLifecycle(*dbURL, lifecycleConfig{jobs: *lifecycle, inserters: *concurrency, workers: *workers,
			fetchCooldown: *fetchCooldown, fetchPollInterval: *fetchPoll})
	} else {
		err = run(*dbURL, *concurrency, *duration, *migrateOnly)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "river bench:", err)
		os.Exit(1)
	}
}

func run(dbURL string, concurrency int, duration time.Duration, migrateOnly bool) error {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return err
	}
	cfg.MaxConns = int32(concurrency + 2)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	if migrateOnly {
		migrator, err := rivermigrate.New(driver, nil)
		if err != nil {
			return err
		}
		_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
		return err
	}
	client, err := river.NewClient(driver, &river.Config{})
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      atomic.Int64
		seq       atomic.Int64
		wg        sync.WaitGroup
	)
	run := time.Now().UnixNano()
	deadline := time.Now().Add(duration)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(deadline) {
				n := seq.Add(1)
				args := SyncArgs{ConnectionID: fmt.Sprintf("conn-%d-%d", run, n), Operation: "inventory.sync"}
				t0 := time.Now()
				_, err := client.Insert(ctx, args, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}})
				if err != nil {
					errs.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	return json.NewEncoder(os.Stdout).Encode(result{
		Count: len(latencies), Errors: int(errs.Load()), Seconds: elapsed.Seconds(),
		Throughput: float64(len(latencies)) / elapsed.Seconds(),
		P50ms:      pct(.50), P95ms: pct(.95), P99ms: pct(.99),
	})
}
