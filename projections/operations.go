package projections

import (
	"encoding/json"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// operationsProjector builds ops_runs: one row per run, blocked runs
// included, with the counts of later starts answered deduped or
// scope_busy with it.
func operationsProjector() Projector {
	runs := newTable("ops_runs", "id", "tenant_id", "scope_id", "type", "canonical_type", "label", "status", "outcome",
		"target", "connection_id", "connection_name", "provider", "initiator_id", "surface",
		"reason_code", "reason_class", "reason_message", "created_at", "started_at", "finished_at",
		"deduped_count", "scope_busy_count", "last_position", "summary", "connection_changes")
	return Projector{Name: "operations", Tables: []*table{runs},
		Apply: func(w rowWriter, e eventstore.Event, payload eventstore.Payload) {
			applyOperations(w, runs, e, payload)
		}}
}

func applyOperations(w rowWriter, runs *table, e eventstore.Event, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, _ := domain.RunOf(ev)
		insertRun(w, runs, run, domain.OutcomeOf(ev), e.Position)
	case domain.StartDeduped:
		w.Update(runs, ev.RunID, increment("deduped_count"), set("last_position", e.Position))
	case domain.StartScopeBusy:
		w.Update(runs, ev.RunID, increment("scope_busy_count"), set("last_position", e.Position))
	case domain.RunStarted:
		w.Update(runs, ev.RunID, set("status", string(domain.StatusRunning)), set("started_at", ev.At), set("last_position", e.Position))
	case domain.RunSucceeded:
		finishRun(w, runs, ev.RunID, domain.StatusSucceeded, nil, ev.At, e.Position, set("summary", jsonOrNil(ev.Summary)),
			set("connection_changes", marshalOrNil(ev.Changes)))
	case domain.RunFailed:
		finishRun(w, runs, ev.RunID, domain.StatusFailed, &ev.Reason, ev.At, e.Position, set("summary", jsonOrNil(ev.Summary)),
			set("connection_changes", marshalOrNil(ev.Changes)))
	case domain.RunCancelled:
		finishRun(w, runs, ev.RunID, domain.StatusCancelled, &ev.Reason, ev.At, e.Position)
	}
}

func insertRun(w rowWriter, runs *table, r domain.Run, outcome domain.Outcome, position int64) {
	var connID, connName, provider *string
	if c := r.ProviderConnection; c != nil {
		connID, connName, provider = &c.ID, &c.DisplayName, &c.Provider
	}
	code, class, msg := reasonColumns(r.Reason)
	scope := domain.TenantScope(r.TenantID)
	if connID != nil {
		scope = domain.ConnectionScope(*connID)
	}
	w.Insert(runs, r.ID, r.TenantID, string(scope), r.Type, r.CanonicalType, r.Label, string(r.Status), string(outcome), r.Target,
		connID, connName, provider, r.InitiatorID, r.Surface, code, class, msg,
		r.CreatedAt, r.StartedAt, r.FinishedAt, 0, 0, position, nil, nil)
}

func finishRun(w rowWriter, runs *table, id string, status domain.RunStatus, reason *domain.Reason, at any, position int64, more ...assignment) {
	code, class, msg := reasonColumns(reason)
	w.Update(runs, id, append([]assignment{set("status", string(status)), set("reason_code", code), set("reason_class", class),
		set("reason_message", msg), set("finished_at", at), set("last_position", position)}, more...)...)
}

// jsonOrNil is a jsonb value: the JSON, or NULL for none.
func jsonOrNil(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return []byte(raw)
}

// marshalOrNil is v as a jsonb value, NULL for nil.
func marshalOrNil[T any](v *T) any {
	if v == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	return b
}

func reasonColumns(reason *domain.Reason) (code, class, msg *string) {
	if reason == nil {
		return nil, nil, nil
	}
	c, cl := string(reason.Code), string(reason.Class)
	return &c, &cl, &reason.Message
}
