// Package worker executes accepted runs, and only those: it subscribes to
// the topic that carries StartAccepted events and nothing else, so blocked,
// deduped and busy starts cannot reach it by construction.
//
// For each accepted run it records RunStarted through the scope aggregate
// (which admits exactly one worker, whatever the redeliveries), executes
// against the connection pinned in the accepted event, and records
// RunSucceeded or RunFailed with a reason from the one catalog. A running
// run carries a lease with a fencing epoch that a heartbeat renews; a
// reaper ends runs whose lease expired as failed/execution.lost, and a
// result reported under a lost lease is rejected.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
)

// ConsumerGroup is the worker's consumer group on gate.TopicStartsAccepted.
const ConsumerGroup = "worker"

// Config configures a worker.
type Config struct {
	// Concurrency bounds the operations executing at once.
	Concurrency int
	// Lease is how long a claim lasts without a heartbeat; Heartbeat is
	// how often it is renewed (and cancellation noticed).
	Lease     time.Duration
	Heartbeat time.Duration
	// PollInterval is the subscriber's fallback poll.
	PollInterval time.Duration
	// Wake, if set, wakes the idle subscriber after commits.
	Wake <-chan struct{}
	// ResultBackoff is the first wait before recording a result again
	// after a failure (the database away); it doubles up to Heartbeat.
	ResultBackoff time.Duration
	// ThrottleRetries is how often a throttled call is retried, with
	// exponential backoff from ThrottleBackoff, before the run fails.
	ThrottleRetries int
	ThrottleBackoff time.Duration
	// ReapInterval is how often expired leases are reaped.
	ReapInterval time.Duration
	// SweepInterval is how often the runs table is swept for accepted runs
	// still queued after SweepAfter.
	SweepInterval time.Duration
	SweepAfter    time.Duration
	// ID names this worker in RunStarted events; generated when empty.
	ID string
	// OnEvent, if set, sees the type of every event delivered to the worker
	// (tests use it to prove that only acceptances arrive).
	OnEvent func(eventType string)
	// OnPickup, if set, is called with the time from acceptance to start.
	OnPickup func(time.Duration)
}

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
	pool      *pgxpool.Pool
	gate      *gate.Service
	conns     *connections.Service
	registry  *eventstore.Registry
	providers Providers
	logger    *slog.Logger
}

// New returns a worker that subscribes through pool, claims and records
// through the gate and reads pinned connections through conns; it refuses
// a lease that does not outlast the heartbeat interval plus a margin.
func New(cfg Config, pool *pgxpool.Pool, svc *gate.Service, conns *connections.Service, registry *eventstore.Registry, providers Providers, logger *slog.Logger) (*Worker, error) {
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
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = cfg.Heartbeat
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 2 * time.Second
	}
	if cfg.SweepAfter == 0 {
		cfg.SweepAfter = 5 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{
		cfg: cfg, pool: pool, gate: svc, conns: conns, registry: registry, providers: providers, logger: logger.With("worker_id", cfg.ID),
	}, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run takes work until ctx ends, then stops taking work and waits up to
// grace for running operations; those still running afterwards are
// abandoned to their leases (the reaper of any process ends them).
//
// Acceptance messages are acknowledged as soon as they are in the local
// queue, so the subscription never waits on execution (a waiting
// subscriber would hold back every other consumer of the database). The
// runs table is the durable queue behind the messages: a sweeper hands
// the executors accepted runs that stayed queued (a message taken by a
// process that crashed, a local queue that was full).
func (w *Worker) Run(ctx context.Context, grace time.Duration) error {
	execCtx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()

	sub, err := eventstore.NewSubscriber(w.pool, eventstore.SubscriberConfig{
		ConsumerGroup: ConsumerGroup,
		PollInterval:  w.cfg.PollInterval,
		Wake:          w.cfg.Wake,
		Logger:        w.logger,
	})
	if err != nil {
		return err
	}
	msgs, err := sub.Subscribe(ctx, gate.TopicStartsAccepted)
	if err != nil {
		return fmt.Errorf("worker: subscribe: %w", err)
	}
	queue := make(chan domain.StartAccepted, 4*w.cfg.Concurrency)
	var background, executors sync.WaitGroup
	background.Add(2)
	go func() { defer background.Done(); w.reap(ctx) }()
	go func() { defer background.Done(); w.sweep(ctx, queue) }()
	for range w.cfg.Concurrency {
		executors.Add(1)
		go func() {
			defer executors.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case accepted := <-queue:
					if ctx.Err() == nil {
						w.claimAndExecute(ctx, execCtx, accepted)
					}
				}
			}
		}()
	}

	for msg := range msgs {
		accepted, err := w.decode(msg)
		if err != nil {
			if ctx.Err() == nil {
				w.logger.Error("undecodable acceptance; will be redelivered", "err", err)
			}
			msg.Nack()
			continue
		}
		select {
		case queue <- accepted:
		default: // full: the run stays queued in the database and the sweeper brings it back
		}
		msg.Ack()
	}
	_ = sub.Close()
	background.Wait()

	done := make(chan struct{})
	go func() { executors.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		w.logger.Warn("grace period over; abandoning running operations to their leases", "grace", grace.String())
		abandon()
		<-done
	}
	return nil
}

