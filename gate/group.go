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
		// One round trip: the lock, then the connection, the initiators'
		// roles and the scope, read as of the lock.
		var b pgx.Batch
		eventstore.QueueLock(&b, string(scope))
		var conn *Connection
		b.Queue(selectConnection+` WHERE id = $1`, connectionID).Query(func(rows pgx.Rows) error {
			c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("load connection %s: %w", connectionID, err)
			}
			conn = &c
			return nil
		})
		roles := queueMemberRoles(&b, connectionID, batch)
		var state domain.ScopeState
		var version int64
		queueLoadScope(&b, scope, &state, &version)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		if conn == nil {
			for _, p := range batch {
				p.err = ErrNotFound
			}
			return nil
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
		if err := deferScopeSave(tx, scope, conn.TenantID, version+int64(len(records)), state); err != nil {
			return err
		}
		for _, e := range decided {
			deferMirror(tx, e, 0)
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

// queueMemberRoles queues the read of the roles of the batch's initiators
// on the tenant of connectionID into b; the map is filled when b is sent.
func queueMemberRoles(b *pgx.Batch, connectionID string, batch []*groupedStart) map[string]domain.Role {
	actors := make([]string, 0, len(batch))
	for _, p := range batch {
		actors = append(actors, p.req.ActorID)
	}
	roles := map[string]domain.Role{}
	b.Queue(`SELECT m.user_id, m.role FROM memberships m JOIN provider_connections c ON c.tenant_id = m.tenant_id
		WHERE c.id = $1 AND m.user_id = ANY($2)`, connectionID, actors).Query(func(rows pgx.Rows) error {
		var user, role string
		_, err := pgx.ForEachRow(rows, []any{&user, &role}, func() error {
			roles[user] = domain.Role(role)
			return nil
		})
		if err != nil {
			return fmt.Errorf("look up memberships: %w", err)
		}
		return nil
	})
	return roles
}
