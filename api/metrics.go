package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/projections"
)

// Metrics holds opsgate's Prometheus metrics in a registry of its own.
type Metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	starts       *prometheus.CounterVec
	projectorLag *prometheus.HistogramVec
	claims       *prometheus.CounterVec
	claimWait    *prometheus.HistogramVec
	completions  *prometheus.CounterVec
	leaseLosses  *prometheus.CounterVec
}

// NewMetrics returns the metrics; pool (may be nil) feeds the gauges read
// at scrape time: queue depth and how far each projector trails the store.
func NewMetrics(pool *pgxpool.Pool) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsgate_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "opsgate_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsgate_starts_total", Help: "Start decisions by outcome and operation type.",
		}, []string{"outcome", "type"}),
		projectorLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "opsgate_projector_apply_lag_seconds", Help: "Time from an event's commit to its projection, by projector.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"projector"}),
	}
	m.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_executor_claims_total", Help: "Runs claimed, by executor (builtin for the built-in worker).",
	}, []string{"executor"})
	m.claimWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "opsgate_executor_claim_wait_seconds", Help: "How long a claim request waited (its long poll), by executor.",
		Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
	}, []string{"executor"})
	m.completions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_executor_completions_total", Help: "Runs completed by their executor, by executor and status.",
	}, []string{"executor", "status"})
	m.leaseLosses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_executor_lease_losses_total", Help: "Heartbeats and completions refused because the lease was gone, by executor.",
	}, []string{"executor"})
	m.registry.MustRegister(m.requests, m.latency, m.starts, m.projectorLag, m.claims, m.claimWait, m.completions, m.leaseLosses,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pool != nil {
		m.registry.MustRegister(&dbCollector{pool: pool})
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ObserveRequest records one HTTP request.
func (m *Metrics) ObserveRequest(method, route string, status int, elapsed time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(elapsed.Seconds())
}

// ObserveStart records one start decision.
func (m *Metrics) ObserveStart(outcome domain.Outcome, opType string) {
	m.starts.WithLabelValues(string(outcome), opType).Inc()
}

// ObserveClaims records a claim request of executor that got n runs after
// waiting waited.
func (m *Metrics) ObserveClaims(executor string, n int, waited time.Duration) {
	m.claims.WithLabelValues(executor).Add(float64(n))
	m.claimWait.WithLabelValues(executor).Observe(waited.Seconds())
}

// ObserveCompletion records a run completed by executor with status.
func (m *Metrics) ObserveCompletion(executor, status string) {
	m.completions.WithLabelValues(executor, status).Inc()
}

// ObserveLeaseLoss records a heartbeat or completion of executor refused
// because its lease was gone.
func (m *Metrics) ObserveLeaseLoss(executor string) {
	m.leaseLosses.WithLabelValues(executor).Inc()
}

// ObserveProjection records the lag of one projected event.
func (m *Metrics) ObserveProjection(projector string, recordedAt time.Time) {
	m.projectorLag.WithLabelValues(projector).Observe(time.Since(recordedAt).Seconds())
}

// dbCollector reads queue depth and projector lag at scrape time, so any
// api process reports them whichever process runs the projectors.
type dbCollector struct {
	pool *pgxpool.Pool
}

var (
	queueDepthDesc = prometheus.NewDesc("opsgate_queue_depth", "Runs queued or running, by status.", []string{"status"}, nil)
	oldestDesc     = prometheus.NewDesc("opsgate_queue_oldest_queued_age_seconds", "Age of the oldest queued run.", nil, nil)
	lagDesc        = prometheus.NewDesc("opsgate_projector_lag_seconds", "Age of the oldest event a projector has not applied yet (0 when caught up).", []string{"projector"}, nil)
	chainLagDesc   = prometheus.NewDesc("opsgate_audit_chain_lag_seconds", "Age of the oldest event the audit chain has not linked yet (0 when caught up); exports and verification cover what is linked.", nil, nil)
)

func (d *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- oldestDesc
	ch <- lagDesc
	ch <- chainLagDesc
}

func (d *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var queued, running int
	var oldest float64
	err := d.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running'),
		coalesce(extract(epoch FROM clock_timestamp() - min(queued_at) FILTER (WHERE status = 'queued')), 0)::float8
		FROM projections.ops_queue`).Scan(&queued, &running, &oldest)
	if err == nil {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(queued), "queued")
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(running), "running")
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
	}
	rows, err := d.pool.Query(ctx, `SELECT c.consumer, coalesce(extract(epoch FROM clock_timestamp() - (
			SELECT e.recorded_at FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
			ORDER BY e.tx_id, e.position LIMIT 1)), 0)::float8
		FROM feed_checkpoints c WHERE c.consumer = ANY($1::text[])`, append(projections.Names(), audit.ChainConsumer))
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var lag float64
		switch {
		case rows.Scan(&name, &lag) != nil:
		case name == audit.ChainConsumer:
			ch <- prometheus.MustNewConstMetric(chainLagDesc, prometheus.GaugeValue, lag)
		default:
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag, name)
		}
	}
}
