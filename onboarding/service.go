package onboarding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/tenancy"
)

var (
	// ErrBootstrapInProgress: a bootstrap operation is admitted and active.
	ErrBootstrapInProgress = errors.New("a bootstrap operation is still running")
	// ErrBootstrapRequested: the session's bootstrap was requested before.
	ErrBootstrapRequested = errors.New("bootstrap already requested for this session")
	// ErrNothingToContinue: no bootstrap, or nothing pending.
	ErrNothingToContinue = errors.New("nothing to continue: no pending bootstrap operations")
	// errHandled: a process-manager step was done already (redelivery).
	errHandled = errors.New("already handled")
)

// Service runs onboarding sessions through the gate.
type Service struct {
	gate    *gate.Service
	tenancy *tenancy.Service
	conns   *connections.Service
	// db is what the service reads with; store records its changes.
	db    *pgxpool.Pool
	store *eventstore.Store
	now   journal.Clock
}

// New returns the onboarding service.
func New(db *pgxpool.Pool, store *eventstore.Store, g *gate.Service, t *tenancy.Service, conns *connections.Service, now journal.Clock) *Service {
	return &Service{db: db, gate: g, tenancy: t, conns: conns, store: store, now: now}
}

// Create opens a session for a tenant; connectionID ("" for the default)
// is the connection its steps use.
func (s *Service) Create(ctx context.Context, by domain.Actor, tenantID, connectionID string) (Session, error) {
	if err := s.tenancy.Authorize(ctx, by, tenantID, domain.CapOnboardingRun); err != nil {
		return Session{}, err
	}
	if connectionID != "" {
		c, err := s.conns.Current(ctx, connectionID)
		if err != nil || c.TenantID != tenantID {
			return Session{}, domain.ErrNotFound
		}
	}
	now := s.now()
	id := journal.NewID()
	var sess Session
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var err error
		sess, err = s.record(ctx, tx, by, Session{}, now, []domain.Event{
			domain.OnboardingSessionCreated{SessionID: id, TenantID: tenantID, ConnectionID: connectionID, CreatedBy: by.ID, At: now}})
		return err
	})
	return sess, err
}

// Get returns a session the caller may view.
func (s *Service) Get(ctx context.Context, who domain.Actor, id string) (Session, error) {
	sess, err := load(ctx, s.db, id)
	if err != nil {
		return Session{}, err
	}
	if err := s.tenancy.Authorize(ctx, who, sess.TenantID, domain.CapOperationsView); err != nil {
		return Session{}, err
	}
	return sess, nil
}

// Request carries what a start request adds to an onboarding step.
type Request struct {
	Actor          domain.Actor
	SessionID      string
	IdempotencyKey string
	RequestHash    []byte
	// Limits are the deadlines' limits of the runs the request admits (for
	// a bootstrap: of every item it admits, then and later).
	Limits *domain.Limits
}

func (s *Service) startRequest(r Request, sess Session, surface domain.Surface, op string) gate.StartRequest {
	req := gate.StartRequest{
		Actor: r.Actor, Surface: surface, Operation: op, TenantID: sess.TenantID,
		IdempotencyKey: r.IdempotencyKey, RequestHash: r.RequestHash, Limits: r.Limits,
	}
	if sess.ProviderConnectionID != nil {
		req.ConnectionID = *sess.ProviderConnectionID
	}
	if surface == domain.SurfaceOnboardingBootstrap && sess.Steps.Bootstrap.Limits != nil {
		req.Limits = sess.Steps.Bootstrap.Limits.limits()
	}
	return req
}

// inSession runs fn in one transaction that holds the session's lock,
// with the session as of the lock. Every transaction that starts through
// the gate for a session takes the session's lock first, then the gate's.
func (s *Service) inSession(ctx context.Context, id string, fn func(ctx context.Context, tx *eventstore.Tx, sess Session) error) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := journal.Lock(ctx, tx, domain.OnboardingStream(id)); err != nil {
			return err
		}
		sess, err := load(ctx, tx, id)
		if err != nil {
			return err
		}
		return fn(ctx, tx, sess)
	})
}

// Verify runs the verification step: a provider.connection.check through
// the gate, recorded on the session in the same transaction.
func (s *Service) Verify(ctx context.Context, r Request) (gate.StartResponse, error) {
	var resp gate.StartResponse
	err := s.inSession(ctx, r.SessionID, func(ctx context.Context, tx *eventstore.Tx, sess Session) error {
		var err error
		resp, err = s.gate.StartTx(ctx, tx, s.startRequest(r, sess, domain.SurfaceOnboardingVerification, ""))
		if err != nil || resp.Replayed {
			return err
		}
		res, now := resp.Result, s.now()
		_, err = s.record(ctx, tx, r.Actor, sess, now, []domain.Event{domain.OnboardingVerificationAttempted{
			SessionID: sess.ID, TenantID: sess.TenantID, RunID: res.Run.ID, Outcome: res.Outcome, Reason: res.Reason, At: now}})
		return err
	})
	return resp, err
}