func (w *Worker) decode(msg *message.Message) (domain.StartAccepted, error) {
	e, payload, err := w.registry.DecodeMessage(msg)
	if e.Type != "" && w.cfg.OnEvent != nil {
		w.cfg.OnEvent(e.Type)
	}
	if err != nil {
		return domain.StartAccepted{}, fmt.Errorf("message %s: %w", msg.UUID, err)
	}
	accepted, ok := payload.(domain.StartAccepted)
	if !ok {
		return domain.StartAccepted{}, fmt.Errorf("worker: %s on the acceptance topic", e.Type)
	}
	return accepted, nil
}

// claimAndExecute records RunStarted for an accepted run (exactly one
// worker succeeds) and executes it.
func (w *Worker) claimAndExecute(ctx, execCtx context.Context, accepted domain.StartAccepted) {
	// A claim that has begun is not cut short by the worker's stop: its
	// commit could land after the cancellation was noticed, leaving a run
	// started that nobody executes until its lease runs out. The drain
	// lets it run within the grace period instead.
	claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.Lease)
	defer cancel()
	claim, err := w.gate.BeginRun(claimCtx, accepted.RunID, w.cfg.ID, w.cfg.Lease)
	if errors.Is(err, domain.ErrRunNotActive) || errors.Is(err, domain.ErrRunAlreadyStarted) {
		return // cancelled while queued, or another worker has it: nothing to do
	}
	if err != nil {
		w.logger.Warn("could not begin run; the sweeper will offer it again", "run_id", accepted.RunID, "err", err)
		return
	}
	if w.cfg.OnPickup != nil {
		w.cfg.OnPickup(time.Since(accepted.At))
	}
	w.execute(execCtx, accepted, claim)
}

// sweep offers the executors accepted runs that stayed queued longer than
// SweepAfter, as many as the local queue has room for.
func (w *Worker) sweep(ctx context.Context, queue chan<- domain.StartAccepted) {
	t := time.NewTicker(w.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		room := cap(queue) - len(queue)
		if room == 0 {
			continue
		}
		runs, err := w.gate.QueuedRuns(ctx, w.cfg.SweepAfter, room)
		if err != nil {
			if ctx.Err() == nil {
				w.logger.Warn("sweeping queued runs failed", "err", err)
			}
			continue
		}
		for _, accepted := range runs {
			select {
			case queue <- accepted:
			default:
			}
		}
	}
}

// execute runs one claimed run to its end and records the result, unless
// the claim was lost meanwhile (cancelled or reaped): then nothing it
// found may count, and it records nothing.
//
// The lease is kept for the whole of it: heartbeats go on while the
// result is recorded, and a result that cannot be recorded (the database
// is away) is tried again, with backoff, for as long as the lease holds.
// Work that was done is thus reported done once the database is back,
// and only a lease that truly expired ends the run execution.lost.
func (w *Worker) execute(ctx context.Context, accepted domain.StartAccepted, claim gate.Claim) {
	logger := w.logger.With("run_id", claim.RunID, "epoch", claim.Epoch)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	lost := make(chan struct{})
	stopBeats := w.keepLease(ctx, claim, logger, func() {
		close(lost)
		stopRun() // cancelled or reaped: stop cooperatively
	})
	defer stopBeats()

	reason := w.run(runCtx, accepted)
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
func (w *Worker) keepLease(ctx context.Context, claim gate.Claim, logger *slog.Logger, onLost func()) (stop func()) {
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
			err := w.gate.Heartbeat(ctx, claim, w.cfg.Lease)
			switch {
			case errors.Is(err, gate.ErrLeaseLost):
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
func (w *Worker) record(ctx context.Context, claim gate.Claim, reason domain.ReasonCode, lost <-chan struct{}, logger *slog.Logger) {
	by := domain.ActorWorker(w.cfg.ID)
	backoff := w.cfg.ResultBackoff
	for attempt := 1; ; attempt++ {
		var err error
		if reason == "" {
			err = w.gate.Succeed(ctx, by, claim)
		} else {
			err = w.gate.Fail(ctx, by, claim, reason)
		}
		switch {
		case err == nil:
			if attempt > 1 {
				logger.Info("result recorded after retries", "attempts", attempt)
			}
			return
		case errors.Is(err, domain.ErrStaleEpoch), errors.Is(err, domain.ErrRunNotActive), errors.Is(err, domain.ErrRunNotStarted):
			logger.Info("result rejected: the claim was lost", "err", err)
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

// run executes the operation against the pinned connection and returns
// the failure reason, or "" on success.
func (w *Worker) run(ctx context.Context, accepted domain.StartAccepted) domain.ReasonCode {
	pinned := accepted.Connection
	if pinned == nil {
		return domain.ReasonMissingDefault
	}
	conn, err := w.connection(ctx, pinned.ID)
	if err != nil {
		if ctx.Err() != nil {
			return ""
		}
		return domain.ReasonUnavailable
	}
	op, _ := domain.LookupOperation(accepted.Type)
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
		err := provider.Execute(ctx, Job{RunID: accepted.RunID, Type: accepted.Type, Connection: conn, Attempt: attempt})
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

// providerOnly keeps the prerequisites about the connection.
func providerOnly(ps []domain.Prerequisite) []domain.Prerequisite {
	var out []domain.Prerequisite
	for _, p := range ps {
		if p != domain.NeedsRestorePreview {
			out = append(out, p)
		}
	}
	return out
}

func (w *Worker) reap(ctx context.Context) {
	t := time.NewTicker(w.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := w.gate.ReapExpired(ctx, 100)
		if err != nil && ctx.Err() == nil {
			w.logger.Warn("reaping expired leases failed", "err", err)
		}
		if n > 0 {
			w.logger.Info("ended runs whose worker was lost", "count", n)
		}
	}
}
