package onboarding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pg"
)

// The onboarding tables and their SQL: onboarding_sessions holds each
// session's state as its events fold it (Session.Apply), and
// bootstrap_runs maps each run a session admitted to the session and item,
// for the process manager. Both are written only by record, from the
// session's events, in their transaction.

// save writes sess, as changed at at by events, to its row (inserting the
// row for a new session), and maps the runs the events admitted.
func save(ctx context.Context, tx *eventstore.Tx, sess Session, at time.Time, events []domain.Event) error {
	body, err := json.Marshal(sess)
	if err != nil {
		return fmt.Errorf("save session %s: %w", sess.ID, err)
	}
	tx.Defer(`INSERT INTO onboarding_sessions (id, tenant_id, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
		sess.ID, sess.TenantID, body, sess.CreatedAt, at)
	for _, e := range events {
		if a, ok := e.(domain.BootstrapItemAttempted); ok && a.Outcome == domain.OutcomeAccepted {
			tx.Defer(`INSERT INTO bootstrap_runs (run_id, session_id, item_index) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				a.RunID, a.SessionID, a.Index)
		}
	}
	return nil
}

// load returns session id as q sees it, domain.ErrNotFound if none.
func load(ctx context.Context, q pg.Querier, id string) (Session, error) {
	var body []byte
	err := q.QueryRow(ctx, `SELECT state FROM onboarding_sessions WHERE id = $1`, id).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, domain.ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("load session %s: %w", id, err)
	}
	var sess Session
	if err := json.Unmarshal(body, &sess); err != nil {
		return Session{}, fmt.Errorf("decode session %s: %w", id, err)
	}
	return sess, nil
}

// listSessions returns up to limit sessions of tenantID, newest first.
func listSessions(ctx context.Context, q pg.Querier, tenantID string, limit int) ([]Session, error) {
	rows, err := q.Query(ctx, `SELECT state FROM onboarding_sessions WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, tenantID, limit)
	if err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", tenantID, err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Session, error) {
		var body []byte
		var sess Session
		if err := row.Scan(&body); err != nil {
			return sess, err
		}
		return sess, json.Unmarshal(body, &sess)
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", tenantID, err)
	}
	return list, nil
}

// bootstrapRun returns the session and item that admitted runID
// (pgx.ErrNoRows: it is not a bootstrap run).
func bootstrapRun(ctx context.Context, q pg.Querier, runID string) (sessionID string, item int, err error) {
	err = q.QueryRow(ctx, `SELECT session_id, item_index FROM bootstrap_runs WHERE run_id = $1`, runID).Scan(&sessionID, &item)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", 0, fmt.Errorf("look up bootstrap run %s: %w", runID, err)
	}
	return sessionID, item, err
}

// bootstrapRunsAmong returns those of the runs ids that a session
// admitted.
func bootstrapRunsAmong(ctx context.Context, q pg.Querier, ids []string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT run_id FROM bootstrap_runs WHERE run_id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("look up bootstrap runs: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up bootstrap runs: %w", err)
	}
	return found, nil
}
