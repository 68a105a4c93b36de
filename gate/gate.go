// Package gate is the one gate every start passes through, and the writer
// of the ProtectedScope aggregate's streams: it decides starts, records
// the lifecycle of runs (claims, heartbeats, completions, cancels, the
// reaper) and answers repeated idempotent requests.
//
// Every change of a scope takes the same steps (writer.go): lock the
// scopes (in scope order), load their snapshots, decide each command with
// domain.Decide against the state the previous ones left, record the
// events, and flush them: every event of the transaction in one append,
// the scopes' snapshots, and the runs rows the events change. The paths
// differ only in what they decide:
//
//   - start.go: Start and StartTx, one decision per start; facts.go reads
//     what the decisions depend on in the round trip that takes the locks;
//   - claim.go: Claim, an executor's RunStarted decisions;
//   - complete.go: Complete, RunSucceeded or RunFailed, with what the run
//     learned about its connection;
//   - lifecycle.go: Heartbeat, CancelRun, the reaper and revoked
//     executors' leases;
//   - idempotency.go: stored answers to Idempotency-Key requests;
//   - batch.go: the group commit of starts and of completions: one leader
//     decides every item waiting at that moment in one transaction;
//   - runs.go: the SQL of the scopes and runs tables.
//
// The gate reads tenancy (who may start), connections (readiness, the
// default), restore drafts (previews) and the executor registry; it
// changes none of them, except what a run learned about its connection
// (connections.Service.Learn, in the completion's transaction).
package gate

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/internal/journal"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TopicStartsAccepted is the topic that announces StartAccepted events
// and nothing else; execution waits on it alone.
const TopicStartsAccepted = "starts_accepted"

// Route sends StartAccepted events to TopicStartsAccepted besides the
// topic of all events; every store of opsgate is built with it.
func Route(eventType string) []string {
	if eventType == (domain.StartAccepted{}).EventType() {
		return []string{TopicStartsAccepted}
	}
	return nil
}

// DefaultStartQueue is how many starts may wait to be decided in one
// process unless Config.StartQueue says otherwise.
const DefaultStartQueue = 512

// DefaultBatchTimeout bounds one batch's transaction unless
// Config.BatchTimeout says otherwise.
const DefaultBatchTimeout = 30 * time.Second

// Defaults of the deadlines and of executor liveness (contract section 12).
const (
	DefaultQueueTTL         = 15 * time.Minute
	DefaultMaxDuration      = time.Hour
	DefaultExecutorLiveness = executors.DefaultLiveness
)

// Config is what a gate is built with; New checks it once.
type Config struct {
	// QueueTTL and MaxDuration are the deadlines of an accepted run whose
	// start named no limits: how long it may wait to be claimed, and how
	// long it may run once claimed. Zero means DefaultQueueTTL and
	// DefaultMaxDuration.
	QueueTTL, MaxDuration time.Duration
	// ExecutorLiveness is how recently an executor (or a built-in worker)
	// must have been seen to count for the preflight. Zero means
	// DefaultExecutorLiveness.
	ExecutorLiveness time.Duration
	// StartQueue bounds the starts waiting to be decided in this process:
	// a start that finds StartQueue waiting, or starts of a quarter as many
	// other scopes, is refused at once with ErrOverloaded (load shedding).
	// Zero means DefaultStartQueue.
	StartQueue int
	// BatchTimeout bounds the transaction of one batch of starts or
	// completions. Zero means DefaultBatchTimeout.
	BatchTimeout time.Duration
	// Clock gives the times decisions are recorded at. Nil means
	// journal.SystemClock.
	Clock journal.Clock
	// OnDecided, if set, is told of every start this process decides, from
	// any surface (the API, the console, onboarding's follow-ups), with the
	// operation type it asked for; not of idempotent replays.
	OnDecided func(res domain.StartResult, opType string)
	// OnReaperPass, if set, is told after each pass of this process's
	// reaper with how many runs it ended (the test kit's signal).
	OnReaperPass func(ended int)
	// Tracer starts the spans of decisions, claims and completions
	// (trace.go). Nil means a no-op tracer.
	Tracer trace.Tracer
}

func (c *Config) setDefaults() {
	if c.StartQueue == 0 {
		c.StartQueue = DefaultStartQueue
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = DefaultBatchTimeout
	}
	if c.Clock == nil {
		c.Clock = journal.SystemClock
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if c.QueueTTL == 0 {
		c.QueueTTL = DefaultQueueTTL
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	if c.ExecutorLiveness == 0 {
		c.ExecutorLiveness = DefaultExecutorLiveness
	}
}

// limits are the default deadlines' limits.
func (c *Config) limits() domain.Limits {
	return domain.Limits{QueueTTL: c.QueueTTL, MaxDuration: c.MaxDuration}
}

func (c *Config) validate() error {
	var errs []error
	if c.StartQueue < 1 {
		errs = append(errs, fmt.Errorf("gate: StartQueue %d: at least one start must be able to wait", c.StartQueue))
	}
	if c.BatchTimeout < time.Second {
		errs = append(errs, fmt.Errorf("gate: BatchTimeout %v: a batch needs at least a second", c.BatchTimeout))
	}
	if err := c.limits().Check(); err != nil {
		errs = append(errs, fmt.Errorf("gate: QueueTTL and MaxDuration: %w", err))
	}
	return errors.Join(errs...)
}

// Service decides starts and records run lifecycles.
type Service struct {
	// db is what the gate reads with outside its transactions; store
	// records.
	db    *pgxpool.Pool
	store *eventstore.Store
	conns *connections.Service
	cfg   Config
	now   journal.Clock
	// starts and completions are the process's group commits (batch.go).
	starts      *batcher[*pending]
	completions *batcher[*completing]
	// shedAt is when a start was last refused as overloaded (unix
	// nanoseconds of now; 0: never).
	shedAt atomic.Int64
}

// sheddingFor is how long after it refused a start as overloaded the
// process counts as shedding.
const sheddingFor = 100 * time.Millisecond

// Shedding reports whether this process refused a start as overloaded
// within the last sheddingFor: background work that competes with the
// decisions for the same cores (the webhook dispatcher) yields to them
// meanwhile.
func (s *Service) Shedding() bool {
	at := s.shedAt.Load()
	return at != 0 && s.now().Sub(time.Unix(0, at)) < sheddingFor
}

// New returns the gate that reads with db and records in store (which must
// route with Route); conns resolves the connections starts name or
// default to.
func New(db *pgxpool.Pool, store *eventstore.Store, conns *connections.Service, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{db: db, store: store, conns: conns, cfg: cfg, now: cfg.Clock}
	s.starts = &batcher[*pending]{window: groupWindow, timeout: cfg.BatchTimeout, run: s.decideIn,
		split: splitByScope, bound: cfg.StartQueue, key: func(p *pending) string { return string(p.scope) }}
	s.completions = &batcher[*completing]{window: groupWindow, timeout: cfg.BatchTimeout, run: s.completeIn,
		split: splitEach[*completing]}
	return s, nil
}

// groupWindow bounds how many starts, or completions, one transaction
// records.
const groupWindow = 256
