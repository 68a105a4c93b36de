package webhooks

import (
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/journal"
)

// Topic is announced when deliveries are queued: dispatchers wait for it.
const Topic = "webhook_deliveries"

// FanOut queues a delivery of each change to each enabled endpoint of its
// tenant's workspace that subscribes to its type, in the changes
// consumer's transaction (changes.FanOut): a change is queued exactly
// once per endpoint, and only to its own workspace's endpoints.
type FanOut struct {
	// subscribed maps a tenant to the endpoints of its workspace, as read
	// by Read in the transaction Queue then works in.
	subscribed map[string][]subscriber
}

type subscriber struct {
	id    string
	types []string
}

// Read queues the read of the enabled endpoints of tenants' workspaces,
// which replaces what an earlier read read.
func (f *FanOut) Read(b *pgx.Batch, tenants []string) {
	f.subscribed = map[string][]subscriber{}
	if len(tenants) == 0 {
		return
	}
	b.Queue(`SELECT t.id, e.id, e.types FROM tenants t
		JOIN webhook_endpoints e ON e.workspace_id = t.workspace_id WHERE t.id = ANY($1) AND e.enabled`, tenants).Query(func(rows pgx.Rows) error {
		var tenant string
		var s subscriber
		_, err := pgx.ForEachRow(rows, []any{&tenant, &s.id, &s.types}, func() error {
			f.subscribed[tenant] = append(f.subscribed[tenant], s)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read webhook endpoints: %w", err)
		}
		return nil
	})
}

// Queue queues the first attempt of each delivery, due now.
func (f *FanOut) Queue(b *pgx.Batch, list []changes.Change) []string {
	var ids, endpoints, messages, types []string
	for _, c := range list {
		for _, s := range f.subscribed[c.TenantID] {
			if s.types != nil && !slices.Contains(s.types, c.Type) {
				continue
			}
			ids, endpoints = append(ids, journal.NewID()), append(endpoints, s.id)
			messages, types = append(messages, c.ID), append(types, c.Type)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	b.Queue(`INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, attempt, state, next_attempt_at, created_at)
		SELECT id, endpoint_id, message_id, type, 1, 'pending', now(), now()
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS d (id, endpoint_id, message_id, type)`,
		ids, endpoints, messages, types)
	return []string{Topic}
}
