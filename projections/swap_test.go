package projections_test

import (
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/projections"
)

// TestProjectorWaitingForTheSwapHoldsNoTable stands in for a rebuild at
// the moment of its swap: it holds the swap lock exclusively while the
// projectors, on fresh connections (so that pgx prepares their statements
// anew), wait for it; then it takes the live tables exclusively, as the
// swap's DROP SCHEMA does. A projector that touched a live table before
// it asked for the swap lock would deadlock with it.
func TestProjectorWaitingForTheSwapHoldsNoTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.startProjectors()
	tn := f.tenant("Swap")
	owner := f.user("owner", domain.RoleOwner, tn.ID)
	conn := f.connection(owner, tn.ID, "Graph")
	f.waitCaughtUp(30 * time.Second)

	swap, err := f.pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Rollback(f.ctx) //nolint:errcheck
	if _, err := swap.Exec(f.ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := swap.Exec(f.ctx, `SELECT pg_advisory_xact_lock($1)`, projections.SwapLock); err != nil {
		t.Fatal(err)
	}
	// Fresh connections for the projectors' next transactions: idle ones
	// are closed now, the busy ones (this one included) when released.
	f.pool.Reset()
	run := f.expect(domain.OutcomeAccepted, connStart(owner, domain.SurfaceInventorySync, conn.ID)).Run
	waitFor(t, 30*time.Second, "every projector to wait for the swap lock", func() bool {
		var waiting int
		err := swap.QueryRow(f.ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting)
		if err != nil {
			t.Fatalf("read locks: %v", err)
		}
		return waiting >= len(projections.All())
	})
	tables := "projections.projection_checkpoints"
	for _, p := range projections.All() {
		for _, tb := range p.TableNames() {
			tables += ", projections." + tb
		}
	}
	if _, err := swap.Exec(f.ctx, `LOCK TABLE `+tables+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatalf("take the live tables as a swap does, while the projectors wait for the swap lock: %v", err)
	}
	if err := swap.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	if v := f.getRun(run.ID); v.Status != domain.StatusQueued {
		t.Errorf("run after the swap: %+v", v)
	}
	f.waitCaughtUp(30 * time.Second)
	f.verifyClean("after the swap")
}
