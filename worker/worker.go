// Package worker is the built-in executor: it runs accepted runs of the
// providers it has adapters for (the simulated provider included), and
// only those. It takes work the way every executor does, by claiming it
// through the gate (gate.Claim, the same path the HTTP executors take):
// only accepted runs are ever queued, so blocked, deduped and busy starts
// cannot reach it by construction. It is woken by acceptances (the
// acceptance topic's LISTEN/NOTIFY wake-ups) and looks again every poll
// interval in case a wake-up was lost.
//
// A claim is the run's RunStarted decision on its scope, with a fencing
// epoch and a lease. The worker executes against the connection pinned at
// acceptance, heartbeats the lease, and records RunSucceeded or RunFailed
// with a reason from the one catalog through gate.Complete, fenced by the
// epoch. The gate's reaper ends runs whose lease expired as
// failed/execution.lost, and a result reported under a lost lease is
// rejected.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
)

// Config configures a worker.
type Config struct {
	// Concurrency bounds the operations executing at once.
	Concurrency int
	// Lease is how long a claim lasts without a heartbeat; Heartbeat is
	// how often it is renewed (and cancellation noticed).
	Lease     time.Duration
	Heartbeat time.Duration
	// PollInterval is how often an idle worker looks for work when no
	// wake-up came.
	PollInterval time.Duration
	// Wake, if set, receives when a start was accepted (anywhere).
	Wake <-chan struct{}
	// ResultBackoff is the first wait before recording a result again
	// after a failure (the database away); it doubles up to Heartbeat.
	ResultBackoff time.Duration
	// ThrottleRetries is how often a throttled call is retried, with
	// exponential backoff from ThrottleBackoff, before the run fails.
	ThrottleRetries int
	ThrottleBackoff time.Duration
	// ID names this worker on the runs it claims; generated when empty.
	ID string
	// OnPickup, if set, is called with the time from acceptance to claim.
	OnPickup func(time.Duration)
	// Metrics, if set, counts the worker's claims, completions and lost
	// leases, as those of the executor "builtin".
	Metrics Metrics
	// Presence, if set, is told that the worker runs (every Heartbeat
	// while it does) and that it stopped: the preflight counts the
	// built-in worker only while one runs.
	Presence Presence
}

// Presence notes which built-in workers run (executors.Service does).
type Presence interface {
	Announce(ctx context.Context, workerID string, providers []string) error
	Withdraw(ctx context.Context, workerID string) error
}

// Metrics observes an executor's work (metrics.Metrics does).
type Metrics interface {
	ObserveClaims(executor string, n int, waited time.Duration)
	ObserveCompletion(executor, status string)
	ObserveLeaseLoss(executor string)
}

// metricsName is the built-in worker's name in executor metrics: one name
// for every worker process, so that the label set stays bounded.
const metricsName = "builtin"

func (c *Config) validate() error {
	if c.Concurrency < 1 {
		return errors.New("worker: Concurrency must be at least 1")
	}
	if err := domain.CheckLease(c.Lease, c.Heartbeat); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// Worker executes accepted runs.
type Worker struct {
	cfg       Config
	gate      *gate.Service
	conns     *connections.Service
	providers Providers
	claimant  gate.Claimant
	logger    *slog.Logger
}

// New returns a worker that claims and records through the gate and reads
// pinned connections through conns; it refuses a lease that does not
// outlast the heartbeat interval plus a margin.
func New(cfg Config, svc *gate.Service, conns *connections.Service, providers Providers, logger *slog.Logger) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), ulid.Make().String()[20:])
	}
	if cfg.ThrottleRetries == 0 {
		cfg.ThrottleRetries = 3
	}
	if cfg.ThrottleBackoff == 0 {
		cfg.ThrottleBackoff = 200 * time.Millisecond
	}
	if cfg.ResultBackoff == 0 {
		cfg.ResultBackoff = 50 * time.Millisecond
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	names := slices.Sorted(maps.Keys(providers))
	return &Worker{
		cfg: cfg, gate: svc, conns: conns, providers: providers, logger: logger.With("worker_id", cfg.ID),
		claimant: gate.Claimant{ID: cfg.ID, Actor: domain.ActorWorker(cfg.ID), Providers: names},
	}, nil
}

// Announce notes once that the worker runs; Run goes on announcing it
// while it runs. The composition root announces a worker before it serves
// anything, so that the first start already counts it.
func (w *Worker) Announce(ctx context.Context) error {
	if w.cfg.Presence == nil {
		return nil
	}
	return w.cfg.Presence.Announce(ctx, w.cfg.ID, w.claimant.Providers)
}

