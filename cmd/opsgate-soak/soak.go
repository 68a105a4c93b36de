package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/app"
	appconfig "github.com/opsgate/opsgate/internal/config"
)

// stateDir is the soak's own cluster, beside the one of make run and make test.
const stateDir = ".data/soak"

// haStateDir holds the failover soak's primary (a) and standby (b), and
// its logs.
const haStateDir = ".data/soak-ha"

// window is a stretch of time during which a fault may explain failed answers.
type window struct {
	what     string
	from, to time.Time
}

// run is everything a soak measured, for the checks.
type run struct {
	cfg       config
	exchanges []exchange
	windows   []window
	procs     map[string]*process
	tokens    []string
	// recoveries are the times the read models took to catch up after
	// the database came back, one per crash.
	recoveries []time.Duration
	finalLag   time.Duration
	settled    bool // every run ended before the checks
	verifyOut  string
	verifyErr  error
	logsDir    string
	// dump is a pg_dump of the database after the load, searched for
	// tokens.
	dump []byte
	// hooks is the webhook receiver; webhooks what the end of the run
	// found of the change feed and its deliveries.
	hooks    *receiver
	webhooks webhookOutcome
	// ha is the failover soak's primary and standby (nil otherwise);
	// failing and failedAt when the fault on its primary began and was
	// done, promotedAt when its standby was promoted.
	ha                            *pair
	failing, failedAt, promotedAt time.Time
	// auditKey signs the processes' audit checkpoints.
	auditKey *audit.Key
}

