package projections

import (
	"encoding/json"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// notification is a row of ops_notifications: the terminal outcome of a
// run, for its initiator, in the presenter's words.
type notification struct {
	ID        string    `db:"id"`
	UserID    string    `db:"user_id"`
	TenantID  string    `db:"tenant_id"`
	RunID     string    `db:"run_id"`
	Status    string    `db:"status"`
	Title     string    `db:"title"`
	Body      string    `db:"body"`
	Tone      string    `db:"tone"`
	NextSteps []byte    `db:"next_steps"` // JSON
	Reason    []byte    `db:"reason"`     // JSON, nil for none
	CreatedAt time.Time `db:"created_at"`
}

var opsNotifications = newTable[notification]("ops_notifications")

// notificationsProjector builds ops_notifications: one per terminal
// outcome of an accepted run, addressed to its initiator alone, worded by
// the presenter. Terminal events carry the whole run, so it reads nothing.
func notificationsProjector() Projector {
	return Projector{Name: "notifications", Tables: []*table{opsNotifications.table},
		Apply: func(w rowWriter, _ eventstore.Event, payload eventstore.Payload) { applyNotifications(w, payload) }}
}

func applyNotifications(w rowWriter, payload eventstore.Payload) {
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
	opsNotifications.insert(w, &notification{ID: run.ID, UserID: run.InitiatorID, TenantID: run.TenantID, RunID: run.ID,
		Status: string(run.Status), Title: msg.Title, Body: msg.Body, Tone: string(msg.Tone), NextSteps: stepsJSON,
		Reason: reason, CreatedAt: *run.FinishedAt})
}
