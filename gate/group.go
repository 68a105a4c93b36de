package gate

import (
	"context"
	"sync"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// Starts on a hot scope queue for its lock, and the lock is held for a
// whole decision transaction. Within one process, starts therefore reach
// decide through a per-scope group: one goroutine (the leader) decides
// every start waiting on the scope at that moment in a single
// transaction, and a start that finds the scope idle is a batch of one.
// Each start still gets its own decision, event and answer; only the
// transaction, the locks and the commit are shared.

// groupWindow bounds how many starts one group transaction decides.
const groupWindow = 256

type scopeGroup struct {
	mu      sync.Mutex
	waiting []*pending
	leading bool
}

// submit hands p to its scope's group and waits for its answer.
func (s *Service) submit(ctx context.Context, p *pending) (StartResponse, error) {
	p.done = make(chan struct{})
	v, _ := s.groups.LoadOrStore(p.scope, &scopeGroup{})
	g := v.(*scopeGroup)
	g.mu.Lock()
	g.waiting = append(g.waiting, p)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if lead {
		go s.lead(g, p.scope)
	}
	select {
	case <-p.done:
		return p.resp, p.err
	case <-ctx.Done():
		return StartResponse{}, ctx.Err()
	}
}

// lead decides the group's waiting starts, a window at a time, until
// none is left.
func (s *Service) lead(g *scopeGroup, scope domain.ScopeID) {
	for {
		g.mu.Lock()
		n := min(len(g.waiting), groupWindow)
		if n == 0 {
			g.leading = false
			// Forget the idle group so that the map does not grow with every
			// scope ever used. A start that still holds g becomes its leader;
			// one that looks the scope up anew makes a new group. Two groups
			// of one scope are only less efficient: the scope's lock keeps
			// their decisions apart.
			s.groups.CompareAndDelete(scope, g)
			g.mu.Unlock()
			return
		}
		batch := g.waiting[:n:n]
		g.waiting = g.waiting[n:]
		g.mu.Unlock()
		s.decideGroup(batch)
	}
}

// decideGroup decides batch in one transaction of its own; a failure of
// the transaction is every start's that did not fail on its own.
func (s *Service) decideGroup(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		for _, p := range batch {
			p.resp, p.err = StartResponse{}, nil
		}
		return s.decide(ctx, tx, batch[0].scope, batch)
	})
	for _, p := range batch {
		if err != nil && p.err == nil {
			p.resp, p.err = StartResponse{}, err
		}
		close(p.done)
	}
}
