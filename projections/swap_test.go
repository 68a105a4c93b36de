package projections_test

import (
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/projections"
)

// TestProjectorWaitingForTheSwapHoldsNoTable stands in for a rebuild at
// the moment of its swap: it holds the projectors' checkpoints (FOR
// UPDATE, as Rebuild does) while the projectors' feed, on fresh
// connections (so that pgx prepares its statements anew), waits for them;
// then it takes the live tables exclusively, as the swap's DROP SCHEMA
// does. A feed that touched a live table before it held the checkpoints
// would deadlock with it.
func TestProjectorWaitingForTheSwapHoldsNoTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors(t)
	tn := f.Tenant(t, f.workspace.ID, "Swap")
	owner := f.Member(t, "owner", tn.ID, domain.RoleOwner).ID
	conn := f.Connection(t, owner, tn.ID, "Graph")
	f.waitCaughtUp(t, 30*time.Second)

	swap, err := f.Pool.Begin(f.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Rollback(f.Ctx) //nolint:errcheck
	if _, err := swap.Exec(f.Ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := swap.Exec(f.Ctx, `SELECT 1 FROM feed_checkpoints WHERE consumer = ANY($1::text[]) ORDER BY consumer FOR UPDATE`, projections.Names()); err != nil {
		t.Fatal(err)
	}
	// Fresh connections for the feed's next transactions: idle ones are
	// closed now, the busy ones when released.
	f.ReaderPool.Reset()
	run := f.Expect(t, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn.ID)).Run
	apptest.WaitFor(t, 30*time.Second, "the feed to wait for the checkpoints", func() bool { return len(f.waitingFeeds(t)) == 1 })
	var tables []string
	for _, p := range projections.All() {
		for _, tb := range p.TableNames() {
			tables = append(tables, "projections."+tb)
		}
	}
	if _, err := swap.Exec(f.Ctx, `LOCK TABLE `+strings.Join(tables, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatalf("take the live tables as a swap does, while the feed waits for the checkpoints: %v", err)
	}
	if err := swap.Commit(f.Ctx); err != nil {
		t.Fatal(err)
	}
	if v := f.getRun(t, run.ID); v.Status != domain.StatusQueued {
		t.Errorf("run after the swap: %+v", v)
	}
	f.waitCaughtUp(t, 30*time.Second)
	f.verifyClean(t, "after the swap")
}
