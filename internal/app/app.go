// Package app is opsgate's composition root: it builds the whole
// application from the configuration (connection pools, the event store,
// the write-side services, the gate, projectors, the worker, the bootstrap
// process manager and the HTTP handler) for any subset of roles, and runs
// it until its context ends. cmd/opsgate and the test kit
// (internal/apptest) build the application here and nowhere else.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/console"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/metrics"
	"github.com/opsgate/opsgate/internal/tracing"
	"github.com/opsgate/opsgate/migrations"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/restores"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/tokens"
	"github.com/opsgate/opsgate/webhooks"
	"github.com/opsgate/opsgate/worker"
)

// Roles are what a process does: serve the API, run the projectors, run
// the worker (and the bootstrap process manager). Several processes with
// any roles may share one database.
type Roles struct {
	API, Projector, Worker bool
}

// AllRoles is every role in one process.
func AllRoles() Roles { return Roles{API: true, Projector: true, Worker: true} }

// ParseRoles reads a comma-separated list of roles.
func ParseRoles(s string) (Roles, error) {
	var r Roles
	for _, name := range strings.Split(s, ",") {
		switch strings.TrimSpace(name) {
		case "api":
			r.API = true
		case "projector":
			r.Projector = true
		case "worker":
			r.Worker = true
		case "":
		default:
			return r, fmt.Errorf("unknown role %q (roles are api, projector, worker)", strings.TrimSpace(name))
		}
	}
	if r == (Roles{}) {
		return r, errors.New("--roles names no role (roles are api, projector, worker)")
	}
	return r, nil
}

func (r Roles) String() string {
	var out []string
	for _, role := range []struct {
		on   bool
		name string
	}{{r.API, "api"}, {r.Projector, "projector"}, {r.Worker, "worker"}} {
		if role.on {
			out = append(out, role.name)
		}
	}
	return strings.Join(out, ",")
}

// Option adjusts what the configuration does not say: the clock, the
// provider adapters, the worker's inner timings. Production needs none.
type Option func(*options)

type options struct {
	clock     journal.Clock
	providers worker.Providers
	worker    func(*worker.Config)
	webhooks  func(*webhooks.DispatcherConfig)
	observers Observers
	tracing   trace.TracerProvider
}

// WithClock makes every service record times from clock.
func WithClock(clock journal.Clock) Option { return func(o *options) { o.clock = clock } }

// WithProviders replaces the worker's provider adapters.
func WithProviders(p worker.Providers) Option { return func(o *options) { o.providers = p } }

// Observers are told of internal steps of the application: what a test
// waits on instead of polling.
type Observers struct {
	// ReaperPass is told after each pass of the reaper, with how many runs
	// it ended.
	ReaperPass func(ended int)
	// FeedBatch is told after each batch of the feed, with its number of
	// events and its error.
	FeedBatch func(events int, err error)
}

// WithObservers tells obs of the application's internal steps.
func WithObservers(obs Observers) Option { return func(o *options) { o.observers = obs } }

// WithTracerProvider makes the application's spans with tp (a test's
// in-memory exporter) instead of the one the configuration asks for.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tracing = tp } }

// WithWorkerConfig lets fn adjust the worker's configuration after it was
// derived from the application's.
func WithWorkerConfig(fn func(*worker.Config)) Option { return func(o *options) { o.worker = fn } }

// WithWebhookDispatcher lets fn adjust the webhook dispatcher's
// configuration after it was derived from the application's.
func WithWebhookDispatcher(fn func(*webhooks.DispatcherConfig)) Option {
	return func(o *options) { o.webhooks = fn }
}

