package gate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	json "github.com/segmentio/encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/restores"
	"github.com/opsgate/opsgate/tenancy"
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
}

// StartResponse is the gate's answer: the StartResult, and whether it is
// the replay of an earlier answer to the same idempotency key.
type StartResponse struct {
	Result   domain.StartResult
	Replayed bool
}

// Start decides a start: it resolves the scope the start names (the
// connection, the tenant's default, or the tenant), then decides it with
// every other start waiting on that scope at the moment, in one
// transaction under the scope's lock (group.go, decide). Authorization
// failures (domain.ErrNotFound, *domain.ForbiddenError) and restore
// safeguards record nothing.
func (s *Service) Start(ctx context.Context, req StartRequest) (StartResponse, error) {
	p, err := s.prepare(ctx, s.store.Pool(), req)
	if err != nil {
		return StartResponse{}, err
	}
	resp, err := s.submit(ctx, p)
	return s.tell(p.op.Type, resp, err)
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
	return s.tell(p.op.Type, p.resp, p.err)
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

// prepare resolves what req starts and on which scope. A connection's
// tenant never changes, and the default is the one at click time, so
// both may be read before the scope's lock.
func (s *Service) prepare(ctx context.Context, q tenancy.RowQuerier, req StartRequest) (*pending, error) {
	opName := req.Surface.Operation
	if opName == "" {
		opName = req.Operation
	}
	op, ok := domain.LookupOperation(opName)
	if !ok {
		return nil, domain.Invalid("operation", "%q is not an operation type", opName)
	}
	p := &pending{ctx: ctx, req: req, op: op, connectionID: req.ConnectionID}
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

// facts are what the decisions of one batch read in the round trip that
// takes the locks of its scopes, so all of them as of the locks: the
// scopes' own (scopeFacts) and those the batch shares.
type facts struct {
	scopes   map[domain.ScopeID]*scopeFacts
	roles    tenancy.Roles
	prior    map[idempotencyKey]stored
	restores map[string]*restores.Loaded
}

// scopeFacts are what the starts of one scope read.
type scopeFacts struct {
	conn     *connections.Loaded // nil for the tenant's scope
	builtin  bool                // the built-in worker executes the connection's provider
	coverage *executors.Coverage // what registered executors run for it (nil when builtin)
	state    domain.ScopeState
	version  int64
}

// decide decides a batch of starts, on any number of scopes, in tx: load
// -> decide each -> record all. One round trip takes the scopes' locks
// (in scope order, so that transactions locking overlapping scopes never
// wait for each other in a cycle) and those of the batch's idempotency
// keys, and reads, as of the locks, everything the decisions depend on;
// each start is then decided against the state the previous ones on its
// scope left, with its own event and answer; one statement appends every
// event, and the scopes' snapshots, the runs rows and the idempotency keys
// follow, a statement each, in the commit's round trip. A start that
// fails on its own (not a member, a missing capability, a restore
// safeguard, a reused key) gets its error and records nothing; the others
// go on.
func (s *Service) decide(ctx context.Context, tx *eventstore.Tx, batch []*pending) error {
	byScope := map[domain.ScopeID][]*pending{}
	var scopes []domain.ScopeID
	for _, p := range batch {
		if _, ok := byScope[p.scope]; !ok {
			scopes = append(scopes, p.scope)
		}
		byScope[p.scope] = append(byScope[p.scope], p)
	}
	slices.Sort(scopes)
	f, err := s.load(ctx, tx, scopes, byScope, batch)
	if err != nil {
		return err
	}
	var appends []eventstore.StreamAppend
	var saves []scopeSave
	var decided []domain.Event
	var remember []remembered
	for _, scope := range scopes {
		sf := f.scopes[scope]
		var recs []eventstore.Record
		tenantID := "" // the scope's tenant: that of every start it recorded
		for _, p := range byScope[scope] {
			if p.err = p.ctx.Err(); p.err != nil {
				continue // the caller is gone: decide nothing for it
			}
			event, err := s.decideOne(p, f, sf)
			if err != nil {
				p.err = err
				continue
			}
			if event == nil {
				continue // a replay
			}
			run := p.resp.Result.Run
			recs = append(recs, eventstore.Record{Payload: event, Metadata: journal.Meta(p.req.Actor, p.tenantID, run.ID)})
			tenantID = p.tenantID
			decided = append(decided, event)
			sf.state = domain.Evolve(sf.state, event)
			if p.req.IdempotencyKey != "" {
				k := idempotencyKey{p.req.Actor.ID, p.req.IdempotencyKey}
				f.prior[k] = stored{hash: p.req.RequestHash, result: p.resp.Result}
				remember = append(remember, remembered{key: k, hash: p.req.RequestHash, result: p.resp.Result})
			}
		}
		if len(recs) == 0 {
			continue
		}
		appends = append(appends, eventstore.StreamAppend{Stream: scope.String(), At: sf.version, Records: recs})
		saves = append(saves, scopeSave{scope: scope, tenantID: tenantID, version: sf.version + int64(len(recs)), state: sf.state})
	}
	if len(appends) == 0 {
		return nil
	}
	if _, err := tx.AppendStreams(ctx, appends); err != nil {
		return fmt.Errorf("append the decisions on %d scopes: %w", len(appends), err)
	}
	if err := deferScopeSaves(tx, saves); err != nil {
		return err
	}
	deferRunRows(tx, decided)
	return s.deferRemember(tx, remember)
}

// load takes the locks of a batch and reads its facts, in one round trip.
func (s *Service) load(ctx context.Context, tx *eventstore.Tx, scopes []domain.ScopeID, byScope map[domain.ScopeID][]*pending, batch []*pending) (*facts, error) {
	var b pgx.Batch
	queueLocks(&b, scopes)
	keys := queueKeyLocks(&b, batch)
	f := &facts{scopes: map[domain.ScopeID]*scopeFacts{}, restores: map[string]*restores.Loaded{}}
	var connIDs []string
	coverage := map[string]*executors.Coverage{}
	for _, scope := range scopes {
		sf := &scopeFacts{}
		f.scopes[scope] = sf
		first := byScope[scope][0]
		if first.connectionID == "" {
			continue
		}
		connIDs = append(connIDs, first.connectionID)
		if sf.builtin = slices.Contains(s.builtin, first.provider); !sf.builtin {
			if coverage[first.provider] == nil {
				coverage[first.provider] = executors.QueueCoverage(&b, first.provider)
			}
			sf.coverage = coverage[first.provider]
		}
	}
	conns := connections.QueueLoadEach(&b, connIDs)
	for _, scope := range scopes {
		if id := byScope[scope][0].connectionID; id != "" {
			f.scopes[scope].conn = conns[id]
		}
	}
	var users, tenants []string
	for _, p := range batch {
		if !slices.Contains(users, p.req.Actor.ID) {
			users = append(users, p.req.Actor.ID)
		}
		if !slices.Contains(tenants, p.tenantID) {
			tenants = append(tenants, p.tenantID)
		}
		if id := p.req.RestoreRunID; p.op.TargetKey != "" && f.restores[id] == nil {
			f.restores[id] = restores.QueueLoad(&b, id)
		}
	}
	f.roles = tenancy.QueueRoles(&b, users, tenants)
	queueLoadScopes(&b, f.scopes)
	f.prior = queueLookupKeys(&b, keys)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("load %d scopes from %s: %w", len(scopes), scopes[0], err)
	}
	return f, nil
}

// queueLocks queues the locks of scopes, in the order given, in one
// statement.
func queueLocks(b *pgx.Batch, scopes []domain.ScopeID) {
	if len(scopes) == 1 {
		eventstore.QueueLock(b, scopes[0].String())
		return
	}
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = s.String()
	}
	eventstore.QueueLocks(b, names)
}