// soak runs one soak and prints its table.
func soak(ctx context.Context, cfg config) (*report, error) {
	tmp, err := os.MkdirTemp("", "opsgate-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg.logf("building opsgate and devdb")
	bins, err := build(cfg.root, tmp)
	if err != nil {
		return nil, err
	}
	db := database{root: cfg.root, devdb: bins.devdb, state: stateDir}
	logsDir := filepath.Join(cfg.root, stateDir, "logs")
	var serverURL string
	var ha *pair
	if cfg.failover == "" {
		cfg.logf("starting the soak's own PostgreSQL cluster (%s)", stateDir)
		serverURL, err = db.start()
	} else {
		ha = &pair{primary: database{root: cfg.root, devdb: bins.devdb, state: haStateDir + "/a"},
			standby: database{root: cfg.root, devdb: bins.devdb, state: haStateDir + "/b"}}
		db = ha.primary
		logsDir = filepath.Join(cfg.root, haStateDir, "logs-"+cfg.failover)
		cfg.logf("starting a primary (%s) and its synchronous standby (%s)", ha.primary.state, ha.standby.state)
		serverURL, err = ha.start()
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		stop := db.stop
		if ha != nil {
			stop = ha.stop
		}
		if err := stop(); err != nil {
			cfg.logf("stopping the soak's cluster: %v", err)
		}
	}()
	dbURL, err := freshDatabase(ctx, serverURL)
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(logsDir)
	if err := os.MkdirAll(logsDir, 0o755); err != nil {
		return nil, err
	}

	adminToken := "oga_soak_" + randomHex(16)
	// The projector signs the audit checkpoints with this key; its state
	// (the last checkpoint per tenant) lives beside it, so that the
	// process restarted after a SIGKILL continues from it.
	keyFile := filepath.Join(logsDir, "audit.key")
	skey, _, err := audit.GenerateKey("opsgate-soak")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		return nil, err
	}
	auditKey, err := audit.ParseKey(skey)
	if err != nil {
		return nil, err
	}
	env := processEnv(map[string]string{
		"OPSGATE_AUDIT_SIGNING_KEY_FILE": keyFile, "OPSGATE_AUDIT_CHECKPOINT_INTERVAL": "1s",
		"DATABASE_URL": dbURL, "OPSGATE_ADMIN_TOKEN": adminToken,
		"OPSGATE_LEASE": cfg.lease.String(), "OPSGATE_HEARTBEAT": cfg.heartbeat.String(),
		"OPSGATE_READ_YOUR_WRITES_WAIT": "1s", "OPSGATE_SHUTDOWN_GRACE": "5s", "OPSGATE_DB_MAX_CONNS": "16",
		// The webhook receiver is on loopback; retries come within seconds.
		"OPSGATE_WEBHOOK_ALLOW_PRIVATE": "true", "OPSGATE_WEBHOOK_RETRY_SCHEDULE": webhookRetrySchedule,
		// The soak's clients share a few users' tokens at a rate no
		// caller's limit is meant for: the fault test is not about limits.
		"OPSGATE_RATE_LIMIT": "0",
	})
	if ha != nil {
		// The workers log each result recorded (debug), which the failover
		// checks look for on the promoted primary.
		env = append(env, "OPSGATE_LOG_LEVEL=debug")
	}
	migrate := exec.CommandContext(ctx, bins.opsgate, "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("opsgate migrate: %w\n%s", err, out)
	}

	r := &run{cfg: cfg, procs: map[string]*process{}, logsDir: logsDir, ha: ha, auditKey: auditKey}
	var addrs []string
	for _, spec := range []struct{ name, roles string }{
		{"api-1", "api"}, {"api-2", "api"}, {"projector", "projector"}, {"worker-1", "worker"}, {"worker-2", "worker"},
	} {
		p := &process{name: spec.name, roles: spec.roles, bin: bins.opsgate, logs: filepath.Join(logsDir, spec.name+".log")}
		p.env = env
		if spec.roles == "api" {
			if p.addr, err = freeAddr(); err != nil {
				return nil, err
			}
			p.env = append(append([]string(nil), env...), "OPSGATE_HTTP_ADDR="+p.addr)
			addrs = append(addrs, p.addr)
		}
		if err := p.start(); err != nil {
			return nil, err
		}
		r.procs[spec.name] = p
	}
	defer func() {
		for _, p := range r.procs {
			p.stop(10 * time.Second)
		}
	}()
	for _, addr := range addrs {
		if err := waitReady(ctx, addr, 60*time.Second); err != nil {
			return nil, err
		}
	}
	a := newAPI(addrs, adminToken)
	if r.hooks, err = newReceiver(); err != nil {
		return nil, err
	}
	defer r.hooks.close()
	fx, tokens, err := setup(ctx, a, cfg.tenants, cfg.connsPer, r.hooks)
	if err != nil {
		return nil, err
	}
	r.tokens = append(tokens, adminToken)

	// The soak's own reads go through opsgate's pool settings and a watchdog
	// of their own, so that they too leave a primary that froze (without it
	// the read models' catch-up after a freeze measured the soak's own wait
	// for the frozen host).
	pool, closePool, err := app.OpenWatchedPool(ctx, appconfig.Config{DatabaseURL: dbURL, DBMaxConns: 8}, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer closePool()

	cfg.logf("load: %d clients for %s; faults: %s", cfg.clients, cfg.load, cfg.describe())
	rec := &recorder{}
	runs := &recent{}
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.load)
	defer stopLoad()
	began := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.clients {
		wg.Add(1)
		go func() { defer wg.Done(); client(loadCtx, uint64(i+1), a, fx, rec, runs, cfg.pause) }()
	}
	faultsDone := make(chan error, 1)
	go func() { faultsDone <- r.inject(loadCtx, began, db, pool) }()
	wg.Wait()
	if err := <-faultsDone; err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.exchanges = rec.exchanges()
	if ha != nil && !r.failedAt.IsZero() {
		end, ok := r.failoverWindow()
		if !ok {
			end = r.failedAt.Add(failoverWindowLimit)
		}
		// As for a SIGKILL, answers within 2 s of the recovery count in
		// the window: requests sent while no primary answered.
		r.windows = append(r.windows, window{what: "failover", from: r.failing, to: end.Add(2 * time.Second)})
	}

	cfg.logf("load over (%d requests); waiting for every run to end", len(r.exchanges))
	r.settled = waitSettled(ctx, pool, 3*cfg.lease+30*time.Second)
	var caught bool
	r.finalLag, caught = catchUp(ctx, pool, time.Now(), 60*time.Second, projectors)
	if !caught {
		cfg.logf("the read models did not catch up within a minute")
	}
	r.webhooks = awaitWebhooks(ctx, cfg, a, fx, pool, r.hooks, 60*time.Second)
	cfg.logf("opsgate projections verify")
	verify := exec.CommandContext(ctx, bins.opsgate, "projections", "verify")
	verify.Env = env
	out, err := verify.CombinedOutput()
	r.verifyOut, r.verifyErr = strings.TrimSpace(string(out)), err

	cfg.logf("pg_dump of the database, to search it for tokens")
	if r.dump, err = dumpDatabase(ctx, db, dbURL); err != nil {
		return nil, err
	}

	rep, err := r.check(ctx, pool)
	if err != nil {
		return nil, err
	}
	rep.print(cfg.out)
	if rep.breaches() == 0 && !cfg.keepLogs {
		_ = os.RemoveAll(logsDir)
	} else {
		fmt.Fprintf(cfg.out, "\nprocess logs: %s\n", logsDir)
	}
	return rep, nil
}

