package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/projections"
)

// Database is what a scrape asks the packages that own the tables it
// reads, each through the one method it needs.
type Database struct {
	// Queue is the job queue (projections.Reader: ops_queue).
	Queue interface {
		QueueNow(ctx context.Context) (projections.QueueStats, error)
	}
	// Scopes are the scopes held by active runs (gate.Service: runs).
	Scopes interface {
		BusyScopes(ctx context.Context) (map[string]int, error)
	}
	// Feed is how far consumers trail the log (eventstore.Store:
	// feed_checkpoints).
	Feed interface {
		ConsumerLags(ctx context.Context, consumers []string) (map[string]time.Duration, error)
	}
	// Webhooks are the webhook deliveries (webhooks.Service); nil reports
	// none.
	Webhooks interface {
		Backlog(ctx context.Context) (oldestDue time.Duration, disabled int, err error)
	}
}

// dbCollector reads queue depth, busy scopes and projector lag at scrape
// time, so any api process reports them whichever process runs the
// projectors.
type dbCollector struct {
	db *Database
}

var (
	queueDepthDesc      = prometheus.NewDesc("opsgate_queue_depth", "Runs queued or running, by status.", []string{"status"}, nil)
	oldestDesc          = prometheus.NewDesc("opsgate_queue_oldest_queued_age_seconds", "Age of the oldest queued run.", nil, nil)
	lagDesc             = prometheus.NewDesc("opsgate_projector_lag_seconds", "Age of the oldest event a projector has not applied yet (0 when caught up).", []string{"projector"}, nil)
	busyDesc            = prometheus.NewDesc("opsgate_scopes_busy", "Scopes held by an active (queued or running) run, by provider.", []string{"provider"}, nil)
	dbUpDesc            = prometheus.NewDesc("opsgate_database_up", "1 if the database answered this scrape's queries, else 0.", nil, nil)
	webhookOldestDesc   = prometheus.NewDesc("opsgate_webhook_oldest_pending_seconds", "How long the oldest webhook delivery attempt that is due has waited to be sent (0 when none waits).", nil, nil)
	webhookDisabledDesc = prometheus.NewDesc("opsgate_webhook_endpoints_disabled", "Webhook endpoints that are disabled (by an admin, or after answering 410 Gone).", nil, nil)
	chainLagDesc        = prometheus.NewDesc("opsgate_audit_chain_lag_seconds", "Age of the oldest event the audit chain has not linked yet (0 when caught up); exports and verification cover what is linked.", nil, nil)
)

// noProvider is the provider label of runs without a connection.
const noProvider = "none"

func (d *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- oldestDesc
	ch <- lagDesc
	ch <- chainLagDesc
	ch <- busyDesc
	ch <- dbUpDesc
	ch <- webhookOldestDesc
	ch <- webhookDisabledDesc
}

func (d *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	queue, err := d.db.Queue.QueueNow(ctx)
	up := 0.0
	if err == nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(dbUpDesc, prometheus.GaugeValue, up)
	if err == nil {
		oldest := 0.0
		if queue.OldestQueuedAgeSec != nil {
			oldest = *queue.OldestQueuedAgeSec
		}
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(queue.Queued), "queued")
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(queue.Running), "running")
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
	}
	if busy, err := d.db.Scopes.BusyScopes(ctx); err == nil {
		byLabel := make(map[string]int, len(busy))
		for provider, n := range busy {
			if provider == "" {
				provider = noProvider
			}
			byLabel[provider] += n
		}
		for provider, n := range byLabel {
			ch <- prometheus.MustNewConstMetric(busyDesc, prometheus.GaugeValue, float64(n), provider)
		}
	}
	if d.db.Webhooks != nil {
		if oldest, disabled, err := d.db.Webhooks.Backlog(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(webhookOldestDesc, prometheus.GaugeValue, oldest.Seconds())
			ch <- prometheus.MustNewConstMetric(webhookDisabledDesc, prometheus.GaugeValue, float64(disabled))
		}
	}
	lags, err := d.db.Feed.ConsumerLags(ctx, append(projections.Names(), audit.ChainConsumer, changes.ConsumerName))
	if err != nil {
		return
	}
	for name, lag := range lags {
		if name == audit.ChainConsumer {
			ch <- prometheus.MustNewConstMetric(chainLagDesc, prometheus.GaugeValue, lag.Seconds())
		} else {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag.Seconds(), name)
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
