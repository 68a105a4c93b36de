package projections

import (
	"encoding/json"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// opsRun is a row of ops_runs: a run, blocked runs included, with the
// counts of later starts answered deduped or scope_busy with it.
type opsRun struct {
	ID                string     `db:"id"`
	TenantID          string     `db:"tenant_id"`
	ScopeID           string     `db:"scope_id"`
	Type              string     `db:"type"`
	CanonicalType     string     `db:"canonical_type"`
	Label             string     `db:"label"`
	Status            string     `db:"status"`
	Outcome           string     `db:"outcome"`
	Target            *string    `db:"target"`
	ConnectionID      *string    `db:"connection_id"`
	ConnectionName    *string    `db:"connection_name"`
	Provider          *string    `db:"provider"`
	InitiatorID       string     `db:"initiator_id"`
	Surface           string     `db:"surface"`
	ReasonCode        *string    `db:"reason_code"`
	ReasonClass       *string    `db:"reason_class"`
	ReasonMessage     *string    `db:"reason_message"`
	CreatedAt         time.Time  `db:"created_at"`
	StartedAt         *time.Time `db:"started_at"`
	FinishedAt        *time.Time `db:"finished_at"`
	DedupedCount      int        `db:"deduped_count"`
	ScopeBusyCount    int        `db:"scope_busy_count"`
	LastPosition      int64      `db:"last_position"`
	Summary           []byte     `db:"summary"`            // JSON, nil for none
	ConnectionChanges []byte     `db:"connection_changes"` // JSON, nil for none
	ClaimBy           *time.Time `db:"claim_by"`
	FinishBy          *time.Time `db:"finish_by"`
	RerunOf           *string    `db:"rerun_of"`
	InitiatedVia      *string    `db:"initiated_via"` // the integration the start came through
}

// opsRuns and the columns the lifecycle of a run updates.
var (
	opsRuns              = newTable[opsRun]("ops_runs")
	runStatus            = columnOf[string](opsRuns, "status")
	runReasonCode        = columnOf[*string](opsRuns, "reason_code")
	runReasonClass       = columnOf[*string](opsRuns, "reason_class")
	runReasonMessage     = columnOf[*string](opsRuns, "reason_message")
	runStartedAt         = columnOf[*time.Time](opsRuns, "started_at")
	runFinishedAt        = columnOf[*time.Time](opsRuns, "finished_at")
	runDedupedCount      = columnOf[int](opsRuns, "deduped_count")
	runScopeBusyCount    = columnOf[int](opsRuns, "scope_busy_count")
	runLastPosition      = columnOf[int64](opsRuns, "last_position")
	runSummary           = columnOf[[]byte](opsRuns, "summary")
	runConnectionChanges = columnOf[[]byte](opsRuns, "connection_changes")
	runFinishBy          = columnOf[*time.Time](opsRuns, "finish_by")
)

// operationsProjector builds ops_runs: one row per run, blocked runs
// included, with the counts of later starts answered deduped or
// scope_busy with it.
func operationsProjector() Projector {
	return Projector{Name: "operations", Tables: []*table{opsRuns.table}, Apply: applyOperations}
}

func applyOperations(w rowWriter, e eventstore.Event, payload eventstore.Payload) {
	switch ev := payload.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, _ := domain.RunOf(ev)
		row := runRow(run, domain.OutcomeOf(ev), e.Position)
		if start, _ := domain.StartOf(ev); start.InitiatedVia != "" {
			via := start.InitiatedVia
			row.InitiatedVia = &via
		}
		opsRuns.insert(w, row)
	case domain.StartDeduped:
		opsRuns.update(w, ev.RunID, increment(runDedupedCount), set(runLastPosition, e.Position))
	case domain.StartScopeBusy:
		opsRuns.update(w, ev.RunID, increment(runScopeBusyCount), set(runLastPosition, e.Position))
	case domain.RunStarted:
		at := ev.At
		opsRuns.update(w, ev.RunID, set(runStatus, string(domain.StatusRunning)), set(runStartedAt, &at),
			set(runFinishBy, ev.FinishBy), set(runLastPosition, e.Position))
	case domain.RunSucceeded:
		finishRun(w, ev.RunID, domain.StatusSucceeded, nil, ev.At, e.Position, set(runSummary, jsonOrNil(ev.Summary)),
			set(runConnectionChanges, marshalOrNil(ev.Changes)))
	case domain.RunFailed:
		finishRun(w, ev.RunID, domain.StatusFailed, &ev.Reason, ev.At, e.Position, set(runSummary, jsonOrNil(ev.Summary)),
			set(runConnectionChanges, marshalOrNil(ev.Changes)))
	case domain.RunCancelled:
		finishRun(w, ev.RunID, domain.StatusCancelled, &ev.Reason, ev.At, e.Position)
	}
}

// runRow is the row of run r as its decision (outcome) left it.
func runRow(r domain.Run, outcome domain.Outcome, position int64) *opsRun {
	row := &opsRun{ID: r.ID, TenantID: r.TenantID, ScopeID: string(domain.TenantScope(r.TenantID)), Type: r.Type,
		CanonicalType: r.CanonicalType, Label: r.Label, Status: string(r.Status), Outcome: string(outcome), Target: r.Target,
		InitiatorID: r.InitiatorID, Surface: r.Surface, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		LastPosition: position, RerunOf: r.RerunOf}
	if d := r.Deadlines; d != nil {
		row.ClaimBy, row.FinishBy = &d.ClaimBy, d.FinishBy
	}
	if c := r.ProviderConnection; c != nil {
		row.ConnectionID, row.ConnectionName, row.Provider = &c.ID, &c.DisplayName, &c.Provider
		row.ScopeID = string(domain.ConnectionScope(c.ID))
	}
	row.ReasonCode, row.ReasonClass, row.ReasonMessage = reasonColumns(r.Reason)
	return row
}

func finishRun(w rowWriter, id string, status domain.RunStatus, reason *domain.Reason, at time.Time, position int64, more ...assignment[opsRun]) {
	code, class, msg := reasonColumns(reason)
	opsRuns.update(w, id, append([]assignment[opsRun]{set(runStatus, string(status)), set(runReasonCode, code),
		set(runReasonClass, class), set(runReasonMessage, msg), set(runFinishedAt, &at), set(runLastPosition, position)}, more...)...)
}

// jsonOrNil is a jsonb value: the JSON, or NULL (nil) for none.
func jsonOrNil(raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return nil
	}
	return []byte(raw)
}

// marshalOrNil is v as a jsonb value, NULL (nil) for nil.
func marshalOrNil[T any](v *T) []byte {
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