// inject runs the fault schedule from began until ctx ends.
func (r *run) inject(ctx context.Context, began time.Time, db database, pool *pgxpool.Pool) error {
	for _, f := range r.cfg.faults {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(began.Add(f.at))):
		}
		from := time.Now()
		switch f.what {
		case "kill":
			r.cfg.logf("SIGKILL %s", strings.Join(f.procs, ", "))
			for _, name := range f.procs {
				r.procs[name].kill()
			}
			sleep(ctx, f.down)
			for _, name := range f.procs {
				p := r.procs[name]
				if err := p.start(); err != nil {
					return err
				}
				if p.addr != "" {
					if err := waitReady(context.WithoutCancel(ctx), p.addr, 60*time.Second); err != nil {
						return err
					}
				}
			}
			r.windows = append(r.windows, window{what: "SIGKILL " + strings.Join(f.procs, "+"), from: from, to: time.Now().Add(2 * time.Second)})
		case "crash-db":
			r.cfg.logf("database crash (pg_ctl stop -m immediate), %s down", f.down)
			if err := db.crash(); err != nil {
				return err
			}
			sleep(context.WithoutCancel(ctx), f.down)
			if _, err := db.start(); err != nil {
				return err
			}
			ready := time.Now()
			r.windows = append(r.windows, window{what: "database crash", from: from, to: ready.Add(5 * time.Second)})
			lag, ok := catchUp(context.WithoutCancel(ctx), pool, ready, 60*time.Second, projectors)
			if !ok {
				r.cfg.logf("the read models did not catch up within a minute of the database's return")
			}
			r.cfg.logf("read models caught up %s after the database returned", lag.Round(time.Millisecond))
			r.recoveries = append(r.recoveries, lag)
		case "failover":
			if err := r.failover(ctx, pool); err != nil {
				return err
			}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// projectors are the consumers whose lag the soak measures: the read
// models and the audit chain.
var projectors = []string{"operations", "queue", "notifications", audit.ChainConsumer}

// catchUp waits until every consumer of consumers has applied every event
// committed before its first successful look at the store, and returns
// how long that took from since (limit and false if it did not).
func catchUp(ctx context.Context, pool *pgxpool.Pool, since time.Time, limit time.Duration, consumers []string) (time.Duration, bool) {
	deadline := since.Add(limit)
	var headTx, headPos int64
	for {
		err := pool.QueryRow(ctx, `SELECT (tx_id::text)::bigint, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1`).Scan(&headTx, &headPos)
		if err == nil || errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if time.Now().After(deadline) {
			return limit, false
		}
		sleep(ctx, 50*time.Millisecond)
	}
	for {
		var behind int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) AS p(name)
			LEFT JOIN feed_checkpoints c ON c.consumer = p.name
			WHERE c.consumer IS NULL OR (c.tx_id, c.position) < ($2::bigint::text::xid8, $3)`, consumers, headTx, headPos).Scan(&behind)
		if err == nil && behind == 0 {
			return time.Since(since), true
		}
		if time.Now().After(deadline) {
			return limit, false
		}
		sleep(ctx, 25*time.Millisecond)
	}
}

// waitSettled waits until no run is queued or running.
func waitSettled(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var active int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`).Scan(&active)
		if err == nil && active == 0 {
			return true
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return false
}

// freshDatabase creates a database of its own for this soak on the
// server, dropping those of earlier soaks, and returns its URL.
func freshDatabase(ctx context.Context, serverURL string) (string, error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", serverURL, err)
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'opsgate_soak_%'`)
	if err != nil {
		return "", err
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, name := range old {
		if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			return "", err
		}
	}
	name := fmt.Sprintf("opsgate_soak_%d", time.Now().Unix())
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+name); err != nil {
		return "", err
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// processEnv is this process's environment without any opsgate setting
// it may carry, plus env.
func processEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OPSGATE_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
