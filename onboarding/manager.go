package onboarding

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// ManagerConsumer is the process manager's checkpoint.
const ManagerConsumer = "onboarding.bootstrap"

// Manager returns the bootstrap process manager as a consumer of the event
// log: it reacts to the end of admitted bootstrap runs by starting the
// session's next item (or recording its end). Its work happens in
// transactions of its own, through the gate; the feed's transaction only
// moves its checkpoint, so a batch delivered again is handled again, which
// the session's state makes harmless.
func (s *Service) Manager() eventstore.Consumer {
	return eventstore.Consumer{Name: ManagerConsumer, Apply: func(ctx context.Context, _ *pgx.Batch, events []eventstore.Delivery) error {
		var ends []domain.RunEvent
		var ids []string
		for _, d := range events {
			switch e := d.Payload.(type) {
			case domain.RunSucceeded, domain.RunFailed, domain.RunCancelled:
				ends = append(ends, e.(domain.RunEvent))
				ids = append(ids, e.(domain.RunEvent).Ref().RunID)
			}
		}
		if len(ends) == 0 {
			return nil
		}
		// One look for the whole batch: most runs are not bootstrap runs.
		found, err := bootstrapRunsAmong(ctx, s.db, ids)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return nil
		}
		for _, end := range ends { // in the order they happened
			if !slices.Contains(found, end.Ref().RunID) {
				continue
			}
			var err error
			switch ev := end.(type) {
			case domain.RunSucceeded:
				err = s.OnRunEnded(ctx, ev.RunID, domain.StatusSucceeded, nil)
			case domain.RunFailed:
				err = s.OnRunEnded(ctx, ev.RunID, domain.StatusFailed, &ev.Reason)
			case domain.RunCancelled:
				err = s.OnRunEnded(ctx, ev.RunID, domain.StatusCancelled, &ev.Reason)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}}
}
