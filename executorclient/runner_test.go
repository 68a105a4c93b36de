package executorclient_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/executorclient"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

// The reference client against a real opsgate: the API and projector
// roles of the application, on a database of its own, and a connection of
// a provider only this executor runs.

const waitTimeout = 30 * time.Second

type fixture struct {
	*apptest.App
	owner, conn, token, executorID string
}

func newFixture(t *testing.T, opts ...apptest.Option) *fixture {
	t.Helper()
	a := apptest.Start(t, append([]apptest.Option{apptest.Roles(app.Roles{API: true, Projector: true})}, opts...)...)
	tenant := a.Tenant(t, a.Workspace(t, "w").ID, "t")
	owner := a.Member(t, "owner", tenant.ID, domain.RoleOwner)
	conn := a.Connection(t, owner.ID, tenant.ID, "acme", apptest.Provider("acme"))
	ex, err := a.Executors.Register(a.Ctx, apptest.Admin, "jobs", []string{"acme"}, nil)
	if err != nil {
		t.Fatalf("register an executor: %v", err)
	}
	return &fixture{App: a, owner: owner.ID, conn: conn.ID, token: ex.Token, executorID: ex.ID}
}

// waitLive waits until the fixture's executor has called in, so that its
// provider's starts are accepted (contract section 12).
func (f *fixture) waitLive(t *testing.T) {
	t.Helper()
	apptest.WaitFor(t, waitTimeout, "the runner to call in", func() bool {
		list, err := f.Executors.List(f.Ctx)
		return err == nil && len(list) == 1 && list[0].Live
	})
}

// run runs r until stop is called, which returns Run's error; cancel
// only signals the stop.
func run(t *testing.T, r *executorclient.Runner) (cancel func(), stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(cancel)
	return cancel, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(waitTimeout):
			t.Fatal("the runner did not stop")
			return nil
		}
	}
}

// TestRunnerFinishesTheRunsInHandWhenStopped: stopping a runner stops its
// claims but lets the handler finish, undisturbed, and reports the result
// before Run returns.
func TestRunnerFinishesTheRunsInHandWhenStopped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	started, release := make(chan struct{}), make(chan struct{})
	var cancelled error // the handler's context's error when it was released
	r := &executorclient.Runner{
		Client: executorclient.New(f.URL, f.token), Wait: time.Second,
		Handler: func(ctx context.Context, c executorclient.Claim) executorclient.Result {
			close(started)
			<-release
			cancelled = ctx.Err()
			return executorclient.Succeeded(map[string]any{"groups": 3})
		},
	}
	cancel, stop := run(t, r)
	f.waitLive(t)
	runID := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, f.conn)).Run.ID
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatal("the run was never handed to the handler")
	}
	cancel() // the runner is stopped while the handler still works
	close(release)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if cancelled != nil {
		t.Errorf("stopping the runner cancelled the handler: %v", cancelled)
	}
	// Run has returned: the result must already be recorded.
	if got := f.RunStatus(t, runID); got != domain.StatusSucceeded {
		t.Errorf("run %s is %s when Run returned, want succeeded", runID, got)
	}
}

// TestRunnerLosesTheLeaseOfACancelledRun: an operator cancels a run while
// its handler works; the next heartbeat is answered lease_lost, the
// handler's context ends, and what it returns is not recorded.
func TestRunnerLosesTheLeaseOfACancelledRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	working, ended := make(chan string, 1), make(chan struct{})
	r := &executorclient.Runner{
		Client: executorclient.New(f.URL, f.token), Wait: time.Second,
		Handler: func(ctx context.Context, c executorclient.Claim) executorclient.Result {
			working <- c.Run.ID
			<-ctx.Done()
			close(ended)
			return executorclient.Succeeded(nil)
		},
	}
	_, stop := run(t, r)
	f.waitLive(t)
	runID := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, f.conn)).Run.ID
	if got := <-working; got != runID {
		t.Fatalf("handed run %s, want %s", got, runID)
	}
	if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(f.owner), runID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(waitTimeout):
		t.Fatal("the handler's context did not end after the cancel")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := f.RunStatus(t, runID); got != domain.StatusCancelled {
		t.Errorf("run %s is %s, want cancelled", runID, got)
	}
	if n := f.Count(t, `SELECT count(*) FROM events WHERE event_type = 'RunSucceeded' AND payload->>'run_id' = $1`, runID); n != 0 {
		t.Errorf("a result under a lost lease was recorded (%d RunSucceeded)", n)
	}
}

// TestRunnerBacksOffWhileTheDatabaseIsAway: claims answered 503 while
// opsgate cannot reach its database are retried with backoff, not
// returned; once the database is back, a run is executed.
func TestRunnerBacksOffWhileTheDatabaseIsAway(t *testing.T) {
	t.Parallel()
	proxy, proxied := apptest.Proxy(t, "")
	f := newFixture(t, apptest.OnDatabase(proxied))
	logs := &apptest.Logs{}
	handled := make(chan string, 1)
	r := &executorclient.Runner{
		Client: executorclient.New(f.URL, f.token), Wait: 200 * time.Millisecond,
		Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Handler: func(ctx context.Context, c executorclient.Claim) executorclient.Result {
			handled <- c.Run.ID
			return executorclient.Succeeded(nil)
		},
	}
	_, stop := run(t, r)
	proxy.Cut()
	apptest.WaitFor(t, waitTimeout, "a claim answered 503 and backed off", func() bool {
		return strings.Contains(logs.String(), "database_unavailable") && strings.Contains(logs.String(), "backing off")
	})
	proxy.Restore()
	// The application's first calls after the cut may still meet
	// connections that died with it; start once it answers again.
	var runID string
	apptest.WaitFor(t, waitTimeout, "a start accepted after the database came back", func() bool {
		// A start whose first try committed unseen is deduped to its run;
		// one decided before the runner called in again is blocked (no
		// live executor) and tried again.
		res, err := f.Gate.Start(f.Ctx, apptest.ConnStart(f.owner, domain.SurfaceInventorySync, f.conn))
		if err != nil {
			return false
		}
		if o := res.Result.Outcome; o == domain.OutcomeAccepted || o == domain.OutcomeDeduped {
			runID = res.Result.Run.ID
			return true
		}
		return false
	})
	select {
	case got := <-handled:
		if got != runID {
			t.Fatalf("handed run %s, want %s", got, runID)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("the run was not executed after the database came back; client log:\n%s", logs)
	}
	apptest.WaitFor(t, waitTimeout, "the run succeeded", func() bool { return f.RunStatus(t, runID) == domain.StatusSucceeded })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunnerStopsOnARevokedToken: a refusal no retry mends (401 after
// revocation) ends Run with the problem.
func TestRunnerStopsOnARevokedToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.Executors.Revoke(f.Ctx, apptest.Admin, f.executorID); err != nil {
		t.Fatal(err)
	}
	r := &executorclient.Runner{
		Client: executorclient.New(f.URL, f.token), Wait: time.Second,
		Handler: func(context.Context, executorclient.Claim) executorclient.Result {
			t.Error("a revoked executor was handed a run")
			return executorclient.Succeeded(nil)
		},
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(f.Ctx) }()
	select {
	case err := <-done:
		var p *executorclient.ProblemError
		if !errors.As(err, &p) || p.Status != 401 {
			t.Fatalf("Run returned %v, want the 401 problem", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run kept going with a revoked token")
	}
}
