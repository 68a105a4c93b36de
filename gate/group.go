package gate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// Starts on a hot connection queue for its scope's lock, and the lock is
// held for a whole decision transaction. Within one process, starts on
// the same connection therefore go to a per-scope group: one goroutine
// (the leader) decides every start waiting at that moment in a single
// transaction under the lock, folding the scope's state from one decision
// to the next, and appends all their events at once. Each start still
// gets its own decision, event and answer; only the transaction, the lock
// and the commit are shared. Starts with hooks or idempotency keys take
// the single path.

// groupWindow bounds how many starts one group transaction decides.
const groupWindow = 256

type scopeGroup struct {
	mu      sync.Mutex
	waiting []*groupedStart
	leading bool
}

type groupedStart struct {
	ctx  context.Context
	req  StartRequest
	op   domain.Operation
	res  domain.StartResult
	err  error
	done chan struct{}
}

// groupable reports whether req may be decided in a group.
func groupable(req StartRequest, op domain.Operation) bool {
	return req.Surface.Scope == "connection" && req.IdempotencyKey == "" &&
		req.Prepare == nil && req.Then == nil && op.TargetKey == ""
}

func (s *Service) startGrouped(ctx context.Context, req StartRequest, op domain.Operation) (StartResponse, error) {
	v, _ := s.groups.LoadOrStore(req.ConnectionID, &scopeGroup{})
	g := v.(*scopeGroup)
	p := &groupedStart{ctx: ctx, req: req, op: op, done: make(chan struct{})}
	g.mu.Lock()
	g.waiting = append(g.waiting, p)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if lead {
		go s.lead(g, req.ConnectionID)
	}
	select {
	case <-p.done:
		if p.err != nil {
			return StartResponse{}, p.err
		}
		return StartResponse{Result: p.res}, nil
	case <-ctx.Done():
		return StartResponse{}, ctx.Err()
	}
}

// lead decides the group's waiting starts, a window at a time, until
// none is left.
func (s *Service) lead(g *scopeGroup, connectionID string) {
	for {
		g.mu.Lock()
		n := min(len(g.waiting), groupWindow)
		if n == 0 {
			g.leading = false
			// Forget the idle group so that the map does not grow with every
			// connection ever used. A start that still holds g becomes its
			// leader; one that looks the scope up anew makes a new group.
			// Two groups of one scope are only less efficient: the scope's
			// lock keeps their decisions apart.
			s.groups.CompareAndDelete(connectionID, g)
			g.mu.Unlock()
			return
		}
		batch := g.waiting[:n:n]
		g.waiting = g.waiting[n:]
		g.mu.Unlock()
		s.decideGroup(connectionID, batch)
	}
}

// decideGroup decides batch in one transaction under the scope's lock.
func (s *Service) decideGroup(connectionID string, batch []*groupedStart) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	scope := domain.ConnectionScope(connectionID)
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		for _, p := range batch {
			p.err, p.res = nil, domain.StartResult{}
		}
		if err := tx.Lock(ctx, string(scope)); err != nil {
			return err
		}
		conn, err := loadConnection(ctx, tx, connectionID)
		if errors.Is(err, ErrNotFound) {
			for _, p := range batch {
				p.err = ErrNotFound
			}
			return nil
		}
		if err != nil {
			return err
		}
		roles, err := memberRoles(ctx, tx, conn.TenantID, batch)
		if err != nil {
			return err
		}
		state, version, err := loadScope(ctx, tx, scope)
		if err != nil {
			return err
		}
		facts := func(op domain.Operation) domain.Facts {
			return domain.Facts{Blocked: domain.Preflight(op, conn.readiness(), nil)}
		}
		var records []eventstore.Record
		var decided []domain.Event
		for _, p := range batch {
			if p.ctx.Err() != nil {
				p.err = p.ctx.Err() // the caller is gone: decide nothing for it
				continue
			}
			role, member := roles[p.req.ActorID]
			if !member {
				p.err = ErrNotFound
				continue
			}
			if !role.Can(p.req.Surface.Capability) {
				p.err = &ForbiddenError{Capability: p.req.Surface.Capability}
				continue
			}
			cmd := domain.StartCommand{
				RunID: newID(),
				Start: domain.StartInfo{
					TenantID: conn.TenantID, ScopeID: scope, Type: p.op.Type, CanonicalType: p.op.Canonical, Label: p.op.Label,
					Surface: p.req.Surface.Name, InitiatorID: p.req.ActorID, Connection: conn.Ref(),
				},
				At: s.now(),
			}
			event, err := domain.Decide(state, cmd, facts(p.op))
			if err != nil {
				p.err = fmt.Errorf("decide start on %s: %w", scope, err)
				continue
			}
			var run domain.Run
			switch e := event.(type) {
			case domain.StartAccepted, domain.StartBlocked:
				run, _ = domain.RunOf(e)
			default:
				run = state.Active.Run()
			}
			md := eventstore.MetadataFrom(p.ctx)
			md.Actor, md.TenantID, md.CorrelationID = p.req.ActorID, conn.TenantID, run.ID
			records = append(records, eventstore.Record{Payload: event, Metadata: md})
			decided = append(decided, event)
			state = domain.Evolve(state, event)
			p.res = domain.PresentStart(p.op.Label, domain.OutcomeOf(event), run)
		}
		if len(records) == 0 {
			return nil
		}
		if _, err := tx.AppendRecordsAt(ctx, string(scope), version, records...); err != nil {
			return fmt.Errorf("append to %s: %w", scope, err)
		}
		var b pgx.Batch
		if err := queueScopeSave(&b, scope, conn.TenantID, version+int64(len(records)), state); err != nil {
			return err
		}
		for _, e := range decided {
			queueMirror(&b, e)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("save scope %s and its runs: %w", scope, err)
		}
		return nil
	})
	for _, p := range batch {
		if err != nil && p.err == nil {
			p.err = err
		}
		close(p.done)
	}
}

// memberRoles returns the roles on tenantID of the batch's initiators.
func memberRoles(ctx context.Context, tx *eventstore.Tx, tenantID string, batch []*groupedStart) (map[string]domain.Role, error) {
	actors := make([]string, 0, len(batch))
	for _, p := range batch {
		actors = append(actors, p.req.ActorID)
	}
	rows, err := tx.Query(ctx, `SELECT user_id, role FROM memberships WHERE tenant_id = $1 AND user_id = ANY($2)`, tenantID, actors)
	if err != nil {
		return nil, fmt.Errorf("look up memberships: %w", err)
	}
	defer rows.Close()
	roles := map[string]domain.Role{}
	for rows.Next() {
		var user, role string
		if err := rows.Scan(&user, &role); err != nil {
			return nil, err
		}
		roles[user] = domain.Role(role)
	}
	return roles, rows.Err()
}
