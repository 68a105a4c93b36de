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

	"github.com/opsgate/opsgate/eventstore"
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

// fixture is a fresh application whose notifier runs but no role: the
// tests run the projectors they need (startProjectors).
type fixture struct {
	*apptest.App
	logger   *slog.Logger
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
// notifier running (until the test ends) but no projectors, and a
// workspace.
func newFixture(t testing.TB, opts ...apptest.Option) *fixture {
	t.Helper()
	opts = append([]apptest.Option{apptest.Roles(app.Roles{}), apptest.Configure(func(c *config.Config) { c.ReadYourWritesWait = readerWait })}, opts...)
	a := apptest.Start(t, opts...)
	return &fixture{App: a, logger: testLogger(), replayer: &projections.Replayer{Pool: a.Pool, Store: a.Store},
		workspace: a.Workspace(t, "Contoso MSP")}
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
		Pool: f.ReaderPool, Registry: f.Store.Registry(), Consumers: consumers, Logger: f.logger,
		Wake: f.Notifier.Subscribe, PollInterval: 50 * time.Millisecond,
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
func (f *fixture) startProjectors(t testing.TB, names ...string) *projectors {
	t.Helper()
	return f.startProjectorsWith(t, f.runner(nil), names...)
}

func (f *fixture) startProjectorsWith(t testing.TB, r runner, names ...string) *projectors {
	t.Helper()
	return f.startProjectorsIn(t, f.Ctx, r, names...)
}

// startProjectorsIn runs the projectors until parent ends, stop, or the
// end of the test.
func (f *fixture) startProjectorsIn(t testing.TB, parent context.Context, r runner, names ...string) *projectors {
	t.Helper()
	return f.startFeeds(t, parent, f.feed(r, names...))
}

// startFeeds runs feeds until parent ends, stop, or the end of the test.
func (f *fixture) startFeeds(t testing.TB, parent context.Context, feeds ...*eventstore.Feed) *projectors {
	t.Helper()
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
	t.Cleanup(func() { ps.stop(t) })
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
func (f *fixture) waitCaughtUp(t testing.TB, timeout time.Duration, names ...string) {
	t.Helper()
	if len(names) == 0 {
		names = projectorNames
	}
	f.Fed.Until(t, timeout, "projectors "+strings.Join(names, ",")+" to catch up", func() bool {
		for _, n := range names {
			ok, err := f.Reader.CatchUp(f.Ctx, n)
			if err != nil {
				t.Fatalf("catch up %s: %v", n, err)
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// verifyClean runs Replayer.Verify and fails the test on any difference.
func (f *fixture) verifyClean(t testing.TB, what string) projections.ReplayStats {
	t.Helper()
	diffs, stats, err := f.replayer.Verify(f.Ctx)
	if err != nil {
		t.Fatalf("verify (%s): %v", what, err)
	}
	for _, d := range diffs {
		t.Errorf("verify (%s): table %s differs: %d rows only live, %d only rebuilt", what, d.Table, d.OnlyLive, d.OnlyRebuilt)
	}
	return stats
}

// getRun reads a run through the Reader (read-your-writes).
func (f *fixture) getRun(t testing.TB, id string) projections.RunView {
	t.Helper()
	v, err := f.Reader.GetRun(f.Ctx, id)
	if err != nil {
		t.Fatalf("get run %s: %v", id, err)
	}
	return v
}

// snapshot returns every row of every read-model table, and the
// projectors' checkpoints (with updated_at), as text, sorted by table: two
// equal snapshots mean nothing changed.
func (f *fixture) snapshot(t testing.TB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	queries := map[string]string{"checkpoints": `SELECT t::text FROM feed_checkpoints t WHERE consumer = ANY('{operations,queue,notifications}')`}
	for _, p := range projections.All() {
		for _, table := range p.TableNames() {
			queries[table] = fmt.Sprintf(`SELECT t::text FROM projections.%s t`, table)
		}
	}
	for table, q := range queries {
		rows, err := f.Pool.Query(f.Ctx, q)
		if err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		sort.Strings(list)
		out[table] = list
	}
	return out
}
