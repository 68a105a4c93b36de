package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// StartRequest is one request to begin an operation, as a surface saw it.
type StartRequest struct {
	ActorID string
	Surface domain.Surface
	// Operation is the selected operation of surfaces that start several
	// (onboarding bootstrap); others name theirs.
	Operation string
	// TenantID is the tenant of a tenant-scoped surface.
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
	// Prepare, if set, runs first in the decision's transaction, before
	// any lock of the gate's (a process manager takes its own lock there).
	Prepare func(ctx context.Context, tx *eventstore.Tx) error
	// Then, if set, runs in the decision's transaction after it was
	// recorded (a process manager records its follow-up state there).
	Then func(ctx context.Context, tx *eventstore.Tx, result domain.StartResult) error
}

// StartResponse is the gate's answer: the StartResult, and whether it is
// the replay of an earlier answer to the same idempotency key.
type StartResponse struct {
	Result   domain.StartResult
	Replayed bool
}

// Start decides a start: authorize -> resolve the connection -> preflight
// -> decide against the scope -> append, all in one transaction under the
// scope's lock. Authorization failures are ErrNotFound or *ForbiddenError
// and record nothing; so are restore safeguards.
func (s *Service) Start(ctx context.Context, req StartRequest) (StartResponse, error) {
	opName := req.Surface.Operation
	if opName == "" {
		opName = req.Operation
	}
	op, ok := domain.LookupOperation(opName)
	if !ok {
		return StartResponse{}, invalid("operation", "%q is not an operation type", opName)
	}
	if groupable(req, op) {
		return s.startGrouped(ctx, req, op)
	}
	var resp StartResponse
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if req.Prepare != nil {
			if err := req.Prepare(ctx, tx); err != nil {
				return err
			}
		}
		if req.IdempotencyKey != "" {
			prior, found, err := s.lookupIdempotent(ctx, tx, req)
			if err != nil || found {
				if err == nil {
					// A replay is still a start: authorization comes first.
					err = authorize(ctx, tx, req.ActorID, prior.Result.Run.TenantID, req.Surface.Capability)
				}
				resp = prior
				return err
			}
		}
		result, err := s.decideStart(ctx, tx, req, op)
		if err != nil {
			return err
		}
		resp = StartResponse{Result: result}
		if req.Then != nil {
			if err := req.Then(ctx, tx, result); err != nil {
				return err
			}
		}
		if req.IdempotencyKey != "" {
			return s.rememberIdempotent(ctx, tx, req, result)
		}
		return nil
	})
	if errors.Is(err, errIdempotencyRace) {
		// Another request with the same key committed first: answer its result.
		return s.Start(ctx, req)
	}
	if err != nil {
		return StartResponse{}, err
	}
	return resp, nil
}

func (s *Service) decideStart(ctx context.Context, tx *eventstore.Tx, req StartRequest, op domain.Operation) (domain.StartResult, error) {
	tenantID := req.TenantID
	var conn *Connection
	if req.Surface.Scope == "connection" {
		// The path names the scope: lock it first, then read the
		// connection once, as of the lock.
		if err := tx.Lock(ctx, string(domain.ConnectionScope(req.ConnectionID))); err != nil {
			return domain.StartResult{}, err
		}
		c, err := loadConnection(ctx, tx, req.ConnectionID)
		if err != nil {
			return domain.StartResult{}, err
		}
		tenantID, conn = c.TenantID, &c
	}
	// A tenant that does not exist has no members: ErrNotFound either way.
	if err := authorize(ctx, tx, req.ActorID, tenantID, req.Surface.Capability); err != nil {
		return domain.StartResult{}, err
	}

	var restore *domain.RestoreReadiness
	target := ""
	if op.TargetKey != "" {
		r, err := loadRestoreRun(ctx, tx, req.RestoreRunID)
		if err != nil {
			return domain.StartResult{}, err
		}
		if r.TenantID != tenantID {
			return domain.StartResult{}, ErrNotFound
		}
		if op.Destructive && !req.Confirm {
			return domain.StartResult{}, ErrConfirmationRequired
		}
		if len(r.Warnings) > 0 && !req.AcknowledgeWarnings {
			return domain.StartResult{}, ErrWarningsNotAcknowledged
		}
		restore = &domain.RestoreReadiness{Previewed: r.Previewed}
		target = r.ID
	}

	scope := domain.TenantScope(tenantID)
	if conn == nil {
		// Resolve the connection chosen at click time, then lock its
		// scope and read it again as of the lock.
		id := req.ConnectionID
		if id == "" {
			c, err := defaultConnection(ctx, tx, tenantID)
			if err != nil {
				return domain.StartResult{}, err
			}
			if c != nil {
				id = c.ID
			}
		}
		if id != "" {
			scope = domain.ConnectionScope(id)
		}
		if err := tx.Lock(ctx, string(scope)); err != nil {
			return domain.StartResult{}, err
		}
		if id != "" {
			c, err := loadConnection(ctx, tx, id)
			if err != nil {
				return domain.StartResult{}, err
			}
			if c.TenantID != tenantID {
				return domain.StartResult{}, ErrNotFound
			}
			conn = &c
		}
	} else {
		scope = domain.ConnectionScope(conn.ID)
	}
	var ref *domain.ConnectionRef
	var readiness *domain.ConnectionReadiness
	if conn != nil {
		ref, readiness = conn.Ref(), conn.readiness()
	}
	facts := domain.Facts{Blocked: domain.Preflight(op, readiness, restore)}

	state, version, err := loadScope(ctx, tx, scope)
	if err != nil {
		return domain.StartResult{}, err
	}
	cmd := domain.StartCommand{
		RunID: newID(),
		Start: domain.StartInfo{
			TenantID: tenantID, ScopeID: scope, Type: op.Type, CanonicalType: op.Canonical, Label: op.Label,
			Surface: req.Surface.Name, InitiatorID: req.ActorID, Target: target, Connection: ref,
		},
		At: s.now(),
	}
	event, err := domain.Decide(state, cmd, facts)
	if err != nil {
		return domain.StartResult{}, fmt.Errorf("decide start on %s: %w", scope, err)
	}
	var run domain.Run
	switch e := event.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, _ = domain.RunOf(e)
	default:
		run = state.Active.Run()
	}
	ctx = WithMetadata(ctx, req.ActorID, tenantID, run.ID)
	if err := s.record(ctx, tx, scope, tenantID, state, version, event); err != nil {
		return domain.StartResult{}, err
	}
	return domain.PresentStart(op.Label, domain.OutcomeOf(event), run), nil
}