// announce announces the worker every heartbeat interval until ctx ends,
// then withdraws it. An announcement is not cut short by ctx: one cut
// short could still be carried out by the database after the withdrawal,
// and bring the worker back.
func (w *Worker) announce(ctx context.Context) {
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(w.cfg.Heartbeat, time.Second))
		err := w.Announce(actx)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.logger.Warn("announcing the worker failed", "err", err)
		}
		select {
		case <-ctx.Done():
			stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := w.cfg.Presence.Withdraw(stop, w.cfg.ID); err != nil {
				w.logger.Warn("withdrawing the worker failed", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run takes work until ctx ends, then stops taking work and waits up to
// grace for running operations; those still running afterwards are
// abandoned to their leases (the reaper of any process ends them).
func (w *Worker) Run(ctx context.Context, grace time.Duration) error {
	execCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	if w.cfg.Presence != nil {
		announced := make(chan struct{})
		defer func() { <-announced }()
		go func() {
			defer close(announced)
			w.announce(ctx)
		}()
	}
	slots := make(chan struct{}, w.cfg.Concurrency) // one per execution in progress
	freed := make(chan struct{}, 1)
	var running sync.WaitGroup
	poll := time.NewTicker(w.cfg.PollInterval)
	defer poll.Stop()
	for ctx.Err() == nil {
		if free := cap(slots) - len(slots); free > 0 {
			claims := w.claim(ctx, free)
			for _, c := range claims {
				slots <- struct{}{}
				running.Add(1)
				go func() {
					defer running.Done()
					// The slot is freed as soon as the operation has run:
					// recording its result (under the same lease) goes on
					// beside the next run's execution.
					var once sync.Once
					release := func() {
						once.Do(func() {
							<-slots
							select {
							case freed <- struct{}{}:
							default:
							}
						})
					}
					defer release()
					w.execute(execCtx, c, release)
				}()
			}
			if len(claims) == free {
				continue // there may be more waiting
			}
		}
		select {
		case <-ctx.Done():
		case <-w.cfg.Wake:
		case <-poll.C:
		case <-freed:
		}
	}

	done := make(chan struct{})
	go func() { running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		w.logger.Warn("grace period over; abandoning running operations to their leases", "grace", grace.String())
		abandon()
		<-done
	}
	return nil
}

// claim claims up to n runs. A claim that has begun is not cut short by the
// worker's stop: its commit could land after the cancellation was noticed,
// leaving a run started that nobody executes until its lease runs out.
func (w *Worker) claim(ctx context.Context, n int) []gate.Claimed {
	claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.Lease)
	defer cancel()
	claims, err := w.gate.Claim(claimCtx, w.claimant, n, w.cfg.Lease)
	if err != nil {
		if ctx.Err() == nil {
			w.logger.Warn("claiming runs failed; looking again at the next wake-up", "err", err)
		}
		return nil
	}
	if w.cfg.OnPickup != nil {
		for _, c := range claims {
			w.cfg.OnPickup(time.Since(c.Run.CreatedAt))
		}
	}
	if w.cfg.Metrics != nil && len(claims) > 0 {
		w.cfg.Metrics.ObserveClaims(metricsName, len(claims), 0)
	}
	return claims
}

// execute runs one claimed run to its end (and calls executed then) and
// records the result, unless the claim was lost meanwhile (cancelled or
// reaped): then nothing it found may count, and it records nothing.
//
// The lease is kept for the whole of it: heartbeats go on while the
// result is recorded, and a result that cannot be recorded (the database
// is away) is tried again, with backoff, for as long as the lease holds.
// Work that was done is thus reported done once the database is back,
// and only a lease that truly expired ends the run execution.lost.
func (w *Worker) execute(ctx context.Context, claim gate.Claimed, executed func()) {
	logger := w.logger.With("run_id", claim.Run.ID, "epoch", claim.Epoch)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	lost := make(chan struct{})
	stopBeats := w.keepLease(ctx, claim, logger, func() {
		close(lost)
		stopRun() // cancelled or reaped: stop cooperatively
	})
	defer stopBeats()

	reason := w.run(runCtx, claim)
	executed()
	select {
	case <-lost:
		logger.Info("claim lost (cancelled or reaped); result discarded")
		return
	default:
	}
	if ctx.Err() != nil {
		return // abandoned at shutdown: the lease will expire and the reaper ends it
	}
	w.record(ctx, claim, reason, lost, logger)
}

// keepLease heartbeats claim every Heartbeat until the returned stop is
// called; onLost runs once if the lease turns out to be gone.
func (w *Worker) keepLease(ctx context.Context, claim gate.Claimed, logger *slog.Logger, onLost func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.Heartbeat)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := w.gate.Heartbeat(ctx, w.claimant, claim.Run.ID, claim.Epoch, w.cfg.Lease)
			switch {
			case errors.Is(err, gate.ErrLeaseLost):
				if w.cfg.Metrics != nil {
					w.cfg.Metrics.ObserveLeaseLoss(metricsName)
				}
				onLost()
				return
			case err != nil && ctx.Err() == nil:
				if !failing {
					logger.Warn("heartbeat failed; retrying at the next beat", "err", err)
				}
				failing = true
			case err == nil && failing:
				logger.Info("heartbeat recovered")
				failing = false
			}
		}
	}()
	return func() { cancel(); <-done }
}

