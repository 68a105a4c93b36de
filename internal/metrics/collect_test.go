package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/projections"
)

// database answers a scrape's questions as told.
type database struct {
	queue    projections.QueueStats
	queueErr error
	busy     map[string]int
	lags     map[string]time.Duration
	asked    []string // the consumers whose lag was asked for
}

func (d *database) QueueNow(context.Context) (projections.QueueStats, error) {
	return d.queue, d.queueErr
}

func (d *database) BusyScopes(context.Context) (map[string]int, error) { return d.busy, nil }

func (d *database) ConsumerLags(_ context.Context, consumers []string) (map[string]time.Duration, error) {
	d.asked = consumers
	return d.lags, nil
}

// TestScrapeAsksTheOwners: the gauges a scrape reads come from the
// packages that own the tables, under the families, labels and help the
// dashboards and alert rules know: runs without a provider count as
// provider none, and the audit chain's lag is a family of its own.
func TestScrapeAsksTheOwners(t *testing.T) {
	oldest := 42.5
	db := &database{
		queue: projections.QueueStats{Queued: 3, Running: 2, OldestQueuedAgeSec: &oldest},
		busy:  map[string]int{"": 1, "m365": 4},
		lags: map[string]time.Duration{"operations": 1500 * time.Millisecond, "queue": 0,
			audit.ChainConsumer: 2 * time.Second},
	}
	want := `
# HELP opsgate_audit_chain_lag_seconds Age of the oldest event the audit chain has not linked yet (0 when caught up); exports and verification cover what is linked.
# TYPE opsgate_audit_chain_lag_seconds gauge
opsgate_audit_chain_lag_seconds 2
# HELP opsgate_database_up 1 if the database answered this scrape's queries, else 0.
# TYPE opsgate_database_up gauge
opsgate_database_up 1
# HELP opsgate_projector_lag_seconds Age of the oldest event a projector has not applied yet (0 when caught up).
# TYPE opsgate_projector_lag_seconds gauge
opsgate_projector_lag_seconds{projector="operations"} 1.5
opsgate_projector_lag_seconds{projector="queue"} 0
# HELP opsgate_queue_depth Runs queued or running, by status.
# TYPE opsgate_queue_depth gauge
opsgate_queue_depth{status="queued"} 3
opsgate_queue_depth{status="running"} 2
# HELP opsgate_queue_oldest_queued_age_seconds Age of the oldest queued run.
# TYPE opsgate_queue_oldest_queued_age_seconds gauge
opsgate_queue_oldest_queued_age_seconds 42.5
# HELP opsgate_scopes_busy Scopes held by an active (queued or running) run, by provider.
# TYPE opsgate_scopes_busy gauge
opsgate_scopes_busy{provider="m365"} 4
opsgate_scopes_busy{provider="none"} 1
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&dbCollector{db: &Database{Queue: db, Scopes: db, Feed: db}})
	if got := scrape(t, reg); got != want[1:] {
		t.Errorf("scraped\n%s\nwant\n%s", got, want[1:])
	}
	if wantAsked := append(projections.Names(), audit.ChainConsumer, changes.ConsumerName); strings.Join(db.asked, ",") != strings.Join(wantAsked, ",") {
		t.Errorf("asked the lag of %v, want %v", db.asked, wantAsked)
	}

	// The queue unanswered: the database is down, and no depth is made up.
	db.queueErr = errors.New("connection refused")
	got := scrape(t, reg)
	if !strings.Contains(got, "opsgate_database_up 0\n") || strings.Contains(got, "opsgate_queue_") {
		t.Errorf("scraped, the queue unanswered:\n%s", got)
	}
}

// scrape returns what reg exposes, in the text format.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out strings.Builder
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&out, mf); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}