// Bootstrap selects operations and admits the first through the gate; the
// rest stay pending on the session.
func (s *Service) Bootstrap(ctx context.Context, r Request, operations []string) (gate.StartResponse, error) {
	sess, err := load(ctx, s.db, r.SessionID)
	if err != nil {
		return gate.StartResponse{}, err
	}
	// Authorization comes first (contract section 2): a non-member must
	// get the same 404 as for a missing session, whatever the body says.
	if err := s.tenancy.Authorize(ctx, r.Actor, sess.TenantID, domain.CapOnboardingRun); err != nil {
		return gate.StartResponse{}, err
	}
	items, err := selectItems(operations)
	if err != nil {
		return gate.StartResponse{}, err
	}
	var resp gate.StartResponse
	err = s.inSession(ctx, r.SessionID, func(ctx context.Context, tx *eventstore.Tx, sess Session) error {
		var err error
		resp, err = s.gate.StartTx(ctx, tx, s.startRequest(r, sess, domain.SurfaceOnboardingBootstrap, items[0].Type))
		if err != nil || resp.Replayed {
			return err
		}
		if len(sess.Steps.Bootstrap.Items) > 0 {
			return ErrBootstrapRequested // rolls the decision back: nothing recorded
		}
		res, now := resp.Result, s.now()
		types := make([]string, len(items))
		for i, it := range items {
			types[i] = it.Type
		}
		_, err = s.record(ctx, tx, r.Actor, sess, now, []domain.Event{
			bootstrapRequested(sess, types, r, now),
			attemptedEvent(sess, 0, items[0].Type, res, now),
		})
		return err
	})
	return resp, err
}

// Continue retries the first pending bootstrap operation through the gate.
func (s *Service) Continue(ctx context.Context, r Request) (gate.StartResponse, error) {
	sess, err := load(ctx, s.db, r.SessionID)
	if err != nil {
		return gate.StartResponse{}, err
	}
	if err := s.tenancy.Authorize(ctx, r.Actor, sess.TenantID, domain.CapOnboardingRun); err != nil {
		return gate.StartResponse{}, err
	}
	next := sess.Steps.Bootstrap.nextPending()
	if sess.Steps.Bootstrap.active() >= 0 {
		return gate.StartResponse{}, ErrBootstrapInProgress
	}
	if next < 0 {
		return gate.StartResponse{}, ErrNothingToContinue
	}
	return s.startItem(ctx, r, next, nil)
}

// finish is the end of an admitted item's run, recorded with the start of
// the next item.
type finish struct {
	index  int
	runID  string
	status domain.RunStatus
	reason *domain.Reason
}

// startItem starts item next of the session through the gate; with done
// set it first records that item's run as finished, in the same
// transaction, unless that was done already (errHandled).
func (s *Service) startItem(ctx context.Context, r Request, next int, done *finish) (gate.StartResponse, error) {
	var resp gate.StartResponse
	err := s.inSession(ctx, r.SessionID, func(ctx context.Context, tx *eventstore.Tx, sess Session) error {
		b := sess.Steps.Bootstrap
		if done != nil {
			it := b.Items[done.index]
			if it.Status != ItemAdmitted || it.RunID == nil || *it.RunID != done.runID {
				return errHandled
			}
		} else if b.active() >= 0 {
			return ErrBootstrapInProgress
		} else if b.nextPending() != next {
			return ErrNothingToContinue
		}
		var err error
		resp, err = s.gate.StartTx(ctx, tx, s.startRequest(r, sess, domain.SurfaceOnboardingBootstrap, b.Items[next].Type))
		if err != nil || resp.Replayed {
			return err
		}
		res, now := resp.Result, s.now()
		var events []domain.Event
		if done != nil {
			events = append(events, domain.BootstrapItemFinished{SessionID: sess.ID, TenantID: sess.TenantID,
				Index: done.index, RunID: done.runID, Status: done.status, Reason: done.reason, At: now})
		}
		events = append(events, attemptedEvent(sess, next, b.Items[next].Type, res, now))
		_, err = s.record(ctx, tx, r.Actor, sess, now, events)
		return err
	})
	return resp, err
}

// OnRunEnded is the process manager's reaction to the end of a run: if
// the run was an admitted bootstrap operation, it records the end and,
// after a success, starts the next pending operation through the gate on
// behalf of the same initiator, in one transaction. Safe under
// redelivery and restarts: a step already recorded is skipped.
func (s *Service) OnRunEnded(ctx context.Context, runID string, status domain.RunStatus, reason *domain.Reason) error {
	sessionID, idx, err := bootstrapRun(ctx, s.db, runID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // not a bootstrap run
	}
	if err != nil {
		return err
	}
	sess, err := load(ctx, s.db, sessionID)
	if err != nil {
		return err
	}
	b := sess.Steps.Bootstrap
	if it := b.Items[idx]; it.Status != ItemAdmitted || it.RunID == nil || *it.RunID != runID {
		return nil // recorded before
	}
	next := -1
	if status == domain.StatusSucceeded {
		for i := idx + 1; i < len(b.Items); i++ {
			if b.Items[i].Status == ItemPending {
				next = i
				break
			}
		}
		if next < 0 {
			next = b.nextPendingExcept(idx)
		}
	}
	if next < 0 {
		return s.recordFinished(ctx, domain.Actor{ID: deref(b.InitiatorID), CausedBy: runID}, sessionID, idx, runID, status, reason)
	}
	r := Request{Actor: domain.Actor{ID: deref(b.InitiatorID), CausedBy: runID}, SessionID: sessionID}
	_, err = s.startItem(ctx, r, next, &finish{index: idx, runID: runID, status: status, reason: reason})
	switch {
	case err == nil, errors.Is(err, errHandled):
		return nil
	case errors.Is(err, domain.ErrNotFound), isForbidden(err):
		// The initiator lost access meanwhile: record the end only; the
		// rest stays pending for someone who may continue.
		return s.recordFinished(ctx, r.Actor, sessionID, idx, runID, status, reason)
	}
	return err
}