// App is the application of one process.
type App struct {
	cfg    config.Config
	roles  Roles
	logger *slog.Logger

	// Pool is the main pool: decisions and their appends, reads.
	Pool *pgxpool.Pool
	// ReaderPool is the subscribers' pool: their transactions are named
	// eventstore.ReaderApplicationName so that they do not hold back the
	// reading horizon, and commit without waiting for the WAL flush.
	ReaderPool *pgxpool.Pool
	// webhookPool is the webhook dispatcher's (worker role), a few
	// connections of its own: deliveries neither wait for the connections
	// the decisions hold under load, nor take theirs. Never appending
	// events, it is a reader's (it does not hold back the reading horizon),
	// and it commits durably.
	webhookPool *pgxpool.Pool
	Store       *eventstore.Store
	Notifier    *eventstore.Notifier
	Tokens      *tokens.Service
	Tenancy     *tenancy.Service
	Connections *connections.Service
	Restores    *restores.Service
	Executors   *executors.Service
	Gate        *gate.Service
	Onboarding  *onboarding.Service
	Reader      *projections.Reader
	Webhooks    *webhooks.Service
	Changes     *changes.Reader
	Metrics     *metrics.Metrics
	// Handler serves the API (nil without the api role).
	Handler http.Handler
	// AdminToken is the admin token: OPSGATE_ADMIN_TOKEN, or generated
	// (AdminTokenGenerated) when it is unset.
	AdminToken          string
	AdminTokenGenerated bool

	worker *worker.Worker
	// dispatcher sends webhook deliveries (worker role).
	dispatcher *webhooks.Dispatcher
	// recentChanges are the changes this process's change feed committed
	// last, which its long polls and streams read from memory.
	recentChanges *changes.Recent
	// auditKey signs the audit trees' checkpoints (nil: none configured).
	auditKey  *audit.Key
	providers []string // the built-in worker's
	observers Observers
	migrated  atomic.Bool
	draining  chan struct{} // closed when the HTTP server starts draining
	tracer    trace.Tracer
	// watchdog leaves a database server that stops answering (dial.go).
	watchdog *watchdog
	// flushSpans sends the spans not exported yet (Close).
	flushSpans func(context.Context) error
}

// NewRegistry returns the registry of every opsgate event.
func NewRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	for _, events := range [][]domain.Event{domain.ScopeEvents(), domain.TenancyEvents(), domain.OnboardingEvents()} {
		for _, e := range events {
			reg.Register(e)
		}
	}
	return reg
}

// NewStore returns the event store of opsgate over pool: every event
// registered, every topic routed (gate.Route).
func NewStore(pool *pgxpool.Pool, opts ...eventstore.Option) *eventstore.Store {
	return eventstore.New(pool, NewRegistry(), gate.Route, opts...)
}

