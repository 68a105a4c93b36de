package gate

import (
	"context"

	"github.com/opsgate/opsgate/domain"
)

// Waiting is the number of starts queued for the next group transaction.
func (s *Service) Waiting() int { return s.starts.len() }

// CompleteTogether records dones of c in one batch, as the completions'
// batcher does with completions that arrive together, and returns each
// answer.
func (s *Service) CompleteTogether(ctx context.Context, c Claimant, dones []Completion) ([]domain.Run, []bool, []error) {
	batch := make([]*completing, len(dones))
	for i, d := range dones {
		batch[i] = &completing{ctx: ctx, c: c, done: d, ready: make(chan struct{})}
	}
	s.completions.do(batch)
	runs, repeated, errs := make([]domain.Run, len(dones)), make([]bool, len(dones)), make([]error, len(dones))
	for i, item := range batch {
		runs[i], repeated[i], errs[i] = item.run, item.repeated, item.err
	}
	return runs, repeated, errs
}

// SetStartQueue bounds the starts waiting to be decided to n (as
// Config.StartQueue does); call it before the first start.
func (s *Service) SetStartQueue(n int) { s.starts.bound = n }