// decideOne decides p against the facts of its batch and scope: it
// returns the event to record (nil for a replay) with p.resp set, or p's
// own error. The order is the contract's precedence: authorization, then
// the request's own safeguards, then the decision (readiness, then
// deduped, busy, accepted).
func (s *Service) decideOne(p *pending, f *facts, sf *scopeFacts) (domain.Event, error) {
	role, member := f.roles.Of(p.req.Actor.ID, p.tenantID)
	if err := tenancy.Check(role, member, p.req.Surface.Capability); err != nil {
		return nil, err
	}
	if p.req.IdempotencyKey != "" {
		if prior, ok := f.prior[idempotencyKey{p.req.Actor.ID, p.req.IdempotencyKey}]; ok {
			if !prior.matches(p.req.RequestHash) {
				return nil, ErrIdempotencyKeyReused
			}
			p.resp = StartResponse{Result: prior.result, Replayed: true}
			return nil, nil
		}
	}
	var restore *domain.RestoreReadiness
	target := ""
	if p.op.TargetKey != "" {
		r := f.restores[p.req.RestoreRunID].R
		if r == nil || r.TenantID != p.tenantID {
			return nil, domain.ErrNotFound
		}
		if p.op.Destructive && !p.req.Confirm {
			return nil, ErrConfirmationRequired
		}
		if len(r.Warnings) > 0 && !p.req.AcknowledgeWarnings {
			return nil, ErrWarningsNotAcknowledged
		}
		restore = &domain.RestoreReadiness{Previewed: r.Previewed}
		target = r.ID
	}
	var ref *domain.ConnectionRef
	var readiness *domain.ConnectionReadiness
	if sf.conn != nil {
		c := sf.conn.C
		if c == nil || c.TenantID != p.tenantID {
			return nil, domain.ErrNotFound
		}
		ref, readiness = c.Ref(), c.Readiness()
		readiness.Executable = sf.builtin || sf.coverage.Runs(p.op.Type)
	}
	cmd := domain.StartCommand{
		RunID: journal.NewID(),
		Start: domain.StartInfo{
			TenantID: p.tenantID, ScopeID: p.scope, Type: p.op.Type, CanonicalType: p.op.Canonical, Label: p.op.Label,
			Surface: p.req.Surface.Name, InitiatorID: p.req.Actor.ID, Target: target, Connection: ref,
		},
		At: s.now(),
	}
	event, err := domain.Decide(sf.state, cmd, domain.Facts{Blocked: domain.Preflight(p.op, readiness, restore)})
	if err != nil {
		return nil, fmt.Errorf("decide start on %s: %w", p.scope, err)
	}
	run, created := domain.RunOf(event)
	if !created {
		run = sf.state.Active.Run() // deduped or busy: the run holding the scope
	}
	p.resp = StartResponse{Result: domain.PresentStart(p.op.Label, domain.OutcomeOf(event), run)}
	return event, nil
}

