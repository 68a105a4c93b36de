package projections_test

import (
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

// BenchmarkProjectionLag measures the commit-to-read-model lag of the
// Operations view: the time from a start's commit (svc.Start returning)
// until its run is visible in projections.ops_runs. It reports the mean as
// lag-ms/op; ns/op also counts the start itself and the bookkeeping.
func BenchmarkProjectionLag(b *testing.B) {
	f := newFixture(b)
	f.startProjectors(b)
	tn := f.Tenant(b, f.workspace.ID, "Bench")
	owner := f.Member(b, "owner", tn.ID, domain.RoleOwner).ID
	conn := f.Connection(b, owner, tn.ID, "Graph")
	f.waitCaughtUp(b, 10*time.Second)

	visible := func(id string) bool {
		var ok bool
		if err := f.Pool.QueryRow(f.Ctx, `SELECT EXISTS (SELECT 1 FROM projections.ops_runs WHERE id = $1)`, id).Scan(&ok); err != nil {
			b.Fatalf("look up %s: %v", id, err)
		}
		return ok
	}
	var total time.Duration
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run := f.Expect(b, domain.OutcomeAccepted, apptest.ConnStart(owner, domain.SurfaceInventorySync, conn.ID)).Run
		committed := time.Now()
		deadline := committed.Add(10 * time.Second)
		for !visible(run.ID) {
			if time.Now().After(deadline) {
				b.Fatalf("run %s not visible after 10s", run.ID)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lag := time.Since(committed)
		total += lag
		worst = max(worst, lag)

		// Free the scope for the next iteration, outside the measurement,
		// and let the projectors settle so iterations do not overlap.
		b.StopTimer()
		if _, err := f.Gate.CancelRun(f.Ctx, apptest.As(owner), run.ID); err != nil {
			b.Fatalf("cancel: %v", err)
		}
		f.waitCaughtUp(b, 10*time.Second)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/float64(b.N)/float64(time.Millisecond), "lag-ms/op")
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "max-lag-ms")
}
