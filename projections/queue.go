package projections

import (
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// queuedRun is a row of ops_queue: a run queued or running.
type queuedRun struct {
	RunID     string     `db:"run_id"`
	TenantID  string     `db:"tenant_id"`
	ScopeID   string     `db:"scope_id"`
	Type      string     `db:"type"`
	Status    string     `db:"status"`
	QueuedAt  time.Time  `db:"queued_at"`
	StartedAt *time.Time `db:"started_at"`
}

// opsQueue and the columns a claim updates.
var (
	opsQueue        = newTable[queuedRun]("ops_queue")
	queuedStatus    = columnOf[string](opsQueue, "status")
	queuedStartedAt = columnOf[*time.Time](opsQueue, "started_at")
)

// queueProjector builds ops_queue: the queued and running work of every
// scope, for queue depth and the age of the oldest queued job.
func queueProjector() Projector {
	return Projector{Name: "queue", Tables: []*table{opsQueue.table},
		Apply: func(w rowWriter, _ eventstore.Event, payload eventstore.Payload) { applyQueue(w, payload) }}
}

func applyQueue(w rowWriter, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted:
		opsQueue.insert(w, &queuedRun{RunID: ev.RunID, TenantID: ev.TenantID, ScopeID: string(ev.ScopeID), Type: ev.Type,
			Status: string(domain.StatusQueued), QueuedAt: ev.At})
	case domain.RunStarted:
		at := ev.At
		opsQueue.update(w, ev.RunID, set(queuedStatus, string(domain.StatusRunning)), set(queuedStartedAt, &at))
	case domain.RunSucceeded, domain.RunFailed, domain.RunCancelled:
		opsQueue.delete(w, ev.(domain.RunEvent).Ref().RunID)
	}
}
