package projections

import (
	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// operationsProjector builds ops_runs: one row per run, blocked runs
// included, with the counts of later starts answered deduped or
// scope_busy with it.
func operationsProjector() Projector {
	return Projector{Name: "operations", Tables: []string{"ops_runs"}, Apply: applyOperations}
}

func applyOperations(b *pgx.Batch, e eventstore.Event, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, _ := domain.RunOf(ev)
		insertRun(b, run, domain.OutcomeOf(ev), e.Position)
	case domain.StartDeduped:
		b.Queue(`UPDATE ops_runs SET deduped_count = deduped_count + 1, last_position = $2 WHERE id = $1`, ev.RunID, e.Position)
	case domain.StartScopeBusy:
		b.Queue(`UPDATE ops_runs SET scope_busy_count = scope_busy_count + 1, last_position = $2 WHERE id = $1`, ev.RunID, e.Position)
	case domain.RunStarted:
		b.Queue(`UPDATE ops_runs SET status = 'running', started_at = $2, last_position = $3 WHERE id = $1`, ev.RunID, ev.At, e.Position)
	case domain.RunSucceeded:
		finishRun(b, ev.RunID, domain.StatusSucceeded, nil, ev.At, e.Position)
	case domain.RunFailed:
		finishRun(b, ev.RunID, domain.StatusFailed, &ev.Reason, ev.At, e.Position)
	case domain.RunCancelled:
		finishRun(b, ev.RunID, domain.StatusCancelled, &ev.Reason, ev.At, e.Position)
	}
}

func insertRun(b *pgx.Batch, r domain.Run, outcome domain.Outcome, position int64) {
	var connID, connName, provider *string
	if c := r.ProviderConnection; c != nil {
		connID, connName, provider = &c.ID, &c.DisplayName, &c.Provider
	}
	var code, class, msg *string
	if r.Reason != nil {
		c, cl := string(r.Reason.Code), string(r.Reason.Class)
		code, class, msg = &c, &cl, &r.Reason.Message
	}
	scope := domain.TenantScope(r.TenantID)
	if connID != nil {
		scope = domain.ConnectionScope(*connID)
	}
	b.Queue(`INSERT INTO ops_runs (id, tenant_id, scope_id, type, canonical_type, label, status, outcome, target,
		connection_id, connection_name, provider, initiator_id, surface, reason_code, reason_class, reason_message,
		created_at, started_at, finished_at, last_position)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		ON CONFLICT (id) DO NOTHING`,
		r.ID, r.TenantID, string(scope), r.Type, r.CanonicalType, r.Label, string(r.Status), string(outcome), r.Target,
		connID, connName, provider, r.InitiatorID, r.Surface, code, class, msg,
		r.CreatedAt, r.StartedAt, r.FinishedAt, position)
}

func finishRun(b *pgx.Batch, id string, status domain.RunStatus, reason *domain.Reason, at any, position int64) {
	var code, class, msg *string
	if reason != nil {
		c, cl := string(reason.Code), string(reason.Class)
		code, class, msg = &c, &cl, &reason.Message
	}
	b.Queue(`UPDATE ops_runs SET status = $2, reason_code = $3, reason_class = $4, reason_message = $5,
		finished_at = $6, last_position = $7 WHERE id = $1`, id, string(status), code, class, msg, at, position)
}
