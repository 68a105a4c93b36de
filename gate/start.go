package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
	"github.com/opsgate/opsgate/tenancy"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// StartRequest is one request to begin an operation, as a surface saw it.
type StartRequest struct {
	// Actor is who asks; the decision is recorded with it.
	Actor   domain.Actor
	Surface domain.Surface
	// Operation is the selected operation of surfaces that start several
	// (onboarding bootstrap); others name theirs.
	Operation string
	// TenantID is the tenant of a tenant or onboarding surface.
	TenantID string
	// ConnectionID is the connection of a connection-scoped surface, or the
	// explicit choice on a tenant-scoped one ("" for the default).
	ConnectionID string
	// RestoreRunID is the target of restore execute.
	RestoreRunID string
	// Confirm and AcknowledgeWarnings are restore execute's safeguards.
	Confirm             bool
	AcknowledgeWarnings bool
	// IdempotencyKey, when set, makes a repeat of the same request (same
	// RequestHash) answer the first result; RequestHash identifies the
	// request (surface, path and body).
	IdempotencyKey string
	RequestHash    []byte
	// Limits, if set, are the accepted run's deadlines instead of the
	// defaults (checked: ErrInvalidLimits).
	Limits *domain.Limits
	// RerunOf is the run a rerun starts again ("" for other starts).
	RerunOf string
	// TraceContext is the caller's W3C trace context (nil: none).
	TraceContext *domain.TraceContext
}

// StartResponse is the gate's answer: the StartResult, and whether it is
// the replay of an earlier answer to the same idempotency key.
type StartResponse struct {
	Result   domain.StartResult
	Replayed bool
}

// Start decides a start: it resolves the scope the start names (the
// connection, the tenant's default, or the tenant), then decides it with
// every other start waiting at that moment, in one transaction under
// their scopes' locks (batch.go, decide). Authorization failures
// (domain.ErrNotFound, *domain.ForbiddenError) and restore safeguards
// record nothing; a full queue refuses the start with ErrOverloaded.
func (s *Service) Start(ctx context.Context, req StartRequest) (res StartResponse, err error) {
	ctx, span := s.cfg.Tracer.Start(ctx, "gate.decide", trace.WithAttributes(attribute.String("opsgate.surface", req.Surface.Name)))
	defer func() { endSpan(span, err, decisionAttrs(res)...) }()
	p, err := s.prepare(ctx, s.db, req)
	if err != nil {
		return StartResponse{}, err
	}
	if err := s.starts.submit(p); err != nil {
		if errors.Is(err, ErrOverloaded) {
			s.shedAt.Store(s.now().UnixNano())
		}
		return StartResponse{}, err
	}
	if err := await(ctx, p.done); err != nil {
		return StartResponse{}, err
	}
	return s.tell(p)
}

// StartTx decides a start alone in the caller's transaction, for a caller
// that records state of its own with the decision (an onboarding session
// records the run it admitted) and commits both, or neither. The caller
// may hold locks of its own, as long as every transaction takes them
// before any scope's lock.
func (s *Service) StartTx(ctx context.Context, tx *eventstore.Tx, req StartRequest) (StartResponse, error) {
	p, err := s.prepare(ctx, tx, req)
	if err != nil {
		return StartResponse{}, err
	}
	if err := s.decide(ctx, tx, []*pending{p}); err != nil {
		return StartResponse{}, err
	}
	return s.tell(p)
}

// tell returns p's answer, telling Config.OnDecided of a decision.
func (s *Service) tell(p *pending) (StartResponse, error) {
	if p.err == nil && !p.resp.Replayed && s.cfg.OnDecided != nil {
		s.cfg.OnDecided(p.resp.Result, p.op.Type)
	}
	return p.resp, p.err
}

// pending is a start on its way through the gate: what it asks, the scope
// and tenant it was resolved to, and its answer once decided.
type pending struct {
	ctx context.Context
	req StartRequest
	op  domain.Operation
	// tenantID is the tenant the start is authorized on; connectionID the
	// connection it names or defaults to ("" for none: the tenant's
	// scope), and provider that connection's.
	tenantID, connectionID, provider string
	scope                            domain.ScopeID

	resp StartResponse
	err  error
	done chan struct{}
}

func (p *pending) reset() { p.resp, p.err = StartResponse{}, nil }

func (p *pending) settle(err error) {
	if err != nil && p.err == nil {
		p.resp, p.err = StartResponse{}, err
	}
	close(p.done)
}

// decideIn decides batch in one transaction of its own.
func (s *Service) decideIn(ctx context.Context, batch []*pending) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		return s.decide(ctx, tx, batch)
	})
}

// splitByScope splits batch by scope, keeping the order of each scope's
// starts.
func splitByScope(batch []*pending) [][]*pending {
	var parts [][]*pending
	at := map[domain.ScopeID]int{}
	for _, p := range batch {
		i, ok := at[p.scope]
		if !ok {
			i = len(parts)
			at[p.scope] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], p)
	}
	return parts
}