// New connects to the database, migrates it (waiting up to a minute for a
// database that is still starting) and builds the application for roles.
// Close releases it.
func New(ctx context.Context, cfg config.Config, roles Roles, logger *slog.Logger, opts ...Option) (*App, error) {
	o := options{clock: journal.SystemClock, providers: worker.Providers{connections.ProviderSimulated: worker.Simulated{}}}
	for _, opt := range opts {
		opt(&o)
	}
	a := &App{cfg: cfg, roles: roles, logger: logger, draining: make(chan struct{}), observers: o.observers,
		providers: slices.Sorted(maps.Keys(o.providers)), flushSpans: func(context.Context) error { return nil }}
	tp := o.tracing
	switch {
	case tp != nil:
	case cfg.Tracing:
		sdk, err := tracing.NewProvider(ctx)
		if err != nil {
			return nil, err
		}
		tp, a.flushSpans = sdk, sdk.Shutdown
	default:
		tp = noop.NewTracerProvider()
	}
	a.tracer = tp.Tracer(tracing.Instrumentation)
	// The metrics' scrape asks the gate and the read models, which report
	// their decisions to it: the two are joined once both exist. The pools
	// report to it from the first connection.
	database := &metrics.Database{}
	a.Metrics = metrics.New(database)
	a.watchdog = newWatchdog(logger)
	var err error
	if a.Pool, err = openPool(ctx, cfg, a.watchdog, logger, a.Metrics.ObserveSyncWaitCancelled); err != nil {
		a.watchdog.close()
		return nil, err
	}
	if err := migrateWithRetry(ctx, a.Pool, logger); err != nil {
		a.Pool.Close()
		a.watchdog.close()
		return nil, err
	}
	a.migrated.Store(true)
	if cfg.AuditSigningKeyFile != "" {
		if a.auditKey, err = audit.ReadKey(cfg.AuditSigningKeyFile); err != nil {
			a.Pool.Close()
			a.watchdog.close()
			return nil, err
		}
	}
	// Subscribers (projectors, the worker's and the process manager's
	// subscriptions) commit their offsets, checkpoints and read-model rows
	// without waiting for the WAL flush: what a crash loses of them is lost
	// together and simply delivered again. Decisions and their events use
	// the main pool and are durable at commit.
	if a.ReaderPool, err = openPool(ctx, cfg, a.watchdog, logger, a.Metrics.ObserveSyncWaitCancelled, "synchronous_commit", "off", "application_name", eventstore.ReaderApplicationName); err != nil {
		a.Pool.Close()
		a.watchdog.close()
		return nil, err
	}

	a.Notifier = eventstore.NewNotifier(a.Pool, logger, eventstore.WakeTiming{
		Delay: cfg.WakeDelay, Every: cfg.WakeEvery, AtOnceEvery: cfg.ChangesWakeEvery})
	// The change feed is announced once per batch of the changes
	// consumer: its long polls and the webhook dispatchers need not wait
	// for more.
	a.Notifier.AtOnce(changes.Topic)
	a.Store = NewStore(a.Pool, eventstore.WithCommitHook(a.Notifier.Committed))
	a.Tokens = tokens.NewService(a.Pool, o.clock)
	a.Tenancy = tenancy.New(a.Pool, a.Store, a.Tokens, o.clock)
	a.Connections = connections.New(a.Pool, a.Store, o.clock)
	a.Restores = restores.New(a.Pool, a.Store, o.clock)
	a.Executors = executors.New(a.Pool, a.Store, a.Tokens, o.clock, cfg.ExecutorLiveness)
	database.Feed = a.Store
	a.Metrics.WatchPool("main", a.Pool)
	a.Gate, err = gate.New(a.Pool, a.Store, a.Connections, gate.Config{
		StartQueue: cfg.StartQueue, QueueTTL: cfg.QueueTTL, MaxDuration: cfg.MaxDuration, ExecutorLiveness: cfg.ExecutorLiveness,
		Clock: o.clock, OnDecided: a.Metrics.ObserveStart, OnReaperPass: o.observers.ReaperPass, Tracer: a.tracer,
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	a.Onboarding = onboarding.New(a.Pool, a.Store, a.Gate, a.Tenancy, a.Connections, o.clock)
	a.Reader = projections.NewReader(a.Pool, cfg.ReadYourWritesWait, a.Store)
	a.recentChanges = changes.NewRecent()
	a.Changes = changes.NewReader(a.Pool, a.recentChanges)
	a.Webhooks = webhooks.New(a.Pool, webhooks.Settings{AllowPrivate: cfg.WebhookAllowPrivate, SecretOverlap: cfg.WebhookSecretOverlap},
		o.clock, a.Notifier.Committed)
	database.Queue, database.Scopes, database.Webhooks = a.Reader, a.Gate, a.Webhooks
	if a.ReaderPool != nil {
		a.Metrics.WatchPool("reader", a.ReaderPool)
	}

	if roles.Worker {
		wcfg := worker.Config{Concurrency: cfg.WorkerConcurrency, Lease: cfg.Lease, Heartbeat: cfg.Heartbeat,
			PollInterval: cfg.PollInterval, Wake: a.Notifier.SubscribeTopic(gate.TopicStartsAccepted), Metrics: a.Metrics,
			Presence: a.Executors}
		if o.worker != nil {
			o.worker(&wcfg)
		}
		if a.worker, err = worker.New(wcfg, a.Gate, a.Connections, o.providers, logger); err != nil {
			a.Close()
			return nil, err
		}
		dcfg := webhooks.DispatcherConfig{Schedule: cfg.WebhookRetrySchedule, AllowPrivate: cfg.WebhookAllowPrivate,
			Wake:    func() <-chan struct{} { return a.Notifier.Next(webhooks.Topic) },
			Changes: func() <-chan struct{} { return a.Notifier.Next(changes.Topic) }, Observe: a.Metrics.ObserveWebhookAttempt,
			Recent: a.recentChanges, Yield: a.Gate.Shedding}
		if o.webhooks != nil {
			o.webhooks(&dcfg)
		}
		pcfg := cfg
		pcfg.DBMaxConns = webhookPoolSize
		if a.webhookPool, err = openPool(ctx, pcfg, a.watchdog, logger, a.Metrics.ObserveSyncWaitCancelled,
			"application_name", eventstore.ReaderApplicationName); err != nil {
			a.Close()
			return nil, err
		}
		a.Metrics.WatchPool("webhooks", a.webhookPool)
		a.dispatcher = webhooks.NewDispatcher(a.webhookPool, dcfg, logger)
		// The built-in worker counts for the preflight from the first start
		// this process could decide.
		if err := a.worker.Announce(ctx); err != nil {
			a.Close()
			return nil, err
		}
	}
	if roles.API {
		a.AdminToken = cfg.AdminToken
		if a.AdminToken == "" {
			a.AdminToken, a.AdminTokenGenerated = tokens.New("oga_"), true
		}
		cons, err := console.New(console.Deps{Pool: a.Pool, Tokens: a.Tokens, Tenancy: a.Tenancy, Connections: a.Connections, Gate: a.Gate, Restores: a.Restores, Onboarding: a.Onboarding,
			Reader: a.Reader, Store: a.Store, Webhooks: a.Webhooks, Draining: a.draining, Logger: logger,
			Changes: func() <-chan struct{} { return a.Notifier.Next(changes.Topic) }})
		if err != nil {
			a.Close()
			return nil, err
		}
		apiRoutes := api.Routes(api.Deps{
			Tokens: a.Tokens, Tenancy: a.Tenancy, Connections: a.Connections, Restores: a.Restores, Executors: a.Executors,
			Gate: a.Gate, Onboarding: a.Onboarding, Reader: a.Reader, Store: a.Store,
			AdminToken: a.AdminToken, Metrics: a.Metrics,
			Executor: api.ExecutorSettings{Lease: cfg.Lease, Heartbeat: cfg.Heartbeat,
				Accepted: func() <-chan struct{} { return a.Notifier.Next(gate.TopicStartsAccepted) },
				Draining: a.draining},
			Webhooks: a.Webhooks,
			Limits:   &api.RateLimits{Rate: cfg.RateLimit, Burst: cfg.RateBurst, Refused: a.Metrics.ObserveRateLimited},
			Changes:  api.ChangeSettings{Reader: a.Changes, Next: func() <-chan struct{} { return a.Notifier.Next(changes.Topic) }},
			AuditKey: a.auditKey,
		})
		a.Handler = api.NewEcho(api.Config{
			Logger:         logger,
			Ready:          api.Health{Migrated: &a.migrated, Ping: a.Pool.Ping},
			Metrics:        a.Metrics,
			RequestTimeout: cfg.RequestTimeout,
			Tracer:         a.tracer,
			// The API, and the console beside it on the same services.
			Routes: func(e *echo.Echo) { apiRoutes(e); cons.Register(e) },
		})
	}
	return a, nil
}

// backfillTrees builds the audit trees of chains linked before trees
// existed (audit.History.BackfillTrees), before the chainer starts: in
// transactions of a few thousand leaves, resumed by the next process if
// this one stops.
func (a *App) backfillTrees(ctx context.Context) {
	start := time.Now()
	n, err := audit.NewHistory(a.Store).BackfillTrees(ctx)
	if err != nil && ctx.Err() == nil {
		a.logger.Error("audit tree backfill stopped; the chainer builds what is left", "err", err)
	}
	if n > 0 {
		a.logger.Info("audit trees built", "leaves", n, "took", time.Since(start).String())
	}
}

// Close exports the spans still pending and releases the pools.
func (a *App) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.flushSpans(ctx); err != nil {
		a.logger.Warn("spans not exported", "err", err)
	}
	for _, p := range []*pgxpool.Pool{a.ReaderPool, a.webhookPool} {
		if p != nil {
			p.Close()
		}
	}
	a.Pool.Close()
	a.watchdog.close()
}

// BuiltinProviders are the providers the built-in worker of this
// deployment runs.
func (a *App) BuiltinProviders() []string { return a.providers }

// WorkerID is the id of the process's worker ("" without the worker role).
func (a *App) WorkerID() string {
	if a.worker == nil {
		return ""
	}
	return a.worker.ID()
}

// Run runs the roles until ctx ends, serving the API on ln (api role),
// then drains: the HTTP server stops accepting and finishes in-flight
// requests, the worker stops taking work and lets running operations
// finish within the grace period (the rest is left to their leases), and
// the background roles stop last.
func (a *App) Run(ctx context.Context, ln net.Listener) error {
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBackground()
	wg.Go(func() { a.Notifier.Run(bg) })
	if a.roles.API || a.roles.Worker {
		// Expired leases are reaped wherever executors are served or run.
		// At least every second, so that a run past a deadline ends within
		// a few seconds of it.
		wg.Go(func() { a.Gate.RunReaper(bg, min(a.cfg.Heartbeat, time.Second), a.logger) })
	}
	// One feed reads the event log for the projectors and the audit chain
	// (projector role) and the bootstrap process manager, which drives
	// onboarding sessions forward as their runs end (worker role). The
	// change feed has a feed of its own, so that a change is not held up
	// by the projectors' batches: clients and webhooks wait for it.
	var consumers, pushed []eventstore.Consumer
	if a.roles.Projector {
		consumers = append(consumers, projections.Consumers(a.Metrics.ObserveProjection)...)
		// The audit chain links each event behind the commit (audit/chain.go).
		consumers = append(consumers, audit.Chainer(func(at time.Time) { a.Metrics.ObserveProjection(audit.ChainConsumer, at) }))
		// Pickup and run durations, timed from the runs' events.
		consumers = append(consumers, a.Metrics.RunsConsumer())
		// The change feed, which webhooks follow.
		pushed = append(pushed, changes.Consumer(func(at time.Time) { a.Metrics.ObserveProjection(changes.ConsumerName, at) }, a.Notifier, a.recentChanges))
	}
	if a.worker != nil {
		consumers = append(consumers, a.Onboarding.Manager())
	}
	// The projectors' feed is woken a few milliseconds after a burst of
	// commits, to read it in one batch; the change feed at each commit, as
	// clients wait for it (its batches take in what commits meanwhile).
	wakes := []func() <-chan struct{}{a.Notifier.Subscribe, a.Notifier.SubscribeAtOnce}
	for i, list := range [][]eventstore.Consumer{consumers, pushed} {
		if len(list) == 0 {
			continue
		}
		feed := &eventstore.Feed{
			Pool: a.ReaderPool, Registry: a.Store.Registry(), Consumers: list, Logger: a.logger,
			Wake: wakes[i], PollInterval: a.cfg.PollInterval, Observe: a.observeFeedBatch, Tracer: a.tracer,
		}
		wg.Go(func() {
			if i == 0 && a.roles.Projector {
				a.backfillTrees(bg)
			}
			if err := feed.Run(bg); err != nil && bg.Err() == nil {
				a.logger.Error("feed stopped", "err", err)
			}
		})
	}
	if a.auditKey != nil && a.roles.Projector {
		// Checkpoints of the audit trees, signed by one process at a time.
		signer := audit.NewCheckpointSigner(a.Pool, audit.SignerConfig{Key: a.auditKey, Origin: a.cfg.AuditOrigin, Interval: a.cfg.AuditCheckpointInterval,
			OnSigned: a.Metrics.ObserveCheckpointSigned, OnRefused: a.Metrics.ObserveCheckpointRefused}, a.logger)
		wg.Go(func() { signer.Run(bg) })
	}
	if a.dispatcher != nil {
		// Webhook deliveries in flight finish (each within its timeout)
		// before the process ends; the rest wait in the database.
		wg.Go(func() { a.dispatcher.Run(bg) })
	}
	if a.worker != nil {
		wg.Go(func() {
			// The worker stops taking work when ctx ends and lets running
			// operations finish within the grace period.
			if err := a.worker.Run(ctx, a.cfg.ShutdownGrace); err != nil {
				a.logger.Error("worker stopped", "err", err)
			}
		})
	}
	if a.cfg.PprofAddr != "" {
		go servePprof(bg, a.cfg.PprofAddr, a.logger)
	}
	if !a.roles.API || ln == nil {
		a.logger.Info("running", "roles", a.roles.String())
		<-ctx.Done()
		a.logger.Info("shutting down")
		return nil
	}
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       a.cfg.RequestTimeout,
		WriteTimeout:      a.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	a.logger.Info("serving", "addr", ln.Addr().String(), "roles", a.roles.String())
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	select {
	case err := <-errCh:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	a.logger.Info("shutting down", "grace", a.cfg.ShutdownGrace.String())
	close(a.draining) // long polls answer at once
	shutdownCtx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// The grace period ran out with requests in flight: they are cut.
		a.logger.Warn("drain cut short at the end of the grace period", "err", err)
		_ = srv.Close()
	}
	return nil
}

// observeFeedBatch tells the metrics, and the observers, of a batch of the
// feed.
func (a *App) observeFeedBatch(events int, err error) {
	a.Metrics.ObserveFeedBatch(events, err)
	if a.observers.FeedBatch != nil {
		a.observers.FeedBatch(events, err)
	}
}

// webhookPoolSize is the webhook dispatcher's pool: its loop, its
// recorder and a spare.
const webhookPoolSize = 3

// OpenPool opens a connection pool on the configured database; params
// are run-time settings (name, value pairs) of every connection.
//
// DATABASE_URL may name several hosts with target_session_attrs=read-write
// (contract section 18): pgx tries them in turn and keeps the one that
// accepts writes. Each connection is dialled with TCP keepalive,
// TCP_USER_TIMEOUT and a connect timeout per host, and watched (dial.go),
// so that a server that stops answering is left within seconds. A context
// that ends while a statement runs closes the connection (pgx's deadline
// handler, set here explicitly): opsgate never sends a cancel request, so
// that no commit's wait for the synchronous standby is cancelled, and sets
// no statement_timeout on its sessions.
//
// The pools of an application are also watched (dial.go); those of a
// command (migrate, projections, audit), which lives for one job, are not.
func OpenPool(ctx context.Context, cfg config.Config, params ...string) (*pgxpool.Pool, error) {
	return openPool(ctx, cfg, nil, slog.Default(), nil, params...)
}

// OpenWatchedPool is OpenPool for a process that must outlive a failover
// as an application does (the failover soak's own reads): its connections
// leave a server that stops answering (dial.go). closePool closes the pool
// and stops its watchdog.
func OpenWatchedPool(ctx context.Context, cfg config.Config, logger *slog.Logger) (pool *pgxpool.Pool, closePool func(), err error) {
	w := newWatchdog(logger)
	if pool, err = openPool(ctx, cfg, w, logger, nil); err != nil {
		w.close()
		return nil, nil, err
	}
	return pool, func() { pool.Close(); w.close() }, nil
}

// openPool is OpenPool with the connections known to w (nil: none),
// logging to logger and telling cancelled (nil or a function) of each
// wait for synchronous replication that PostgreSQL says it cancelled.
func openPool(ctx context.Context, cfg config.Config, w *watchdog, logger *slog.Logger, cancelled func(), params ...string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	pc.MaxConns = cfg.DBMaxConns
	for i := 0; i+1 < len(params); i += 2 {
		pc.ConnConfig.RuntimeParams[params[i]] = params[i+1]
	}
	cc := &pc.ConnConfig.Config
	if cc.ConnectTimeout == 0 { // the URL's connect_timeout, if it sets one
		cc.ConnectTimeout = connectTimeout
	}
	cc.DialFunc = dialer.DialContext
	if w != nil {
		cc.DialFunc = w.dialFunc(cc)
	}
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	cc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if !IsSyncWaitCancelled(n) {
			return
		}
		logger.Error("PostgreSQL cancelled a commit's wait for the synchronous standby: the commit is local only and a failover may lose it",
			"severity", n.Severity, "message", n.Message, "detail", n.Detail)
		if cancelled != nil {
			cancelled()
		}
	}
	// An idle connection is pinged before use; a frozen server's answer is
	// not waited for longer than this (the watchdog closes it soon after).
	pc.PingTimeout = probeTimeout
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	return pool, nil
}

// IsSyncWaitCancelled reports whether n is PostgreSQL's warning that it
// stopped waiting for the synchronous standby to confirm a commit
// ("canceling wait for synchronous replication due to user request", or
// "canceling the wait for synchronous replication and terminating
// connection due to administrator command"): the transaction committed
// locally, but the standby may not have it.
func IsSyncWaitCancelled(n *pgconn.Notice) bool {
	return strings.Contains(n.Message, "wait for synchronous replication") && strings.HasPrefix(n.Message, "canceling")
}

// migrateWithRetry applies the migrations, waiting for a database that is
// still starting, but not forever.
func migrateWithRetry(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := pool.Ping(ctx)
		if err == nil {
			return migrations.Apply(ctx, pool, logger)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("database unreachable: %w", err)
		}
		logger.Warn("database not reachable yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// servePprof serves the profiler on its own listener until ctx ends.
func servePprof(ctx context.Context, addr string, logger *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("pprof server stopped", "err", err)
	}
}
