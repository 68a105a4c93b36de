package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// notificationsProjector builds ops_notifications: one per terminal
// outcome of an accepted run, addressed to its initiator alone. It keeps
// what it needs of each active run in notify_runs, its own table, so it
// never depends on another projector's progress.
func notificationsProjector() Projector {
	return Projector{Name: "notifications", Tables: []string{"ops_notifications", "notify_runs"}, Apply: applyNotifications}
}

func applyNotifications(ctx context.Context, tx pgx.Tx, e eventstore.Event, payload eventstore.Payload) error {
	switch ev := payload.(type) {
	case domain.StartAccepted:
		run, _ := domain.RunOf(ev)
		body, err := json.Marshal(run)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO notify_runs (run_id, run) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING`, ev.RunID, body)
		return err
	case domain.RunStarted:
		return updateNotifyRun(ctx, tx, ev, false)
	case domain.RunSucceeded, domain.RunFailed, domain.RunCancelled:
		return updateNotifyRun(ctx, tx, ev.(domain.RunEvent), true)
	}
	return nil
}

func updateNotifyRun(ctx context.Context, tx pgx.Tx, ev domain.RunEvent, terminal bool) error {
	id := ev.Ref().RunID
	var body []byte
	err := tx.QueryRow(ctx, `SELECT run FROM notify_runs WHERE run_id = $1`, id).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // a run this projector never saw accepted (history began later)
	}
	if err != nil {
		return fmt.Errorf("load run %s: %w", id, err)
	}
	var run domain.Run
	if err := json.Unmarshal(body, &run); err != nil {
		return fmt.Errorf("decode run %s: %w", id, err)
	}
	run = run.Apply(ev)
	if !terminal {
		body, _ = json.Marshal(run)
		_, err = tx.Exec(ctx, `UPDATE notify_runs SET run = $2 WHERE run_id = $1`, id, body)
		return err
	}
	msg, steps := domain.PresentRun(run)
	stepsJSON, _ := json.Marshal(steps)
	var reason []byte
	if run.Reason != nil {
		reason, _ = json.Marshal(run.Reason)
	}
	eventID := notificationID(ev)
	_, err = tx.Exec(ctx, `INSERT INTO ops_notifications (id, user_id, tenant_id, run_id, status, title, body, tone, next_steps, reason, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
		eventID, run.InitiatorID, run.TenantID, run.ID, string(run.Status), msg.Title, msg.Body, string(msg.Tone), stepsJSON, reason, run.FinishedAt)
	if err != nil {
		return fmt.Errorf("insert notification for run %s: %w", id, err)
	}
	_, err = tx.Exec(ctx, `DELETE FROM notify_runs WHERE run_id = $1`, id)
	return err
}

// notificationID is the run's id: one terminal outcome per run, so one
// notification per run.
func notificationID(ev domain.RunEvent) string { return ev.Ref().RunID }
