package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
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
	decisions    *prometheus.CounterVec
	blocked      *prometheus.CounterVec
	pickup       *prometheus.HistogramVec
	runDuration  *prometheus.HistogramVec
	runsLost     *prometheus.CounterVec
	feedBatches  *prometheus.CounterVec
	feedEvents   prometheus.Counter
	pools        *poolCollector
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
	m.pools = &poolCollector{}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_decisions_total", Help: "Start decisions answered by this process, by outcome and reason code (none for accepted).",
	}, []string{"outcome", "reason"})
	m.blocked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_blocked_starts_total", Help: "Starts answered blocked, by reason class.",
	}, []string{"class"})
	runBuckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	m.pickup = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "opsgate_run_pickup_seconds", Help: "Time from a run's acceptance to its claim (RunStarted), by operation type.",
		Buckets: runBuckets,
	}, []string{"type"})
	m.runDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "opsgate_run_duration_seconds", Help: "Time from a run's claim to its end, by operation type and final status.",
		Buckets: runBuckets,
	}, []string{"type", "status"})
	m.runsLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_runs_lost_total", Help: "Runs ended failed / execution.lost: their executor's lease ran out (reaped) or it was revoked, by executor (builtin for the built-in worker).",
	}, []string{"executor"})
	m.feedBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_feed_batches_total", Help: "Batches of events the subscription of this process applied (result ok), or failed and will deliver again (result redelivered).",
	}, []string{"result"})
	m.feedEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "opsgate_feed_events_total", Help: "Events the subscription of this process applied.",
	})
	m.registry.MustRegister(m.requests, m.latency, m.starts, m.projectorLag, m.claims, m.claimWait, m.completions, m.leaseLosses,
		m.decisions, m.blocked, m.pickup, m.runDuration, m.runsLost, m.feedBatches, m.feedEvents, m.pools,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The built-in worker's series exist from the start, at zero, so that
	// rates and alerts on them need no absent() guard.
	m.claims.WithLabelValues(BuiltinExecutor)
	m.leaseLosses.WithLabelValues(BuiltinExecutor)
	m.runsLost.WithLabelValues(BuiltinExecutor)
	if pool != nil {
		m.registry.MustRegister(&dbCollector{pool: pool})
	}
	return m
}

// BuiltinExecutor is the executor label of the built-in worker.
const BuiltinExecutor = "builtin"

// executorLabel is the executor label of the worker id a run was claimed
// under: "executor:<id>" for a registered executor (its id); the built-in
// workers' ids (host-pid-suffix, new for each process) all count as
// builtin, so that the label stays bounded. Runs lost before worker ids
// were recorded on the event are "unknown".
func executorLabel(workerID string) string {
	if workerID == "" {
		return "unknown"
	}
	if id, ok := domain.ExecutorOf(workerID); ok {
		return id
	}
	return BuiltinExecutor
}

// WatchPool exports pool's statistics (pgxpool.Stat) under the label
// pool=name: connections in use, idle and allowed, acquisitions and the
// time spent waiting for them.
func (m *Metrics) WatchPool(name string, pool *pgxpool.Pool) {
	m.pools.mu.Lock()
	defer m.pools.mu.Unlock()
	m.pools.pools = append(m.pools.pools, namedPool{name, pool})
}

// ObserveFeedBatch records a batch of the feed: n events applied, or a
// failure (its batch is delivered again).
func (m *Metrics) ObserveFeedBatch(n int, err error) {
	if err != nil {
		m.feedBatches.WithLabelValues("redelivered").Inc()
		return
	}
	m.feedBatches.WithLabelValues("ok").Inc()
	m.feedEvents.Add(float64(n))
}

// RunsConsumer is the feed consumer that times runs from their events:
// acceptance to claim, claim to end, and runs lost. Its checkpoint makes
// each run counted once, by one process.
func (m *Metrics) RunsConsumer() eventstore.Consumer {
	return eventstore.Consumer{Name: "metrics.runs", Apply: func(_ context.Context, _ *pgx.Batch, events []eventstore.Delivery) error {
		for _, d := range events {
			switch e := d.Payload.(type) {
			case domain.RunStarted:
				m.pickup.WithLabelValues(e.Start.Type).Observe(e.At.Sub(e.CreatedAt).Seconds())
			case domain.RunSucceeded:
				m.ended(e.Start.Type, domain.StatusSucceeded, e.StartedAt, e.At)
			case domain.RunFailed:
				m.ended(e.Start.Type, domain.StatusFailed, e.StartedAt, e.At)
				if e.Reason.Code == domain.ReasonExecutionLost {
					m.runsLost.WithLabelValues(executorLabel(e.WorkerID)).Inc()
				}
			case domain.RunCancelled:
				m.ended(e.Start.Type, domain.StatusCancelled, e.StartedAt, e.At)
			}
		}
		return nil
	}}
}

