// Package config reads opsgate's settings from the environment, with
// defaults, and refuses contradictory ones at start-up with a sentence
// naming the variables.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"

	"strconv"
	"strings"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// Config is every setting of the opsgate service.
type Config struct {
	// DatabaseURL names the PostgreSQL database (DATABASE_URL).
	DatabaseURL string
	// HTTPAddr is where the API listens (OPSGATE_HTTP_ADDR).
	HTTPAddr string
	// AdminToken authorises admin endpoints (OPSGATE_ADMIN_TOKEN); empty
	// means generate one and print it once.
	AdminToken string
	// LogLevel is debug, info, warn or error (OPSGATE_LOG_LEVEL).
	LogLevel slog.Level
	// DBMaxConns bounds the connection pool (OPSGATE_DB_MAX_CONNS).
	DBMaxConns int32
	// RequestTimeout bounds each API request (OPSGATE_REQUEST_TIMEOUT).
	RequestTimeout time.Duration
	// ShutdownGrace is how long SIGTERM waits for in-flight requests and
	// running operations (OPSGATE_SHUTDOWN_GRACE).
	ShutdownGrace time.Duration
	// PollInterval is the subscribers' fallback poll when no wake-up
	// arrives (OPSGATE_POLL_INTERVAL).
	PollInterval time.Duration
	// WakeDelay is how long a subscriber woken by a commit waits before it
	// reads, so that the commits of a burst are read in one batch
	// (OPSGATE_WAKE_DELAY); WakeEvery how often at most the projectors and
	// the audit chain are woken under a steady stream of commits
	// (OPSGATE_WAKE_EVERY), and ChangesWakeEvery the change feed, which is
	// woken at each commit otherwise (OPSGATE_CHANGES_WAKE_EVERY).
	WakeDelay, WakeEvery, ChangesWakeEvery time.Duration
	// WorkerConcurrency bounds operations executing at once per worker
	// process (OPSGATE_WORKER_CONCURRENCY).
	WorkerConcurrency int
	// Lease is how long a worker's claim on a running run lasts without a
	// heartbeat (OPSGATE_LEASE); Heartbeat is how often it renews it
	// (OPSGATE_HEARTBEAT).
	Lease     time.Duration
	Heartbeat time.Duration
	// QueueTTL is how long an accepted run may wait to be claimed
	// (OPSGATE_QUEUE_TTL), MaxDuration how long it may run once claimed
	// (OPSGATE_MAX_DURATION), unless a start's limits say otherwise.
	QueueTTL    time.Duration
	MaxDuration time.Duration
	// ExecutorLiveness is how recently an executor must have called an
	// executor endpoint to count for the preflight (OPSGATE_EXECUTOR_LIVENESS).
	ExecutorLiveness time.Duration
	// StartQueue bounds the starts waiting to be decided in one process;
	// more are refused with 503 overloaded (OPSGATE_START_QUEUE).
	StartQueue int
	// ReadYourWritesWait bounds how long a monitoring read waits for the
	// projection to catch up with a position (OPSGATE_READ_YOUR_WRITES_WAIT).
	ReadYourWritesWait time.Duration
	// Webhooks: the schedule of retries after each failed attempt
	// (OPSGATE_WEBHOOK_RETRY_SCHEDULE, comma-separated durations), how long
	// a rotated secret keeps signing beside the new one
	// (OPSGATE_WEBHOOK_SECRET_OVERLAP), and whether endpoints on private,
	// loopback or link-local addresses are allowed
	// (OPSGATE_WEBHOOK_ALLOW_PRIVATE=true).
	WebhookRetrySchedule []time.Duration
	WebhookSecretOverlap time.Duration
	WebhookAllowPrivate  bool
	// Tracing is whether opsgate exports its spans over OTLP: when the
	// standard OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT is set and
	// OTEL_SDK_DISABLED is not true. The exporter reads the other OTEL_
	// variables itself.
	Tracing bool
	// RateLimit is the requests per second each token (an integration's
	// per user it acts for) may send, RateBurst how many at once
	// (OPSGATE_RATE_LIMIT, OPSGATE_RATE_BURST); a RateLimit of 0 is none.
	RateLimit float64
	RateBurst int
	// PprofAddr, if set, serves net/http/pprof there (OPSGATE_PPROF_ADDR);
	// keep it on loopback.
	PprofAddr string
	// AuditSigningKeyFile holds the note key that signs the audit trees'
	// checkpoints (OPSGATE_AUDIT_SIGNING_KEY_FILE; `opsgate audit keygen`
	// makes one); without it no checkpoint is signed. AuditOrigin prefixes
	// the checkpoints' origins (OPSGATE_AUDIT_ORIGIN, "opsgate").
	AuditSigningKeyFile string
	AuditOrigin         string
	// AuditCheckpointInterval is how often the signer signs the trees that
	// grew (OPSGATE_AUDIT_CHECKPOINT_INTERVAL, 5 s; at most 10 s, the
	// contract's bound).
	AuditCheckpointInterval time.Duration
}