// record records the run's result, trying again with backoff while the
// lease holds (lost closes when it does not) and the worker has not
// abandoned the run. The epoch fences every attempt: a result the scope
// no longer expects is refused and dropped.
func (w *Worker) record(ctx context.Context, claim gate.Claimed, reason domain.ReasonCode, lost <-chan struct{}, logger *slog.Logger) {
	done := gate.Completion{RunID: claim.Run.ID, Epoch: claim.Epoch, Status: domain.StatusSucceeded}
	if reason != "" {
		done.Status, done.Reason = domain.StatusFailed, reason
	}
	backoff := w.cfg.ResultBackoff
	for attempt := 1; ; attempt++ {
		_, _, err := w.gate.Complete(ctx, w.claimant, done)
		switch {
		case err == nil:
			if attempt > 1 {
				logger.Info("result recorded after retries", "attempts", attempt, "status", string(done.Status))
			} else {
				logger.Debug("result recorded", "status", string(done.Status))
			}
			if w.cfg.Metrics != nil {
				w.cfg.Metrics.ObserveCompletion(metricsName, string(done.Status))
			}
			return
		case errors.Is(err, gate.ErrLeaseLost):
			logger.Info("result rejected: the claim was lost", "err", err)
			if w.cfg.Metrics != nil {
				w.cfg.Metrics.ObserveLeaseLoss(metricsName)
			}
			return
		case ctx.Err() != nil:
			logger.Warn("result not recorded: the worker stopped; the lease will expire", "err", err)
			return
		}
		if attempt == 1 {
			logger.Warn("recording the result failed; retrying while the lease holds", "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-lost:
			t.Stop()
			logger.Info("claim lost (cancelled or reaped) before the result could be recorded")
			return
		case <-ctx.Done():
			t.Stop()
			logger.Warn("result not recorded: the worker stopped; the lease will expire")
			return
		}
		backoff = min(2*backoff, w.cfg.Heartbeat)
	}
}

// run executes the operation against the pinned connection (as the claim
// read it) and returns the failure reason, or "" on success.
func (w *Worker) run(ctx context.Context, claim gate.Claimed) domain.ReasonCode {
	run := claim.Run
	pinned := run.ProviderConnection
	if pinned == nil {
		return domain.ReasonMissingDefault
	}
	var conn connections.Connection
	if claim.Connection != nil {
		conn = *claim.Connection
	} else {
		var err error
		if conn, err = w.connection(ctx, pinned.ID); err != nil {
			if ctx.Err() != nil {
				return ""
			}
			return domain.ReasonUnavailable
		}
	}
	op, _ := domain.LookupOperation(run.Type)
	// The pinned connection may have become unusable since acceptance: fail
	// with the matching reason, never switch to another connection.
	if code := domain.Preflight(domain.Operation{Prerequisites: providerOnly(op.Prerequisites)}, conn.Readiness(), nil); code != "" {
		return code
	}
	provider, err := w.providers.lookup(conn.Provider)
	if err != nil {
		return domain.ReasonUnavailable
	}
	backoff := w.cfg.ThrottleBackoff
	for attempt := 1; ; attempt++ {
		err := provider.Execute(ctx, Job{RunID: run.ID, Type: run.Type, Connection: conn, Attempt: attempt})
		var perr *ProviderError
		switch {
		case err == nil:
			return ""
		case ctx.Err() != nil:
			return ""
		case errors.As(err, &perr):
			if perr.Reason.EndsRuns() {
				return perr.Reason
			}
			return domain.ReasonUnavailable
		case errors.Is(err, ErrThrottled):
			if attempt > w.cfg.ThrottleRetries {
				return domain.ReasonThrottled
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ""
			case <-t.C:
			}
			backoff *= 2
		default:
			return domain.ReasonUnavailable
		}
	}
}

// connection reads the pinned connection as it is now. While the database
// is unavailable it tries again (the lease is held meanwhile): our own
// database being away is no reason to fail the run as the provider's.
func (w *Worker) connection(ctx context.Context, id string) (connections.Connection, error) {
	backoff := w.cfg.ResultBackoff
	for {
		conn, err := w.conns.Current(ctx, id)
		if err == nil || !eventstore.IsUnavailable(err) {
			return conn, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return connections.Connection{}, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, w.cfg.Heartbeat)
	}
}

// providerOnly keeps the prerequisites about the connection itself (not
// the restore's preview, nor who executes: this worker does).
func providerOnly(ps []domain.Prerequisite) []domain.Prerequisite {
	var out []domain.Prerequisite
	for _, p := range ps {
		if p != domain.NeedsRestorePreview && p != domain.NeedsExecutor {
			out = append(out, p)
		}
	}
	return out
}
