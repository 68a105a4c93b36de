package projections_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/tenancy"
)

// readerWait bounds the Reader's read-your-writes wait. Subscribers read
// only below the oldest transaction in flight anywhere in the cluster, so
// a long transaction of another test (or of a projector working through
// a 500-message batch) holds every projector back; the bound is generous
// so that a loaded shared server does not make the tests flaky.
const readerWait = 10 * time.Second

// leaseLong is a lease no test outlives.
const leaseLong = 5 * time.Minute

// projectorNames are the names Reader.CatchUp accepts.
var projectorNames = []string{"operations", "queue", "notifications"}

// worker is the actor of the results the tests record.
var worker = domain.ActorWorker("test")

// fixture is a fresh application whose notifier runs but no role: the
// tests run the projectors they need (startProjectors).
type fixture struct {
	t        testing.TB
	ctx      context.Context
	app      *apptest.App
	pool     *pgxpool.Pool
	store    *eventstore.Store
	svc      *gate.Service
	notifier *eventstore.Notifier
	logger   *slog.Logger
	reader   *projections.Reader
	replayer *projections.Replayer

	workspace tenancy.Workspace
}

func testLogger() *slog.Logger {
	if os.Getenv("PROJECTIONS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newFixture returns a fixture on a fresh migrated database with its
// notifier running (until the test ends) but no projectors.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	a := apptest.Start(t, apptest.Roles(app.Roles{}), apptest.Configure(func(c *config.Config) { c.ReadYourWritesWait = readerWait }))
	f := &fixture{
		t: t, ctx: a.Ctx, app: a, pool: a.Pool, store: a.Store, svc: a.Gate, notifier: a.Notifier, logger: testLogger(),
		reader:   a.Reader,
		replayer: &projections.Replayer{Pool: a.Pool, Store: a.Store},
	}
	f.workspace = a.Workspace("Contoso MSP")
	return f
}

// runner says how the tests' feeds report applied events (nil: not at all).
type runner struct {
	onApplied func(projector string, recordedAt time.Time)
}

func (f *fixture) runner(onApplied func(string, time.Time)) runner {
	return runner{onApplied: onApplied}
}

// feed returns a feed of the projectors named (every one if none), as a
// process of the projector role runs it.
func (f *fixture) feed(r runner, names ...string) *eventstore.Feed {
	var consumers []eventstore.Consumer
	for _, p := range projections.All() {
		if len(names) == 0 || slices.Contains(names, p.Name) {
			consumers = append(consumers, projections.Consumer(p, r.onApplied))
		}
	}
	return &eventstore.Feed{
		Pool: f.app.ReaderPool, Registry: f.store.Registry(), Consumers: consumers, Logger: f.logger,
		Wake: f.notifier.Subscribe, PollInterval: 50 * time.Millisecond,
	}
}

// projectors is a set of running feeds.
type projectors struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// startProjectors runs every projector (or those named), in one feed,
// until stop or the end of the test.
func (f *fixture) startProjectors(names ...string) *projectors {
	f.t.Helper()
	return f.startProjectorsWith(f.runner(nil), names...)
}

func (f *fixture) startProjectorsWith(r runner, names ...string) *projectors {
	f.t.Helper()
	return f.startProjectorsIn(f.ctx, r, names...)
}

// startProjectorsIn runs the projectors until parent ends, stop, or the
// end of the test.
func (f *fixture) startProjectorsIn(parent context.Context, r runner, names ...string) *projectors {
	f.t.Helper()
	return f.startFeeds(parent, f.feed(r, names...))
}

// startFeeds runs feeds until parent ends, stop, or the end of the test.
func (f *fixture) startFeeds(parent context.Context, feeds ...*eventstore.Feed) *projectors {
	f.t.Helper()
	ctx, cancel := context.WithCancel(parent)
	ps := &projectors{cancel: cancel}
	for _, feed := range feeds {
		ps.wg.Go(func() {
			if err := feed.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				ps.mu.Lock()
				ps.errs = append(ps.errs, err)
				ps.mu.Unlock()
			}
		})
	}
	f.t.Cleanup(func() { ps.stop(f.t) })
	return ps
}

