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

// runFromHistory folds a run's view from its events in the store: the
// start that created it, the starts answered deduped or scope_busy with
// it, and its lifecycle. found is false when the store has no such run.
func runFromHistory(ctx context.Context, h History, id string) (v RunView, found bool, err error) {
	events, err := h.ReadCorrelated(ctx, id, 100_000)
	if err != nil {
		return RunView{}, false, err
	}
	for _, e := range events {
		payload, err := h.Registry().Decode(e)
		if err != nil {
			return RunView{}, false, fmt.Errorf("run %s from history: %w", id, err)
		}
		switch ev := payload.(type) {
		case domain.StartAccepted:
			if ev.RunID == id {
				v.Run, _ = domain.RunOf(ev)
				v.ScopeID, found = string(ev.ScopeID), true
			}
		case domain.StartBlocked:
			if ev.RunID == id {
				v.Run, _ = domain.RunOf(ev)
				v.ScopeID, found = string(ev.ScopeID), true
			}
		case domain.StartDeduped:
			if ev.RunID == id {
				v.DedupedCount++
			}
		case domain.StartScopeBusy:
			if ev.RunID == id {
				v.ScopeBusyCount++
			}
		case domain.RunEvent:
			if found && ev.Ref().RunID == id {
				v.Run = v.Run.Apply(ev)
				switch end := ev.(type) {
				case domain.RunSucceeded:
					v.Summary, v.Changes = end.Summary, end.Changes
				case domain.RunFailed:
					v.Summary, v.Changes = end.Summary, end.Changes
				}
			}
		}
	}
	return v, found, nil
}