func (m *Metrics) ended(opType string, status domain.RunStatus, started *time.Time, at time.Time) {
	if started != nil {
		m.runDuration.WithLabelValues(opType, string(status)).Observe(at.Sub(*started).Seconds())
	}
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

// ObserveStart records one start decision (gate.Service.OnDecided).
func (m *Metrics) ObserveStart(res domain.StartResult, opType string) {
	m.starts.WithLabelValues(string(res.Outcome), opType).Inc()
	reason := "none"
	if res.Reason != nil {
		reason = string(res.Reason.Code)
		if res.Outcome == domain.OutcomeBlocked {
			m.blocked.WithLabelValues(string(res.Reason.Class)).Inc()
		}
	}
	m.decisions.WithLabelValues(string(res.Outcome), reason).Inc()
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
	busyDesc       = prometheus.NewDesc("opsgate_scopes_busy", "Scopes held by an active (queued or running) run, by provider.", []string{"provider"}, nil)
	dbUpDesc       = prometheus.NewDesc("opsgate_database_up", "1 if the database answered this scrape's queries, else 0.", nil, nil)
	chainLagDesc   = prometheus.NewDesc("opsgate_audit_chain_lag_seconds", "Age of the oldest event the audit chain has not linked yet (0 when caught up); exports and verification cover what is linked.", nil, nil)
)

func (d *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- oldestDesc
	ch <- lagDesc
	ch <- chainLagDesc
	ch <- busyDesc
	ch <- dbUpDesc
}

func (d *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var queued, running int
	var oldest float64
	err := d.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running'),
		coalesce(extract(epoch FROM clock_timestamp() - min(queued_at) FILTER (WHERE status = 'queued')), 0)::float8
		FROM projections.ops_queue`).Scan(&queued, &running, &oldest)
	up := 0.0
	if err == nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(dbUpDesc, prometheus.GaugeValue, up)
	if err == nil {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(queued), "queued")
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(running), "running")
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
	}
	if rows, err := d.pool.Query(ctx, `SELECT coalesce(provider, 'none'), count(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY 1`); err == nil {
		for rows.Next() {
			var provider string
			var n float64
			if rows.Scan(&provider, &n) == nil {
				ch <- prometheus.MustNewConstMetric(busyDesc, prometheus.GaugeValue, n, provider)
			}
		}
		rows.Close()
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

// poolCollector reads the statistics of the pools it watches at scrape time.
type poolCollector struct {
	mu    sync.Mutex
	pools []namedPool
}

type namedPool struct {
	name string
	pool *pgxpool.Pool
}

var (
	poolConnsDesc    = prometheus.NewDesc("opsgate_db_pool_connections", "Connections of a pool by state (acquired, idle, max).", []string{"pool", "state"}, nil)
	poolAcquiresDesc = prometheus.NewDesc("opsgate_db_pool_acquires_total", "Connections acquired from a pool; empty: had to wait for one; canceled: gave up.", []string{"pool", "kind"}, nil)
	poolWaitDesc     = prometheus.NewDesc("opsgate_db_pool_acquire_wait_seconds_total", "Time spent acquiring connections from a pool.", []string{"pool"}, nil)
)

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConnsDesc
	ch <- poolAcquiresDesc
	ch <- poolWaitDesc
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	pools := append([]namedPool(nil), p.pools...)
	p.mu.Unlock()
	for _, np := range pools {
		s, name := np.pool.Stat(), np.name
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.AcquiredConns()), name, "acquired")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.IdleConns()), name, "idle")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.MaxConns()), name, "max")
		ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(s.AcquireCount()), name, "all")
		ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(s.EmptyAcquireCount()), name, "empty")
		ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(s.CanceledAcquireCount()), name, "canceled")
		ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, s.AcquireDuration().Seconds(), name)
	}
}
