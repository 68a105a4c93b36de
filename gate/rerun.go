package gate

import (
	"context"
	"errors"
	"fmt"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/tenancy"
)

// ErrRunActive means a rerun named a run that is still queued or running.
var ErrRunActive = errors.New("the run is still queued or running")

// RerunRequest asks to start the operation of a run that ended once more.
type RerunRequest struct {
	Actor domain.Actor
	RunID string
	// Confirm and AcknowledgeWarnings are a restore execute's safeguards,
	// as for the execute endpoint.
	Confirm, AcknowledgeWarnings bool
	// IdempotencyKey, RequestHash and Limits are as for every start.
	IdempotencyKey string
	RequestHash    []byte
	Limits         *domain.Limits
}

// Rerun starts the operation of run req.RunID again, through the same
// decision as every start (surface rerun): same tenant, operation type and
// target, on the connection the original was decided on (its pinned
// connection, the one it was blocked on, or the tenant's default if it had
// none). The caller needs the operation's capability (a non-member gets
// domain.ErrNotFound, as for a run that does not exist); a run still
// queued or running is refused with ErrRunActive.
func (s *Service) Rerun(ctx context.Context, req RerunRequest) (StartResponse, error) {
	sr, err := s.RerunStart(ctx, req)
	if err != nil {
		return StartResponse{}, err
	}
	return s.Start(ctx, sr)
}

// RerunStart returns the start that runs req's run again, once the
// caller may and the run has ended: for Start, or a dry run.
func (s *Service) RerunStart(ctx context.Context, req RerunRequest) (StartRequest, error) {
	r, err := readRun(ctx, s.db, req.RunID)
	if err != nil {
		return StartRequest{}, err
	}
	op := domain.MustOperation(r.typ)
	if err := tenancy.AuthorizeIn(ctx, s.db, req.Actor, r.tenantID, op.Capability); err != nil {
		return StartRequest{}, err
	}
	if r.status.Active() {
		return StartRequest{}, fmt.Errorf("rerun %s: %w", req.RunID, ErrRunActive)
	}
	start, err := s.startOf(ctx, req.RunID)
	if err != nil {
		return StartRequest{}, err
	}
	sr := StartRequest{
		Actor: req.Actor, Surface: domain.RerunSurface(start.Type), TenantID: start.TenantID,
		RestoreRunID: start.Target, Confirm: req.Confirm, AcknowledgeWarnings: req.AcknowledgeWarnings,
		IdempotencyKey: req.IdempotencyKey, RequestHash: req.RequestHash, Limits: req.Limits, RerunOf: req.RunID,
	}
	if start.Connection != nil {
		sr.ConnectionID = start.Connection.ID
	}
	return sr, nil
}

// startOf returns what the start that created runID asked for.
func (s *Service) startOf(ctx context.Context, runID string) (domain.StartInfo, error) {
	e, err := s.store.LastCorrelated(ctx, runID, domain.StartAccepted{}.EventType(), domain.StartBlocked{}.EventType())
	if err != nil {
		return domain.StartInfo{}, fmt.Errorf("read the start of run %s: %w", runID, err)
	}
	p, err := s.store.Registry().Decode(e)
	if err != nil {
		return domain.StartInfo{}, err
	}
	switch e := p.(type) {
	case domain.StartAccepted:
		return e.StartInfo, nil
	case domain.StartBlocked:
		return e.StartInfo, nil
	}
	return domain.StartInfo{}, fmt.Errorf("the start of run %s is a %T", runID, p)
}
