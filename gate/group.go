package gate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// Group commit. Every start of a process reaches decide through one
// queue: a leader goroutine decides every start waiting at that moment,
// whatever its scope, in a single transaction (a start that finds the
// gate idle is a batch of one), while the starts that arrive meanwhile
// wait for the next one. Each start still gets its own decision, event and
// answer under its scope's lock; the transaction, its round trips, its
// statements (one per kind for the whole batch) and its commit are
// shared. Under load, the batch grows with the number of starts waiting,
// so the cost of a commit is spread over more of them.
//
// A batch whose transaction fails is decided again one scope at a time,
// each in a transaction of its own, so that a failure on one scope fails
// only that scope's starts.
//
// The queue is bounded (Service.SetStartQueue): when more starts arrive
// than the database can decide, the excess is refused at once with
// ErrOverloaded instead of waiting ever longer, so that answers stay
// prompt and the database keeps doing its peak work (deciding, and
// running the runs it accepted) rather than more and more waiting.

// groupWindow bounds how many starts one transaction decides.
const groupWindow = 256

// committer is the process's queue of starts.
type committer struct {
	mu      sync.Mutex
	waiting []*pending
	scopes  map[domain.ScopeID]int // the scopes of the waiting starts, and how many each
	leading bool
}

// submit queues p and waits for its answer.
func (s *Service) submit(ctx context.Context, p *pending) (StartResponse, error) {
	p.done = make(chan struct{})
	c := &s.committer
	c.mu.Lock()
	if s.shed(c, p.scope) {
		c.mu.Unlock()
		return StartResponse{}, ErrOverloaded
	}
	c.waiting = append(c.waiting, p)
	if c.scopes == nil {
		c.scopes = map[domain.ScopeID]int{}
	}
	c.scopes[p.scope]++
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()
	if lead {
		go s.lead()
	}
	select {
	case <-p.done:
		return p.resp, p.err
	case <-ctx.Done():
		return StartResponse{}, ctx.Err()
	}
}

// Load shedding: what a batch costs grows with the number of scopes it
// decides on (a lock, a snapshot, an append and run rows each; more starts
// on a scope add an event each). A start is refused when the queue holds
// startQueue starts, or already holds starts of a quarter as many other
// scopes: the next batch is then as large as one can be while its starts
// are still answered promptly. Starts on a scope already queued join it
// (a hot scope's clicks are never shed for their number).
func (s *Service) shed(c *committer, scope domain.ScopeID) bool {
	if len(c.waiting) >= s.startQueue {
		return true
	}
	return c.scopes[scope] == 0 && len(c.scopes) >= max(1, s.startQueue/4)
}

// lead decides the waiting starts, a window at a time, until none is left.
func (s *Service) lead() {
	c := &s.committer
	for {
		c.mu.Lock()
		n := min(len(c.waiting), groupWindow)
		if n == 0 {
			c.leading = false
			c.waiting = nil
			c.mu.Unlock()
			return
		}
		batch := c.waiting[:n:n]
		c.waiting = c.waiting[n:]
		for _, p := range batch {
			if c.scopes[p.scope]--; c.scopes[p.scope] == 0 {
				delete(c.scopes, p.scope)
			}
		}
		c.mu.Unlock()
		s.decideBatch(batch)
	}
}

// decideBatch decides batch in one transaction of its own, or, if that
// transaction fails, each scope's starts in a transaction of their own;
// a failure of a transaction is every start's in it that did not fail on
// its own.
func (s *Service) decideBatch(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.decideIn(ctx, batch)
	if parts := byScope(batch); err != nil && len(parts) > 1 && !errors.Is(err, context.DeadlineExceeded) && !eventstore.IsUnavailable(err) {
		for _, part := range parts {
			s.answer(part, s.decideIn(ctx, part))
		}
		return
	}
	s.answer(batch, err)
}

// decideIn decides batch in one transaction.
func (s *Service) decideIn(ctx context.Context, batch []*pending) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		for _, p := range batch {
			p.resp, p.err = StartResponse{}, nil
		}
		return s.decide(ctx, tx, batch)
	})
}

// answer releases the starts of batch, with err for those that did not
// fail on their own.
func (s *Service) answer(batch []*pending, err error) {
	for _, p := range batch {
		if err != nil && p.err == nil {
			p.resp, p.err = StartResponse{}, err
		}
		close(p.done)
	}
}

// byScope splits batch by scope, keeping the order of each scope's starts.
func byScope(batch []*pending) [][]*pending {
	var scopes []domain.ScopeID
	parts := map[domain.ScopeID][]*pending{}
	for _, p := range batch {
		if !slices.Contains(scopes, p.scope) {
			scopes = append(scopes, p.scope)
		}
		parts[p.scope] = append(parts[p.scope], p)
	}
	out := make([][]*pending, len(scopes))
	for i, scope := range scopes {
		out[i] = parts[scope]
	}
	return out
}
