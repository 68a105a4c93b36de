package audit_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// chainBatch is how many events each iteration of BenchmarkChainer chains.
const chainBatch = 20_000

// BenchmarkChainer measures what chaining costs per event, end to end: a
// feed with the chainer alone (audit.Chainer: the link, and the tree
// hashes of its leaf) catching up with chainBatch events of one tenant
// recorded at once, on a real database. It reports us/event; run it at
// two commits for a before/after (docs/BENCHMARKS.md).
func BenchmarkChainer(b *testing.B) {
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	pool := pgtest.Connect(b, url)
	readerCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	readerCfg.ConnConfig.RuntimeParams["application_name"] = eventstore.ReaderApplicationName
	reader, err := pgxpool.NewWithConfig(ctx, readerCfg)
	if err != nil {
		b.Fatal(err)
	}
	defer reader.Close()
	store := app.NewStore(pool)
	feed := &eventstore.Feed{Pool: reader, Registry: store.Registry(), Consumers: []eventstore.Consumer{audit.Chainer(nil)},
		PollInterval: time.Millisecond, BatchSize: 500, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	feedCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = feed.Run(feedCtx) }()
	defer func() { stop(); <-done }()

	const tenant = "01JBENCHTENANT000000000000"
	var chained time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
			SELECT 'scope-bench-' || $1::int || '-' || g, 1, 'E' || lpad(($1::int * $2::int + g)::text, 25, '0'), 'RunSucceeded', 1, $3,
				json_build_object('run_id', 'R' || g, 'tenant_id', $3::text, 'scope_id', 'S' || g, 'epoch', 1, 'at', now()),
				json_build_object('actor', 'U', 'tenant_id', $3::text, 'correlation_id', 'R' || g)
			FROM generate_series(1, $2::int) g`, i, chainBatch, tenant); err != nil {
			b.Fatal(err)
		}
		began := time.Now()
		b.StartTimer()
		want := int64((i + 1) * chainBatch)
		deadline := began.Add(5 * time.Minute)
		for {
			var seq int64
			_ = pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM audit_chain_heads WHERE chain = $1`, tenant).Scan(&seq)
			if seq >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("chained %d of %d events after 5 minutes", seq, want)
			}
			time.Sleep(time.Millisecond) // polling a benchmark's progress, not synchronising a test
		}
		chained += time.Since(began)
	}
	b.StopTimer()
	b.ReportMetric(float64(chained.Microseconds())/float64(b.N*chainBatch), "us/event")
}