func (b *BootstrapStep) nextPendingExcept(skip int) int {
	for i, it := range b.Items {
		if i != skip && it.Status == ItemPending {
			return i
		}
	}
	return -1
}

func (s *Service) recordFinished(ctx context.Context, by domain.Actor, sessionID string, idx int, runID string, status domain.RunStatus, reason *domain.Reason) error {
	err := s.inSession(ctx, sessionID, func(ctx context.Context, tx *eventstore.Tx, current Session) error {
		if it := current.Steps.Bootstrap.Items[idx]; it.Status != ItemAdmitted || it.RunID == nil || *it.RunID != runID {
			return errHandled
		}
		now := s.now()
		_, err := s.record(ctx, tx, by, current, now, []domain.Event{domain.BootstrapItemFinished{SessionID: current.ID,
			TenantID: current.TenantID, Index: idx, RunID: runID, Status: status, Reason: reason, At: now}})
		return err
	})
	if errors.Is(err, errHandled) {
		return nil
	}
	return err
}

func isForbidden(err error) bool {
	var f *domain.ForbiddenError
	return errors.As(err, &f)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// selectItems validates the selected operations of a bootstrap.
func selectItems(operations []string) ([]Item, error) {
	if len(operations) == 0 {
		return nil, domain.Invalid("operations", "select at least one operation")
	}
	seen := map[string]bool{}
	items := make([]Item, 0, len(operations))
	for i, name := range operations {
		op, ok := domain.LookupOperation(name)
		if !ok {
			return nil, &UnknownOperationError{Name: name}
		}
		if !op.Bootstrappable() {
			return nil, domain.Invalid("operations", "%s needs a target and cannot be bootstrapped", name)
		}
		if seen[op.Canonical] {
			return nil, domain.Invalid("operations", "%s is selected twice", name)
		}
		seen[op.Canonical] = true
		items = append(items, Item{Index: i, Type: op.Type, CanonicalType: op.Canonical, Label: op.Label,
			Status: ItemPending, Attempts: []Attempt{}})
	}
	return items, nil
}

// UnknownOperationError names a selected operation type that does not exist.
type UnknownOperationError struct{ Name string }

func (e *UnknownOperationError) Error() string {
	return fmt.Sprintf("%q is not an operation type", e.Name)
}

// attemptedEvent returns the event of the start of item i (of type typ)
// of sess through the gate, answered res.
// bootstrapRequested is the event of r selecting types, with its limits.
func bootstrapRequested(sess Session, types []string, r Request, at time.Time) domain.BootstrapRequested {
	e := domain.BootstrapRequested{SessionID: sess.ID, TenantID: sess.TenantID, Operations: types, InitiatorID: r.Actor.ID, At: at}
	if r.Limits != nil {
		e.QueueTTLS, e.MaxDurationS = int64(r.Limits.QueueTTL/time.Second), int64(r.Limits.MaxDuration/time.Second)
	}
	return e
}

func attemptedEvent(sess Session, i int, typ string, res domain.StartResult, at time.Time) domain.Event {
	return domain.BootstrapItemAttempted{SessionID: sess.ID, TenantID: sess.TenantID, Index: i,
		Type: typ, RunID: res.Run.ID, Outcome: res.Outcome, Reason: res.Reason, At: at}
}

// record folds events into sess (as of the session's lock; the zero
// Session for a new one), saves the result as of at with the runs it
// admitted, and appends events to the session's stream with by as their
// actor. It returns the session as saved.
func (s *Service) record(ctx context.Context, tx *eventstore.Tx, by domain.Actor, sess Session, at time.Time, events []domain.Event) (Session, error) {
	for _, e := range events {
		sess = sess.Apply(e)
	}
	if err := save(ctx, tx, sess, at, events); err != nil {
		return Session{}, err
	}
	return sess, journal.Append(ctx, tx, domain.OnboardingStream(sess.ID), journal.Meta(by, sess.TenantID, sess.ID), events...)
}

// List returns a tenant's sessions the caller may view, newest first.
func (s *Service) List(ctx context.Context, who domain.Actor, tenantID string) ([]Session, error) {
	if err := s.tenancy.Authorize(ctx, who, tenantID, domain.CapOperationsView); err != nil {
		return nil, err
	}
	return listSessions(ctx, s.db, tenantID, 50)
}
