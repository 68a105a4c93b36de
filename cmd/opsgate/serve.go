package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/migrations"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/worker"
)

type roleSet map[string]bool

func parseRoles(s string) (roleSet, error) {
	roles := roleSet{}
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case "api", "projector", "worker":
			roles[r] = true
		case "":
		default:
			return nil, fmt.Errorf("unknown role %q (roles are api, projector, worker)", r)
		}
	}
	if len(roles) == 0 {
		return nil, errors.New("--roles names no role (roles are api, projector, worker)")
	}
	return roles, nil
}

// serve runs the given roles until ctx is cancelled (SIGTERM), then drains.
func serve(ctx context.Context, cfg config.Config, roles roleSet, logger *slog.Logger, stdout io.Writer) error {
	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	// Migrate before anything else touches the tables; wait for a database
	// that is still starting, but not forever.
	migrated := &atomic.Bool{}
	if err := migrateWithRetry(ctx, pool, logger); err != nil {
		return err
	}
	migrated.Store(true)

	// Subscribers (projectors, the worker's and the process manager's
	// subscriptions) commit their offsets, checkpoints and read-model rows
	// without waiting for the WAL flush: what a crash loses of them is lost
	// together and simply delivered again. Decisions and their events use
	// the main pool and are durable at commit.
	// Named as readers, their transactions do not hold back other readers
	// (eventstore.ReaderApplicationName): they never append events.
	subPool, err := openPool(ctx, cfg, "synchronous_commit", "off", "application_name", eventstore.ReaderApplicationName)
	if err != nil {
		return err
	}
	defer subPool.Close()

	notifier := eventstore.NewNotifier(pool, logger, cfg.WakeDelay)
	store := eventstore.New(pool, gate.NewRegistry(), eventstore.WithRoute(gate.Route),
		eventstore.WithLogger(logger), eventstore.WithCommitHook(notifier.Committed))
	svc := gate.New(store)
	onboard := onboarding.New(svc)
	metrics := api.NewMetrics(pool)

	// Background roles stop when bg is cancelled, after the API drained.
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBackground()
	wg.Add(1)
	go func() { defer wg.Done(); notifier.Run(bg) }()
	if roles["projector"] {
		runner := &projections.Runner{
			Pool: subPool, Registry: store.Registry(), Logger: logger,
			Wake: notifier.Subscribe, PollInterval: cfg.PollInterval,
			OnApplied: metrics.ObserveProjection,
		}
		for _, p := range projections.All() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := runner.Run(bg, p); err != nil && bg.Err() == nil {
					logger.Error("projector stopped", "projector", p.Name, "err", err)
				}
			}()
		}
	}

	if roles["worker"] {
		w, err := worker.New(worker.Config{
			Concurrency: cfg.WorkerConcurrency, Lease: cfg.Lease, Heartbeat: cfg.Heartbeat,
			PollInterval: cfg.PollInterval, Wake: notifier.Subscribe(),
		}, subPool, svc, store.Registry(), worker.Providers{gate.ProviderSimulated: worker.Simulated{}}, logger)
		if err != nil {
			return err
		}
		// The bootstrap process manager drives onboarding sessions forward
		// as their runs end; it runs wherever workers run.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := onboard.RunManager(bg, subPool, notifier.Subscribe(), cfg.PollInterval, logger); err != nil && bg.Err() == nil {
				logger.Error("bootstrap process manager stopped", "err", err)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The worker stops taking work at SIGTERM and lets running
			// operations finish within the grace period.
			if err := w.Run(ctx, cfg.ShutdownGrace); err != nil {
				logger.Error("worker stopped", "err", err)
			}
		}()
	}

	if cfg.PprofAddr != "" {
		go servePprof(bg, cfg.PprofAddr, logger)
	}

	if !roles["api"] {
		logger.Info("running", "roles", rolesList(roles))
		<-ctx.Done()
		logger.Info("shutting down")
		return nil
	}
	adminToken := cfg.AdminToken
	if adminToken == "" {
		adminToken = generateAdminToken()
		fmt.Fprintf(stdout, "OPSGATE_ADMIN_TOKEN was not set; the admin token of this process is:\n  %s\n", adminToken)
	}
	e := api.NewEcho(api.Config{
		Logger:         logger,
		Ready:          api.Health{Migrated: migrated, Ping: pool.Ping},
		Metrics:        metrics,
		RequestTimeout: cfg.RequestTimeout,
		Routes: api.Routes(api.Deps{
			Gate:       svc,
			Reader:     projections.NewReader(pool, cfg.ReadYourWritesWait, store),
			Store:      store,
			AdminToken: adminToken,
			Metrics:    metrics,
			Onboarding: onboard,
		}),
	})
	srv := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.RequestTimeout,
		WriteTimeout:      cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("serving", "addr", ln.Addr().String(), "roles", rolesList(roles))
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	select {
	case err := <-errCh:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("drain http server: %w", err)
	}
	return nil
}

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

func generateAdminToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "oga_" + base64.RawURLEncoding.EncodeToString(b)
}

func rolesList(r roleSet) string {
	var out []string
	for _, name := range []string{"api", "projector", "worker"} {
		if r[name] {
			out = append(out, name)
		}
	}
	return strings.Join(out, ",")
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
