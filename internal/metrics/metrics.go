// Package metrics holds opsgate's Prometheus metrics: the counters and
// histograms the application observes as it works (requests, starts,
// claims, completions, the feed, runs timed from their events), and the
// gauges read at scrape time, each from the package that owns the table
// it reads (projections, gate, eventstore) and from the connection pools.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
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
	deadlines    *prometheus.CounterVec
	callers      *prometheus.CounterVec
	feedBatches  *prometheus.CounterVec
	feedEvents   prometheus.Counter
	// auditCheckpoints counts checkpoints signed and refused.
	auditCheckpoints *prometheus.CounterVec
	// webhookDeliveries and webhookLatency count and time webhook attempts.
	webhookDeliveries *prometheus.CounterVec
	webhookLatency    *prometheus.HistogramVec
	// rateLimited counts requests refused for their caller's rate.
	rateLimited *prometheus.CounterVec
	// syncWaitsCancelled counts PostgreSQL's warnings that a commit's wait
	// for the synchronous standby was cancelled.
	syncWaitsCancelled prometheus.Counter
	pools              *poolCollector
}

// New returns the metrics; db (nil, or every field set before the first
// scrape) feeds the gauges read at scrape time: queue depth, busy scopes and how far each
// projector trails the store.
func New(db *Database) *Metrics {
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
	m.deadlines = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_runs_deadline_total", Help: "Runs ended by a deadline, by deadline (claim_by: not picked up; finish_by: timed out) and the provider of their connection.",
	}, []string{"deadline", "provider"})
	m.callers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_authenticated_requests_total", Help: "Authenticated requests by the kind of their token: user, integration (on behalf of a user), executor or admin.",
	}, []string{"kind"})
	m.feedBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_feed_batches_total", Help: "Batches of events the subscription of this process applied (result ok), or failed and will deliver again (result redelivered).",
	}, []string{"result"})
	m.feedEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "opsgate_feed_events_total", Help: "Events the subscription of this process applied.",
	})
	m.webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_webhook_deliveries_total", Help: "Webhook delivery attempts by endpoint and result: delivered, failed (tried again) or gave_up.",
	}, []string{"endpoint", "result"})
	m.webhookLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "opsgate_webhook_attempt_seconds", Help: "Time from sending a webhook delivery attempt to its answer (or failure), by result.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_rate_limited_total", Help: "Requests refused 429 rate_limited, by the kind of their token (user, integration, executor, admin).",
	}, []string{"kind"})
	m.registry.MustRegister(m.rateLimited)
	m.syncWaitsCancelled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "opsgate_db_sync_replication_waits_cancelled_total",
		Help: "Commits whose wait for the synchronous standby PostgreSQL cancelled (it warned \"canceling wait for synchronous replication\"): committed on the primary only, which a failover may lose. Should stay 0.",
	})
	m.registry.MustRegister(m.syncWaitsCancelled)
	m.auditCheckpoints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "opsgate_audit_checkpoints_total",
		Help: "Audit checkpoints this process signed (result signed), or refused to sign because the tenant's tree does not extend the last one signed (result refused: a rewritten or rolled-back history).",
	}, []string{"result"})
	m.registry.MustRegister(m.auditCheckpoints)
	m.registry.MustRegister(m.requests, m.latency, m.starts, m.projectorLag, m.claims, m.claimWait, m.completions, m.leaseLosses,
		m.decisions, m.blocked, m.pickup, m.runDuration, m.runsLost, m.deadlines, m.callers, m.feedBatches, m.feedEvents, m.pools,
		m.webhookDeliveries, m.webhookLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The built-in worker's series exist from the start, at zero, so that
	// rates and alerts on them need no absent() guard.
	m.claims.WithLabelValues(BuiltinExecutor)
	m.leaseLosses.WithLabelValues(BuiltinExecutor)
	m.runsLost.WithLabelValues(BuiltinExecutor)
	for _, kind := range []string{"user", "integration", "executor", "admin"} {
		m.callers.WithLabelValues(kind)
		m.rateLimited.WithLabelValues(kind)
	}
	for _, result := range []string{"delivered", "failed", "gave_up"} {
		m.webhookLatency.WithLabelValues(result)
	}
	if db != nil {
		m.registry.MustRegister(&dbCollector{db: db})
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

// ObserveSyncWaitCancelled counts a commit whose wait for the synchronous
// standby PostgreSQL cancelled.
func (m *Metrics) ObserveSyncWaitCancelled() { m.syncWaitsCancelled.Inc() }

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
				switch e.Reason.Code {
				case domain.ReasonExecutionLost:
					m.runsLost.WithLabelValues(executorLabel(e.WorkerID)).Inc()
				case domain.ReasonNotPickedUp:
					m.deadlines.WithLabelValues("claim_by", providerLabel(e.Start.Connection)).Inc()
				case domain.ReasonTimedOut:
					m.deadlines.WithLabelValues("finish_by", providerLabel(e.Start.Connection)).Inc()
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

// ObserveRateLimited counts a request refused for its caller's rate.
func (m *Metrics) ObserveRateLimited(kind string) { m.rateLimited.WithLabelValues(kind).Inc() }

// ObserveCaller counts an authenticated request by the kind of its token.
func (m *Metrics) ObserveCaller(kind string) { m.callers.WithLabelValues(kind).Inc() }

// providerLabel is the provider label of a run's connection.
func providerLabel(c *domain.ConnectionRef) string {
	if c == nil {
		return noProvider
	}
	return c.Provider
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

// ObserveWebhookAttempt records a webhook delivery attempt to endpoint.
func (m *Metrics) ObserveWebhookAttempt(endpoint, result string, took time.Duration) {
	m.webhookDeliveries.WithLabelValues(endpoint, result).Inc()
	m.webhookLatency.WithLabelValues(result).Observe(took.Seconds())
}

// ObserveCheckpointSigned and ObserveCheckpointRefused count the audit
// signer's checkpoints.
func (m *Metrics) ObserveCheckpointSigned()  { m.auditCheckpoints.WithLabelValues("signed").Inc() }
func (m *Metrics) ObserveCheckpointRefused() { m.auditCheckpoints.WithLabelValues("refused").Inc() }

// ObserveProjection records the lag of one projected event.
func (m *Metrics) ObserveProjection(projector string, recordedAt time.Time) {
	m.projectorLag.WithLabelValues(projector).Observe(time.Since(recordedAt).Seconds())
}