// stop cancels the projectors and waits for them to return.
func (ps *projectors) stop(t testing.TB) {
	t.Helper()
	ps.cancel()
	done := make(chan struct{})
	go func() { ps.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("projectors did not stop within 30s of cancellation")
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, err := range ps.errs {
		t.Errorf("projector returned: %v", err)
	}
	ps.errs = nil
}

// waitCaughtUp waits until every projector (or those named) has applied
// every event committed so far.
func (f *fixture) waitCaughtUp(timeout time.Duration, names ...string) {
	f.t.Helper()
	if len(names) == 0 {
		names = projectorNames
	}
	waitFor(f.t, timeout, "projectors "+strings.Join(names, ",")+" to catch up", func() bool {
		for _, n := range names {
			ok, err := f.reader.CatchUp(f.ctx, n)
			if err != nil {
				f.t.Fatalf("catch up %s: %v", n, err)
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// verifyClean runs Replayer.Verify and fails the test on any difference.
func (f *fixture) verifyClean(what string) projections.ReplayStats {
	f.t.Helper()
	diffs, stats, err := f.replayer.Verify(f.ctx)
	if err != nil {
		f.t.Fatalf("verify (%s): %v", what, err)
	}
	for _, d := range diffs {
		f.t.Errorf("verify (%s): table %s differs: %d rows only live, %d only rebuilt", what, d.Table, d.OnlyLive, d.OnlyRebuilt)
	}
	return stats
}

// waitFor polls cond until it holds, failing the test at the deadline.
var waitFor = apptest.WaitFor

// tenant creates a tenant in the fixture's workspace.
func (f *fixture) tenant(name string) tenancy.Tenant {
	f.t.Helper()
	return f.app.On(f.t).Tenant(f.workspace.ID, name)
}

// user creates a user and grants it role on each tenant.
func (f *fixture) user(name string, role domain.Role, tenantIDs ...string) string {
	f.t.Helper()
	a := f.app.On(f.t)
	u := a.User(name)
	for _, tid := range tenantIDs {
		a.Grant(u.ID, tid, role)
	}
	return u.ID
}

// connection creates a ready simulated connection (consent granted,
// credentials valid, enabled, not default) as owner; change adjusts the
// request first.
func (f *fixture) connection(owner, tenantID, name string, change ...func(*connections.NewConnection)) connections.Connection {
	f.t.Helper()
	return f.app.On(f.t).Connection(owner, tenantID, name, change...)
}

// Connection request tweaks.
var (
	asDefault   = apptest.AsDefault
	disabled    = apptest.Disabled
	consent     = apptest.Consent
	credentials = apptest.Credentials
)

// Starts of the connection- and tenant-scoped surfaces.
var (
	connStart   = apptest.ConnStart
	tenantStart = apptest.TenantStart
)

// start runs req through the gate and fails the test on an error.
func (f *fixture) start(req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	return f.app.On(f.t).Start(req).Result
}

// expect starts req and fails the test unless the outcome is want.
func (f *fixture) expect(want domain.Outcome, req gate.StartRequest) domain.StartResult {
	f.t.Helper()
	return f.app.On(f.t).Expect(want, req)
}

func (f *fixture) begin(runID string) gate.Claim {
	f.t.Helper()
	c, err := f.svc.BeginRun(f.ctx, runID, "worker-test", leaseLong)
	if err != nil {
		f.t.Fatalf("begin %s: %v", runID, err)
	}
	return c
}

func (f *fixture) getRun(id string) projections.RunView {
	f.t.Helper()
	v, err := f.reader.GetRun(f.ctx, id)
	if err != nil {
		f.t.Fatalf("get run %s: %v", id, err)
	}
	return v
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// snapshot returns every row of every read-model table, and the
// projectors' checkpoints (with updated_at), as text, sorted by table: two
// equal snapshots mean nothing changed.
func (f *fixture) snapshot() map[string][]string {
	f.t.Helper()
	out := map[string][]string{}
	queries := map[string]string{"checkpoints": `SELECT t::text FROM feed_checkpoints t WHERE consumer = ANY('{operations,queue,notifications}')`}
	for _, p := range projections.All() {
		for _, table := range p.TableNames() {
			queries[table] = fmt.Sprintf(`SELECT t::text FROM projections.%s t`, table)
		}
	}
	for table, q := range queries {
		rows, err := f.pool.Query(f.ctx, q)
		if err != nil {
			f.t.Fatalf("snapshot %s: %v", table, err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			f.t.Fatalf("snapshot %s: %v", table, err)
		}
		sort.Strings(list)
		out[table] = list
	}
	return out
}