// prepare resolves what req starts and on which scope. A connection's
// tenant never changes, and the default is the one at click time, so
// both may be read before the scope's lock.
func (s *Service) prepare(ctx context.Context, q pg.Querier, req StartRequest) (*pending, error) {
	opName := req.Surface.Operation
	if opName == "" {
		opName = req.Operation
	}
	op, ok := domain.LookupOperation(opName)
	if !ok {
		return nil, domain.Invalid("operation", "%q is not an operation type", opName)
	}
	if req.Limits != nil {
		if err := req.Limits.Check(); err != nil {
			return nil, err
		}
	}
	p := &pending{ctx: ctx, req: req, op: op, connectionID: req.ConnectionID, done: make(chan struct{})}
	if req.Surface.Scope == domain.ScopeConnection {
		info, err := s.conns.InfoOf(ctx, q, req.ConnectionID)
		if err != nil {
			return nil, err
		}
		p.tenantID, p.provider = info.TenantID, info.Provider
	} else { // the start names its tenant, and perhaps a connection of it
		p.tenantID = req.TenantID
		if p.connectionID == "" {
			id, err := s.conns.Default(ctx, q, req.TenantID)
			if err != nil {
				return nil, err
			}
			p.connectionID = id
		}
		if p.connectionID != "" {
			info, err := s.conns.InfoOf(ctx, q, p.connectionID)
			if err != nil {
				return nil, err
			}
			p.provider = info.Provider
		}
	}
	p.scope = domain.TenantScope(p.tenantID)
	if p.connectionID != "" {
		p.scope = domain.ConnectionScope(p.connectionID)
	}
	return p, nil
}

// decide decides a batch of starts, on any number of scopes, in tx: one
// round trip locks their scopes and reads what the decisions depend on
// (facts.go); each start is then decided against the state the starts
// before it on its scope left, with its own event and answer; the scope
// writer flushes them all. A start that fails on its own (not a member, a
// missing capability, a restore safeguard, a reused key) gets its error
// and records nothing; the others go on.
func (s *Service) decide(ctx context.Context, tx *eventstore.Tx, batch []*pending) error {
	return s.decideAs(ctx, tx, batch, record)
}

// mode is how a batch is decided.
type mode int

const (
	// record decides under the scopes' locks and records each decision.
	record mode = iota
	// dryRun decides on what is committed, locking nothing and recording
	// nothing; each start sees the decisions before it on its scope, as
	// if they had been recorded.
	dryRun
	// eachAlone is dryRun with every start decided against its scope as
	// it is, as if it were the only start (availability).
	eachAlone
)

// decideAs decides batch in mode m: decide's steps, of which a dry run
// takes every one but the writes.
func (s *Service) decideAs(ctx context.Context, tx *eventstore.Tx, batch []*pending, m mode) error {
	w := newScopeWriter(tx)
	f, err := s.load(ctx, tx, w, batch, m)
	if err != nil {
		return err
	}
	var remember []remembered
	for _, p := range batch {
		if p.err = p.ctx.Err(); p.err != nil {
			continue // the caller is gone: decide nothing for it
		}
		event, err := s.decideOne(p, f, w.state(p.scope), w.now)
		if err != nil {
			p.err = err
			continue
		}
		if event == nil {
			continue // a replay
		}
		if m != record {
			if m == dryRun {
				w.evolve(p.scope, event)
			}
			continue
		}
		w.record(p.scope, event, journal.Meta(p.req.Actor, p.tenantID, p.resp.Result.Run.ID))
		if p.req.IdempotencyKey != "" {
			k := idempotencyKey{p.req.Actor.ID, p.req.IdempotencyKey}
			f.prior[k] = stored{hash: p.req.RequestHash, result: p.resp.Result}
			remember = append(remember, remembered{key: k, hash: p.req.RequestHash, result: p.resp.Result})
		}
	}
	if err := w.flush(); err != nil {
		return err
	}
	return s.deferRemember(tx, remember)
}

// decideOne decides p against the facts of its batch and the state of
// its scope, now being the database's clock as of the locks: it returns the event to record (nil for a replay) with
// p.resp set, or p's own error. The order is the contract's precedence:
// authorization, then the request's own safeguards, then the decision
// (readiness, then deduped, busy, accepted).
func (s *Service) decideOne(p *pending, f *facts, state domain.ScopeState, now time.Time) (domain.Event, error) {
	role, member := f.roles.Of(p.req.Actor, p.tenantID)
	if err := tenancy.Check(role, member, p.req.Surface.Capability); err != nil {
		return nil, err
	}
	if prior, ok := f.prior[idempotencyKey{p.req.Actor.ID, p.req.IdempotencyKey}]; ok && p.req.IdempotencyKey != "" {
		if !prior.matches(p.req.RequestHash) {
			return nil, ErrIdempotencyKeyReused
		}
		p.resp = StartResponse{Result: prior.result, Replayed: true}
		return nil, nil
	}
	target, restore, err := f.restore(p)
	if err != nil {
		return nil, err
	}
	ref, readiness, err := f.connection(p)
	if err != nil {
		return nil, err
	}
	limits := s.cfg.limits()
	if p.req.Limits != nil {
		limits = p.req.Limits.Or(limits)
	}
	cmd := domain.StartCommand{
		RunID: journal.NewID(),
		Start: domain.StartInfo{
			TenantID: p.tenantID, ScopeID: p.scope, Type: p.op.Type, CanonicalType: p.op.Canonical, Label: p.op.Label,
			Surface: p.req.Surface.Name, InitiatorID: p.req.Actor.ID, Target: target, Connection: ref, RerunOf: p.req.RerunOf,
			InitiatedVia: p.req.Actor.Via, TraceContext: p.req.TraceContext,
		},
		// Deadlines run on the database's clock, as leases do.
		ClaimBy: now.Add(limits.QueueTTL), MaxDuration: limits.MaxDuration,
		At: s.now(),
	}
	event, err := domain.Decide(state, cmd, domain.Facts{Blocked: domain.Preflight(p.op, readiness, restore), ExecutorSeen: f.executorSeen(p)})
	if err != nil {
		return nil, fmt.Errorf("decide start on %s: %w", p.scope, err)
	}
	run, created := domain.RunOf(event)
	if !created {
		run = state.Active.Run() // deduped or busy: the run holding the scope
	}
	p.resp = StartResponse{Result: domain.PresentStart(p.op.Label, domain.OutcomeOf(event), run)}
	return event, nil
}
