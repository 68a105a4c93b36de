package projections

import (
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// queueProjector builds ops_queue: the queued and running work of every
// scope, for queue depth and the age of the oldest queued job.
func queueProjector() Projector {
	queue := newTable("ops_queue", "run_id", "tenant_id", "scope_id", "type", "status", "queued_at", "started_at")
	return Projector{Name: "queue", Tables: []*table{queue},
		Apply: func(w rowWriter, _ eventstore.Event, payload eventstore.Payload) { applyQueue(w, queue, payload) }}
}

func applyQueue(w rowWriter, queue *table, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted:
		w.Insert(queue, ev.RunID, ev.TenantID, string(ev.ScopeID), ev.Type, string(domain.StatusQueued), ev.At, nil)
	case domain.RunStarted:
		w.Update(queue, ev.RunID, set("status", string(domain.StatusRunning)), set("started_at", ev.At))
	case domain.RunSucceeded, domain.RunFailed, domain.RunCancelled:
		w.Delete(queue, ev.(domain.RunEvent).Ref().RunID)
	}
}
