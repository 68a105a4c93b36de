package main

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// stats summarises one measured phase.
type stats struct {
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput_per_s"`
	P50ms      float64 `json:"p50_ms"`
	P95ms      float64 `json:"p95_ms"`
	P99ms      float64 `json:"p99_ms"`
	// FirstError is the first error of the scenario, if any.
	FirstError string `json:"first_error,omitempty"`
}

func summarise(latencies []time.Duration, errors int, elapsed time.Duration) stats {
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	s := stats{Count: len(latencies), Errors: errors, Seconds: elapsed.Seconds(),
		P50ms: pct(.50), P95ms: pct(.95), P99ms: pct(.99)}
	if elapsed > 0 {
		s.Throughput = float64(len(latencies)) / elapsed.Seconds()
	}
	return s
}

// load runs op from concurrency goroutines for duration (or until n ops
// when n > 0) and summarises the latencies of the successful ones.
func load(ctx context.Context, concurrency int, duration time.Duration, n int, op func(ctx context.Context, worker, i int) error) stats {
	return pacedLoadFn(ctx, concurrency, duration, n, 0, 0, op)
}

// pacedLoadFn is load where each goroutine starts an op every interval
// (when interval > 0). The goroutines' schedules are staggered over the
// interval, so that the ops arrive evenly rather than in bursts of
// concurrency at once, and an op's latency counts from the time it was due,
// so that an op sent late because the one before it was slow is not
// measured as fast (coordinated omission). The ops due in the first warm
// of it are sent but not measured: the phase before may have left the
// database busy a moment (a writer's WAL flushes, another process's
// backends exiting), and what is measured is the steady state at the
// rate.
func pacedLoadFn(ctx context.Context, concurrency int, duration time.Duration, n int, interval, warm time.Duration, op func(ctx context.Context, worker, i int) error) stats {
	var (
		mu    sync.Mutex
		all   []time.Duration
		errs  atomic.Int64
		once  sync.Once
		first string
		seq   atomic.Int64
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(warm + duration)
	measured := start.Add(warm)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			due := start.Add(interval * time.Duration(w) / time.Duration(concurrency))
			for ctx.Err() == nil {
				if interval > 0 {
					time.Sleep(time.Until(due))
				}
				i := int(seq.Add(1)) - 1
				if n > 0 && i >= n || n == 0 && time.Now().After(deadline) {
					break
				}
				t0 := time.Now()
				if interval > 0 {
					t0 = due
					due = due.Add(interval)
				}
				err := op(ctx, w, i)
				switch {
				case t0.Before(measured):
				case err != nil:
					errs.Add(1)
					once.Do(func() { first = err.Error() })
				default:
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	st := summarise(all, int(errs.Load()), time.Since(measured))
	st.FirstError = first
	return st
}

// interleave measures a and b one operation at a time, alternating in
// rounds of n each, so that both see the same machine over the same
// minutes: on a shared machine, two figures measured one after the other
// differ by more than what is compared.
func interleave(ctx context.Context, rounds, n int, a, b func(ctx context.Context, i int) error) (stats, stats) {
	var lat [2][]time.Duration
	var errs [2]int
	var busy [2]time.Duration
	ops := [2]func(context.Context, int) error{a, b}
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		for side, op := range ops {
			for k := range n {
				t0 := time.Now()
				err := op(ctx, r*n+k)
				d := time.Since(t0)
				busy[side] += d
				if err != nil {
					errs[side]++
					continue
				}
				lat[side] = append(lat[side], d)
			}
		}
	}
	return summarise(lat[0], errs[0], busy[0]), summarise(lat[1], errs[1], busy[1])
}
