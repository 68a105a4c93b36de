package gate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/restores"
	"github.com/opsgate/opsgate/tenancy"
)

// facts are what the decisions of one batch of starts read, in the round
// trip that takes the locks of its scopes, so all of them as of the
// locks: each scope's connection and whether its provider has an
// executor, and what the batch shares (roles, stored answers, restore
// drafts).
type facts struct {
	scopes   map[domain.ScopeID]*scopeFacts
	roles    tenancy.Roles
	prior    map[idempotencyKey]stored
	restores map[string]*restores.Loaded
}

// scopeFacts are what the starts of one scope read.
type scopeFacts struct {
	conn     *connections.Loaded // nil for the tenant's scope
	coverage *executors.Coverage // what the live executors of its provider run
}

// load takes the locks of a batch's scopes (in scope order, so that
// transactions locking overlapping scopes never wait for each other in a
// cycle) and of its idempotency keys, and reads their snapshots and the
// batch's facts, in one round trip. A dry run (m other than record) reads
// the same facts without a lock.
func (s *Service) load(ctx context.Context, tx *eventstore.Tx, w *scopeWriter, batch []*pending, m mode) (*facts, error) {
	var b pgx.Batch
	f, q := s.queueFacts(&b, batch)
	// The locks go first: every read of the batch is as of them.
	var locks pgx.Batch
	keys := lockOrRead(&locks, w, batch, q.scopes, m)
	conns := connections.QueueLoadEach(&b, q.connIDs)
	for _, p := range batch {
		if p.connectionID != "" {
			f.scopes[p.scope].conn = conns[p.connectionID]
		}
	}
	f.roles = tenancy.QueueRoles(&b, q.users, q.tenants)
	f.prior = queueLookupKeys(&b, keys)
	locks.QueuedQueries = append(locks.QueuedQueries, b.QueuedQueries...)
	if err := tx.SendBatch(ctx, &locks).Close(); err != nil {
		return nil, fmt.Errorf("load %d scopes from %s: %w", len(q.scopes), q.scopes[0], err)
	}
	return f, nil
}

// batchNames are what a batch's reads are about: its scopes (sorted),
// users, tenants and connections, each once.
type batchNames struct {
	scopes, users, tenants, connIDs []string
}

// queueFacts queues into b the reads each start of batch needs of its
// own (restore drafts, executor coverage of its provider) and returns
// the facts they fill with the names the batch's shared reads are about.
func (s *Service) queueFacts(b *pgx.Batch, batch []*pending) (*facts, batchNames) {
	f := &facts{scopes: map[domain.ScopeID]*scopeFacts{}, restores: map[string]*restores.Loaded{}}
	var q batchNames
	coverage := map[string]*executors.Coverage{}
	for _, p := range batch {
		if !slices.Contains(q.users, p.req.Actor.ID) {
			q.users = append(q.users, p.req.Actor.ID)
		}
		if !slices.Contains(q.tenants, p.tenantID) {
			q.tenants = append(q.tenants, p.tenantID)
		}
		if id := p.req.RestoreRunID; p.op.TargetKey != "" && f.restores[id] == nil {
			f.restores[id] = restores.QueueLoad(b, id)
		}
		if f.scopes[p.scope] != nil {
			continue
		}
		sf := &scopeFacts{}
		f.scopes[p.scope] = sf
		q.scopes = append(q.scopes, string(p.scope))
		if p.connectionID == "" {
			continue
		}
		q.connIDs = append(q.connIDs, p.connectionID)
		if coverage[p.provider] == nil {
			coverage[p.provider] = executors.QueueCoverage(b, p.provider, s.cfg.ExecutorLiveness)
		}
		sf.coverage = coverage[p.provider]
	}
	slices.Sort(q.scopes)
	return f, q
}

// lockOrRead queues into b the scopes' snapshots, under their locks and
// the idempotency keys' when the batch is recorded; a dry run reads what
// is committed and locks nothing, so it never holds up a start that will
// be recorded. It returns the batch's idempotency keys.
func lockOrRead(b *pgx.Batch, w *scopeWriter, batch []*pending, scopes []string, m mode) []idempotencyKey {
	ids := make([]domain.ScopeID, len(scopes))
	for i, scope := range scopes {
		ids[i] = domain.ScopeID(scope)
	}
	if m == record {
		w.lockScopes(b, ids, eventstore.Wait)
		return queueKeyLocks(b, batch)
	}
	w.readScopes(b, ids)
	return keysOf(batch)
}

// restore checks p's restore safeguards against its draft, for a start
// with a target: the target and the preflight's view of the draft.
func (f *facts) restore(p *pending) (string, *domain.RestoreReadiness, error) {
	if p.op.TargetKey == "" {
		return "", nil, nil
	}
	r := f.restores[p.req.RestoreRunID].R
	if r == nil || r.TenantID != p.tenantID {
		return "", nil, domain.ErrNotFound
	}
	if p.op.Destructive && !p.req.Confirm {
		return "", nil, ErrConfirmationRequired
	}
	if len(r.Warnings) > 0 && !p.req.AcknowledgeWarnings {
		return "", nil, ErrWarningsNotAcknowledged
	}
	return r.ID, &domain.RestoreReadiness{Previewed: r.Previewed}, nil
}

// connection returns p's connection as pinned into a run and as the
// preflight sees it (nil, nil for the tenant's scope).
func (f *facts) connection(p *pending) (*domain.ConnectionRef, *domain.ConnectionReadiness, error) {
	sf := f.scopes[p.scope]
	if sf.conn == nil {
		return nil, nil, nil
	}
	c := sf.conn.C
	if c == nil || c.TenantID != p.tenantID {
		return nil, nil, domain.ErrNotFound
	}
	readiness := c.Readiness()
	readiness.Executable = sf.coverage.Runs(p.op.Type)
	return c.Ref(), readiness, nil
}

// executorSeen is when an executor of p's connection's provider was last
// seen (nil: never, or no connection).
func (f *facts) executorSeen(p *pending) *time.Time {
	if sf := f.scopes[p.scope]; sf.coverage != nil {
		return sf.coverage.LastSeen()
	}
	return nil
}