// FromEnv reads the configuration from getenv (os.Getenv in production)
// and validates it.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		DatabaseURL:        getenv("DATABASE_URL"),
		HTTPAddr:           "127.0.0.1:8080",
		AdminToken:         getenv("OPSGATE_ADMIN_TOKEN"),
		LogLevel:           slog.LevelInfo,
		DBMaxConns:         32,
		RequestTimeout:     15 * time.Second,
		ShutdownGrace:      20 * time.Second,
		PollInterval:       100 * time.Millisecond,
		WakeDelay:          5 * time.Millisecond,
		WakeEvery:          20 * time.Millisecond,
		ChangesWakeEvery:   10 * time.Millisecond,
		WorkerConcurrency:  8,
		StartQueue:         512,
		Lease:              30 * time.Second,
		Heartbeat:          5 * time.Second,
		QueueTTL:           15 * time.Minute,
		MaxDuration:        time.Hour,
		ExecutorLiveness:   time.Minute,
		ReadYourWritesWait: 2 * time.Second,
		WebhookRetrySchedule: []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
			5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour},
		WebhookSecretOverlap:    24 * time.Hour,
		RateLimit:               50,
		RateBurst:               100,
		AuditOrigin:             "opsgate",
		AuditCheckpointInterval: 5 * time.Second,
	}
	var errs []error
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q is not a positive duration such as 500ms or 30s", name, v))
				return
			}
			*dst = d
		}
	}
	num := func(name string, dst *int, lo, hi int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				errs = append(errs, fmt.Errorf("%s=%q must be a whole number from %d to %d", name, v, lo, hi))
				return
			}
			*dst = n
		}
	}
	str("OPSGATE_HTTP_ADDR", &c.HTTPAddr)
	str("OPSGATE_PPROF_ADDR", &c.PprofAddr)
	str("OPSGATE_AUDIT_SIGNING_KEY_FILE", &c.AuditSigningKeyFile)
	str("OPSGATE_AUDIT_ORIGIN", &c.AuditOrigin)
	dur("OPSGATE_AUDIT_CHECKPOINT_INTERVAL", &c.AuditCheckpointInterval)
	if c.AuditCheckpointInterval > 10*time.Second {
		errs = append(errs, fmt.Errorf("OPSGATE_AUDIT_CHECKPOINT_INTERVAL=%s must be at most 10s: a new checkpoint is due within 10 s of new events", c.AuditCheckpointInterval))
	}
	if strings.ContainsAny(c.AuditOrigin, "\n\r") || strings.TrimSpace(c.AuditOrigin) != c.AuditOrigin {
		errs = append(errs, fmt.Errorf("OPSGATE_AUDIT_ORIGIN=%q must be one line without surrounding spaces", c.AuditOrigin))
	}
	if v := getenv("OPSGATE_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("OPSGATE_LOG_LEVEL=%q must be debug, info, warn or error", v))
		}
	}
	maxConns := int(c.DBMaxConns)
	num("OPSGATE_DB_MAX_CONNS", &maxConns, 2, 1000)
	c.DBMaxConns = int32(maxConns)
	dur("OPSGATE_REQUEST_TIMEOUT", &c.RequestTimeout)
	dur("OPSGATE_SHUTDOWN_GRACE", &c.ShutdownGrace)
	dur("OPSGATE_POLL_INTERVAL", &c.PollInterval)
	dur("OPSGATE_WAKE_DELAY", &c.WakeDelay)
	dur("OPSGATE_WAKE_EVERY", &c.WakeEvery)
	dur("OPSGATE_CHANGES_WAKE_EVERY", &c.ChangesWakeEvery)
	num("OPSGATE_WORKER_CONCURRENCY", &c.WorkerConcurrency, 1, 1024)
	num("OPSGATE_START_QUEUE", &c.StartQueue, 1, 100_000)
	dur("OPSGATE_LEASE", &c.Lease)
	dur("OPSGATE_HEARTBEAT", &c.Heartbeat)
	dur("OPSGATE_READ_YOUR_WRITES_WAIT", &c.ReadYourWritesWait)
	dur("OPSGATE_QUEUE_TTL", &c.QueueTTL)
	dur("OPSGATE_MAX_DURATION", &c.MaxDuration)
	dur("OPSGATE_EXECUTOR_LIVENESS", &c.ExecutorLiveness)
	dur("OPSGATE_WEBHOOK_SECRET_OVERLAP", &c.WebhookSecretOverlap)
	if v := getenv("OPSGATE_WEBHOOK_RETRY_SCHEDULE"); v != "" {
		c.WebhookRetrySchedule = nil
		for _, part := range strings.Split(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(part))
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("OPSGATE_WEBHOOK_RETRY_SCHEDULE=%q must be positive durations separated by commas, such as 5s,5m,30m", v))
				break
			}
			c.WebhookRetrySchedule = append(c.WebhookRetrySchedule, d)
		}
	}
	if v := getenv("OPSGATE_RATE_LIMIT"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
			errs = append(errs, fmt.Errorf("OPSGATE_RATE_LIMIT=%q must be requests per second (0 for no limit)", v))
		} else {
			c.RateLimit = n
		}
	}
	num("OPSGATE_RATE_BURST", &c.RateBurst, 1, 1_000_000)
	c.Tracing = (getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") &&
		!strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true")
	if v := getenv("OPSGATE_WEBHOOK_ALLOW_PRIVATE"); v != "" {
		allow, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("OPSGATE_WEBHOOK_ALLOW_PRIVATE=%q must be true or false", v))
		}
		c.WebhookAllowPrivate = allow
	}

	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

