package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/faultproxy"
	"github.com/opsgate/opsgate/worker"
)

// A worker that finished a run while the database was away records the
// result once the database is back: it keeps its lease and retries,
// instead of trying once and leaving the run to be reaped as lost.
func TestResultRecordedAfterTheDatabaseReturns(t *testing.T) {
	f := newFixture(t)
	proxy, proxied, err := faultproxy.ForDatabase(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	// The worker under test, its gate and its reaper reach the database
	// only through the proxy (an application of its own on it); the test
	// reads it directly.
	cut := apptest.Start(t, apptest.OnDatabase(proxied), apptest.Roles(app.Roles{}), apptest.With(app.WithProviders(f.providers())))
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config("cut-off")
	cfg.Heartbeat, cfg.Lease = 100*time.Millisecond, 3*time.Second
	cfg.Wake = cut.Notifier.SubscribeTopic(gate.TopicStartsAccepted)
	w, err := worker.New(cfg, cut.Gate, cut.Connections, f.providers(), logger)
	if err != nil {
		t.Fatal(err)
	}
	r := &runningWorker{w: w, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go cut.Gate.RunReaper(ctx, 100*time.Millisecond, logger)
	go func() { r.done <- w.Run(ctx, time.Second) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})

	conn := f.connection("Graph")
	release := f.probe.hold(conn.ID)
	run := f.accept(conn.ID)
	waitFor(t, waitTimeout, "the provider to be called", func() bool { return f.probe.calls(run.ID) > 0 })

	proxy.Cut()
	release() // the provider finishes while the database is unreachable
	waitFor(t, waitTimeout, "the worker to fail to record the result", func() bool {
		return strings.Contains(logs.String(), "recording the result failed")
	})
	if got := f.status(run.ID); got != string(domain.StatusRunning) {
		t.Fatalf("run is %s while its result could not be recorded, want running", got)
	}
	proxy.Restore()

	f.waitStatus(run.ID, domain.StatusSucceeded)
	events := f.events(run.ID)
	if n := countType(events, "RunSucceeded"); n != 1 {
		t.Fatalf("RunSucceeded recorded %d times, want once: %v", n, types(events))
	}
	if n := countType(events, "RunFailed"); n != 0 {
		t.Fatalf("the finished run was also recorded failed: %v", types(events))
	}
}
