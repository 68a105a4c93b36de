package changes_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/webhooks"
)

// TestFanOutOfAnEventWhoseMetadataNamesNoTenant: the consumer reads the
// endpoints of the tenants the events' metadata name with the subjects;
// a change whose event names none is still queued to its tenant's
// endpoint, and only there.
func TestFanOutOfAnEventWhoseMetadataNamesNoTenant(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t, apptest.Roles(app.Roles{}), apptest.Configure(func(c *config.Config) { c.WebhookAllowPrivate = true }))
	ctx := context.Background()
	ws, other := a.Workspace(t, "Contoso MSP"), a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Fabrikam")
	hook, err := a.Webhooks.Create(ctx, ws.ID, "http://127.0.0.1:9/hook", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := a.Webhooks.Create(ctx, other.ID, "http://127.0.0.1:9/other", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	feed := &eventstore.Feed{Pool: a.ReaderPool, Registry: a.Store.Registry(), PollInterval: 20 * time.Millisecond,
		Consumers: []eventstore.Consumer{changes.Consumer(&webhooks.FanOut{}, nil)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	feedCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = feed.Run(feedCtx) }()
	t.Cleanup(func() { stop(); <-done })

	// The feed has read what came before (the tenant's own events, which
	// name it), so that the run's event is a batch of its own.
	apptest.WaitFor(t, 10*time.Second, "the feed caught up", func() bool {
		var caughtUp bool
		if err := a.Pool.QueryRow(ctx, `SELECT position = (SELECT max(position) FROM events) FROM feed_checkpoints WHERE consumer = $1`,
			changes.ConsumerName).Scan(&caughtUp); err != nil {
			return false
		}
		return caughtUp
	})
	runID := journal.NewID()
	start := domain.StartInfo{TenantID: tenant.ID, ScopeID: "connection:C1", Type: "inventory.sync", CanonicalType: "inventory.sync",
		Label: "Inventory sync", Surface: "inventory_sync", InitiatorID: "U1"}
	scope := domain.ScopeID("connection:C1")
	err = a.Store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		return journal.Append(ctx, tx, scope.Stream(), journal.Meta(domain.Actor{ID: "U1"}, "", runID),
			domain.StartAccepted{RunID: runID, StartInfo: start, At: time.Now().UTC()})
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func(endpoint string) (n int) {
		if err := a.Pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries d JOIN changes c ON c.id = d.message_id
			WHERE d.endpoint_id = $1 AND c.run_id = $2`, endpoint, runID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	apptest.WaitFor(t, 10*time.Second, "the run's change queued to its workspace's endpoint", func() bool { return count(hook.ID) > 0 })
	if n := count(hook.ID); n != 1 {
		t.Errorf("%d deliveries of the change to its workspace's endpoint, want 1", n)
	}
	if n := count(elsewhere.ID); n != 0 {
		t.Errorf("%d deliveries of the change to another workspace's endpoint, want 0", n)
	}
}