func (c Config) validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is not set: name a PostgreSQL database, or use `make run`, which starts a private one under .data/"))
	} else if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") && !strings.Contains(c.DatabaseURL, "=") {
		errs = append(errs, fmt.Errorf("DATABASE_URL=%q is neither a postgres:// URL nor a key=value connection string", redact(c.DatabaseURL)))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("OPSGATE_HTTP_ADDR=%q is not host:port: %v", c.HTTPAddr, err))
	}
	if err := domain.CheckLease(c.Lease, c.Heartbeat); err != nil {
		errs = append(errs, fmt.Errorf("OPSGATE_LEASE and OPSGATE_HEARTBEAT: %w", err))
	}
	if err := (domain.Limits{QueueTTL: c.QueueTTL, MaxDuration: c.MaxDuration}).Check(); err != nil {
		errs = append(errs, fmt.Errorf("OPSGATE_QUEUE_TTL and OPSGATE_MAX_DURATION: %w", err))
	}
	if c.ExecutorLiveness < time.Second {
		errs = append(errs, fmt.Errorf("OPSGATE_EXECUTOR_LIVENESS=%v: an executor must be able to call in at least once a second", c.ExecutorLiveness))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("OPSGATE_ADMIN_TOKEN is shorter than 16 characters; choose a long random value or leave it unset to have one generated"))
	}
	return errors.Join(errs...)
}

func redact(url string) string {
	if i := strings.Index(url, "@"); i > 0 {
		if j := strings.Index(url, "://"); j > 0 && j < i {
			return url[:j+3] + "…" + url[i:]
		}
	}
	return url
}