// loadScope returns a scope's current state and version.
func loadScope(ctx context.Context, tx *eventstore.Tx, scope domain.ScopeID) (domain.ScopeState, int64, error) {
	var state domain.ScopeState
	var version int64
	var b pgx.Batch
	queueLoadScope(&b, scope, &state, &version)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return state, 0, err
	}
	return state, version, nil
}

// queueLoadScope queues the read of a scope's state and version (zero for
// a scope with no history) into b.
func queueLoadScope(b *pgx.Batch, scope domain.ScopeID, state *domain.ScopeState, version *int64) {
	queueScopeRead(b, string(scope), `SELECT version, state FROM scopes WHERE scope_id = $1`, string(scope), state, version)
}

// queueLoadScopeOf is queueLoadScope for the scope of runID.
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

// record appends event to the scope's stream at the expected version and
// holds back, for the commit's round trip, the save of the evolved state
// and the mirror of the run's status into runs. The caller holds the
// scope's lock.
func (s *Service) record(ctx context.Context, tx *eventstore.Tx, scope domain.ScopeID, tenantID string,
	state domain.ScopeState, version int64, event domain.Event) error {
	if _, err := tx.AppendAt(ctx, string(scope), version, event); err != nil {
		return fmt.Errorf("append to %s: %w", scope, err)
	}
	if err := deferScopeSave(tx, scope, tenantID, version+1, domain.Evolve(state, event)); err != nil {
		return err
	}
	deferMirror(tx, event, leaseFrom(ctx))
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

// deferMirror holds back the statement that keeps the runs table in step
// with a scope event (none for deduped and busy answers). A run that
// starts gets its first lease with it.
func deferMirror(tx *eventstore.Tx, event domain.Event, lease time.Duration) {
	switch e := event.(type) {
	case domain.StartAccepted:
		tx.Defer(`INSERT INTO runs (id, scope_id, tenant_id, type, surface, status, created_at)
			VALUES ($1, $2, $3, $4, $5, 'queued', $6)`, e.RunID, string(e.ScopeID), e.TenantID, e.Type, e.Surface, e.At)
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

var errIdempotencyRace = errors.New("idempotency key taken concurrently")

func (s *Service) lookupIdempotent(ctx context.Context, tx *eventstore.Tx, req StartRequest) (StartResponse, bool, error) {
	var hash, body []byte
	err := tx.QueryRow(ctx, `SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2`,
		req.ActorID, req.IdempotencyKey).Scan(&hash, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return StartResponse{}, false, nil
	}
	if err != nil {
		return StartResponse{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	if !bytes.Equal(hash, req.RequestHash) {
		return StartResponse{}, true, ErrIdempotencyKeyReused
	}
	var result domain.StartResult
	if err := json.Unmarshal(body, &result); err != nil {
		return StartResponse{}, true, fmt.Errorf("decode stored response: %w", err)
	}
	return StartResponse{Result: result, Replayed: true}, true, nil
}

func (s *Service) rememberIdempotent(ctx context.Context, tx *eventstore.Tx, req StartRequest, result domain.StartResult) error {
	body, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		req.ActorID, req.IdempotencyKey, req.RequestHash, StatusOf(result.Outcome), body, s.now())
	if err != nil {
		return fmt.Errorf("remember idempotency key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errIdempotencyRace
	}
	return nil
}

// StatusOf is the HTTP status of an outcome (contract section 5).
func StatusOf(o domain.Outcome) int {
	switch o {
	case domain.OutcomeAccepted:
		return 202
	case domain.OutcomeDeduped:
		return 200
	case domain.OutcomeScopeBusy:
		return 409
	default:
		return 422
	}
}