// queueLoadScopes queues the read of the states and versions of scopes
// (zero for a scope with no history) into b, in one statement.
func queueLoadScopes(b *pgx.Batch, scopes map[domain.ScopeID]*scopeFacts) {
	ids := make([]string, 0, len(scopes))
	for id := range scopes {
		ids = append(ids, string(id))
	}
	b.Queue(`SELECT scope_id, version, state FROM scopes WHERE scope_id = ANY($1::text[])`, ids).Query(func(rows pgx.Rows) error {
		var id string
		var version int64
		var raw []byte
		_, err := pgx.ForEachRow(rows, []any{&id, &version, &raw}, func() error {
			sf := scopes[domain.ScopeID(id)]
			sf.version = version
			if err := json.Unmarshal(raw, &sf.state); err != nil {
				return fmt.Errorf("decode scope %s: %w", id, err)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("load scopes: %w", err)
		}
		return nil
	})
}

// queueLoadScopeOf queues the read of the state and version of the scope
// of runID (zero for a scope with no history) into b.
func queueLoadScopeOf(b *pgx.Batch, runID string, state *domain.ScopeState, version *int64) {
	queueScopeRead(b, "of run "+runID, `SELECT version, state FROM scopes WHERE scope_id = (SELECT scope_id FROM runs WHERE id = $1)`, runID, state, version)
}

func queueScopeRead(b *pgx.Batch, scope, query, arg string, state *domain.ScopeState, version *int64) {
	b.Queue(query, arg).QueryRow(func(row pgx.Row) error {
		var raw []byte
		err := row.Scan(version, &raw)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("load scope %s: %w", scope, err)
		}
		if err := json.Unmarshal(raw, state); err != nil {
			return fmt.Errorf("decode scope %s: %w", scope, err)
		}
		return nil
	})
}

// record appends a lifecycle event to the scope's stream at the expected
// version and holds back, for the commit's round trip, the save of the
// evolved state and the mirror of the run's status into runs (a started
// run gets a lease of length lease). The caller holds the scope's lock.
func (s *Service) record(ctx context.Context, tx *eventstore.Tx, scope domain.ScopeID, md eventstore.Metadata,
	state domain.ScopeState, version int64, event domain.Event, lease time.Duration) error {
	if _, err := tx.Append(ctx, scope.String(), []eventstore.Record{{Payload: event, Metadata: md}}, eventstore.AtVersion(version)); err != nil {
		return fmt.Errorf("append to %s: %w", scope, err)
	}
	if err := deferScopeSave(tx, scope, md.TenantID, version+1, domain.Evolve(state, event)); err != nil {
		return err
	}
	deferMirror(tx, event, lease)
	return nil
}

// deferScopeSave holds back the upsert of a scope's snapshot.
func deferScopeSave(tx *eventstore.Tx, scope domain.ScopeID, tenantID string, version int64, state domain.ScopeState) error {
	next, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("encode scope %s: %w", scope, err)
	}
	tx.Defer(`INSERT INTO scopes (scope_id, tenant_id, version, state) VALUES ($1, $2, $3, $4)
		ON CONFLICT (scope_id) DO UPDATE SET version = excluded.version, state = excluded.state`,
		string(scope), tenantID, version, next)
	return nil
}

