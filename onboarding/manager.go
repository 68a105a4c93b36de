package onboarding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// ManagerConsumerGroup is the process manager's consumer group.
const ManagerConsumerGroup = "onboarding.bootstrap"

// RunManager runs the bootstrap process manager until ctx ends: it reads
// every event and reacts to the end of admitted bootstrap runs.
func (s *Service) RunManager(ctx context.Context, pool *pgxpool.Pool, wake <-chan struct{}, poll time.Duration, logger *slog.Logger) error {
	sub, err := eventstore.NewSubscriber(pool, eventstore.SubscriberConfig{
		ConsumerGroup: ManagerConsumerGroup, PollInterval: poll, Wake: wake, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, eventstore.TopicEvents)
	if err != nil {
		return fmt.Errorf("onboarding: subscribe: %w", err)
	}
	for msg := range msgs {
		if err := s.handle(ctx, msg); err != nil {
			if ctx.Err() == nil {
				logger.Error("bootstrap step failed; will be retried", "err", err)
			}
			msg.Nack()
			continue
		}
		msg.Ack()
	}
	return ctx.Err()
}

// handle reacts to the end of a run. The message's metadata names the
// event's type, so that every other event is passed over unread (a
// message without it is read, and passed over by the switch below).
func (s *Service) handle(ctx context.Context, msg *message.Message) error {
	switch eventstore.MessageType(msg) {
	case "RunSucceeded", "RunFailed", "RunCancelled", "":
	default:
		return nil
	}
	_, payload, err := s.store.Registry().DecodeMessage(msg)
	if errors.Is(err, eventstore.ErrUnknownEventType) {
		return nil
	}
	if err != nil {
		return err
	}
	switch ev := payload.(type) {
	case domain.RunSucceeded:
		return s.OnRunEnded(ctx, ev.RunID, domain.StatusSucceeded, nil)
	case domain.RunFailed:
		return s.OnRunEnded(ctx, ev.RunID, domain.StatusFailed, &ev.Reason)
	case domain.RunCancelled:
		return s.OnRunEnded(ctx, ev.RunID, domain.StatusCancelled, &ev.Reason)
	}
	return nil
}
