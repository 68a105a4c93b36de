package projections

import (
	"encoding/json"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// notificationsProjector builds ops_notifications: one per terminal
// outcome of an accepted run, addressed to its initiator alone, worded by
// the presenter. Terminal events carry the whole run, so it reads nothing.
func notificationsProjector() Projector {
	notifications := newTable("ops_notifications", "id", "user_id", "tenant_id", "run_id", "status", "title", "body",
		"tone", "next_steps", "reason", "created_at")
	return Projector{Name: "notifications", Tables: []*table{notifications},
		Apply: func(w rowWriter, _ eventstore.Event, payload eventstore.Payload) {
			applyNotifications(w, notifications, payload)
		}}
}

func applyNotifications(w rowWriter, notifications *table, payload eventstore.Payload) {
	ev, ok := payload.(domain.RunEvent)
	if !ok {
		return
	}
	run, ok := domain.Ended(ev)
	if !ok {
		return
	}
	msg, steps := domain.PresentRun(run)
	stepsJSON, _ := json.Marshal(steps)
	var reason []byte
	if run.Reason != nil {
		reason, _ = json.Marshal(run.Reason)
	}
	// One terminal outcome per run, so the run's id names its notification.
	w.Insert(notifications, run.ID, run.InitiatorID, run.TenantID, run.ID, string(run.Status), msg.Title, msg.Body,
		string(msg.Tone), stepsJSON, reason, run.FinishedAt)
}