// scopeSave is a scope's snapshot after a batch.
type scopeSave struct {
	scope    domain.ScopeID
	tenantID string
	version  int64
	state    domain.ScopeState
}

// deferScopeSaves holds back the upsert of scopes' snapshots, in one
// statement.
func deferScopeSaves(tx *eventstore.Tx, saves []scopeSave) error {
	if len(saves) == 1 {
		sv := saves[0]
		return deferScopeSave(tx, sv.scope, sv.tenantID, sv.version, sv.state)
	}
	ids, tenants, versions, states := make([]string, len(saves)), make([]string, len(saves)), make([]int64, len(saves)), make([]string, len(saves))
	for i, sv := range saves {
		next, err := json.Marshal(sv.state)
		if err != nil {
			return fmt.Errorf("encode scope %s: %w", sv.scope, err)
		}
		ids[i], tenants[i], versions[i], states[i] = string(sv.scope), sv.tenantID, sv.version, string(next)
	}
	tx.Defer(`INSERT INTO scopes (scope_id, tenant_id, version, state)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::json[])
		ON CONFLICT (scope_id) DO UPDATE SET version = excluded.version, state = excluded.state`,
		ids, tenants, versions, states)
	return nil
}

// deferRunRows holds back the insert of the runs rows of a batch's
// decisions (queued runs for acceptances, blocked ones for blocks; none
// for deduped and busy answers), in one statement.
func deferRunRows(tx *eventstore.Tx, decided []domain.Event) {
	var ids, scopes, tenants, types, surfaces, statuses []string
	var providers []*string
	var at []time.Time
	for _, event := range decided {
		switch e := event.(type) {
		case domain.StartAccepted:
			provider := e.Connection.Provider
			ids, scopes, tenants, types, surfaces = append(ids, e.RunID), append(scopes, string(e.ScopeID)), append(tenants, e.TenantID), append(types, e.Type), append(surfaces, e.Surface)
			statuses, providers, at = append(statuses, "queued"), append(providers, &provider), append(at, e.At)
		case domain.StartBlocked:
			ids, scopes, tenants, types, surfaces = append(ids, e.RunID), append(scopes, string(e.ScopeID)), append(tenants, e.TenantID), append(types, e.Type), append(surfaces, e.Surface)
			statuses, providers, at = append(statuses, "blocked"), append(providers, nil), append(at, e.At)
		}
	}
	if len(ids) == 0 {
		return
	}
	tx.Defer(`INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at, provider)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])`,
		ids, scopes, tenants, types, surfaces, statuses, at, providers)
}

// deferMirror holds back the statement that keeps the runs table in step
// with a scope event (none for deduped and busy answers). A run that
// starts gets its first lease, of length lease, with it.
func deferMirror(tx *eventstore.Tx, event domain.Event, lease time.Duration) {
	switch e := event.(type) {
	case domain.StartAccepted:
		tx.Defer(`INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at, provider)
			VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7)`, e.RunID, string(e.ScopeID), e.TenantID, e.Type, e.Surface, e.At, e.Connection.Provider)
	case domain.StartBlocked:
		tx.Defer(`INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
			VALUES ($1, $2, $3, $4, $5, 'blocked', $6)`, e.RunID, string(e.ScopeID), e.TenantID, e.Type, e.Surface, e.At)
	case domain.RunStarted:
		tx.Defer(`UPDATE runs SET status = 'running', epoch = $2, worker_id = $3, lease_us = $4::bigint,
			lease_expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond' WHERE id = $1`,
			e.RunID, e.Epoch, e.WorkerID, lease.Microseconds())
	case domain.RunSucceeded:
		tx.Defer(`UPDATE runs SET status = 'succeeded', lease_expires_at = NULL WHERE id = $1`, e.RunID)
	case domain.RunFailed:
		tx.Defer(`UPDATE runs SET status = 'failed', lease_expires_at = NULL WHERE id = $1`, e.RunID)
	case domain.RunCancelled:
		tx.Defer(`UPDATE runs SET status = 'cancelled', lease_expires_at = NULL WHERE id = $1`, e.RunID)
	}
}
