package projections

import (
	"context"
	"fmt"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// History is the event store as a Reader reads it when the projections
// are late: the events of one run, and how to decode them.
type History interface {
	ReadCorrelated(ctx context.Context, correlationID string, limit int) ([]eventstore.Event, error)
	Registry() *eventstore.Registry
}

// runFromHistory folds a run's view from its events in the store. found
// is false when the store has no such run.
func runFromHistory(ctx context.Context, h History, id string) (v RunView, found bool, err error) {
	events, err := h.ReadCorrelated(ctx, id, 100_000)
	if err != nil {
		return RunView{}, false, err
	}
	f := RunFold{ID: id}
	for _, e := range events {
		payload, err := h.Registry().Decode(e)
		if err != nil {
			return RunView{}, false, fmt.Errorf("run %s from history: %w", id, err)
		}
		f.Add(payload)
	}
	return f.View, f.Found, nil
}

// RunFold folds run ID's view from events given in commit order: the
// start that created it, the starts answered deduped or scope_busy with
// it, and its lifecycle. Events of other runs are skipped. The Reader's
// fallback and the auditors' as_of read both fold with it.
type RunFold struct {
	ID    string
	View  RunView
	Found bool // the start that created the run has been folded
}

// Add folds one decoded event.
func (f *RunFold) Add(payload any) {
	if e, ok := payload.(domain.Event); ok {
		if run, ok := domain.RunOf(e); ok && run.ID == f.ID {
			start, _ := domain.StartOf(e)
			f.View.Run, f.View.ScopeID, f.View.InitiatedVia, f.Found = run, string(start.ScopeID), start.InitiatedVia, true
			return
		}
	}
	switch ev := payload.(type) {
	case domain.StartDeduped:
		if ev.RunID == f.ID {
			f.View.DedupedCount++
		}
	case domain.StartScopeBusy:
		if ev.RunID == f.ID {
			f.View.ScopeBusyCount++
		}
	case domain.RunEvent:
		if f.Found && ev.Ref().RunID == f.ID {
			f.View.Run = f.View.Run.Apply(ev)
			switch end := ev.(type) {
			case domain.RunSucceeded:
				f.View.Summary, f.View.Changes = end.Summary, end.Changes
			case domain.RunFailed:
				f.View.Summary, f.View.Changes = end.Summary, end.Changes
			}
		}
	}
}
