package projections

import (
	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// queueProjector builds ops_queue: the queued and running work of every
// scope, for queue depth and the age of the oldest queued job.
func queueProjector() Projector {
	return Projector{Name: "queue", Tables: []string{"ops_queue"}, Apply: applyQueue}
}

func applyQueue(b *pgx.Batch, _ eventstore.Event, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted:
		b.Queue(`INSERT INTO ops_queue (run_id, tenant_id, scope_id, type, status, queued_at)
			VALUES ($1, $2, $3, $4, 'queued', $5) ON CONFLICT (run_id) DO NOTHING`,
			ev.RunID, ev.TenantID, string(ev.ScopeID), ev.Type, ev.At)
	case domain.RunStarted:
		b.Queue(`UPDATE ops_queue SET status = 'running', started_at = $2 WHERE run_id = $1`, ev.RunID, ev.At)
	case domain.RunSucceeded, domain.RunFailed, domain.RunCancelled:
		b.Queue(`DELETE FROM ops_queue WHERE run_id = $1`, ev.(domain.RunEvent).Ref().RunID)
	}
}
