package gate

import (
	"context"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// DryRun decides reqs as Start would, in order (a start sees those before
// it on its scope as if they had been recorded), on what is committed
// now: the same resolution, authorization, safeguards and decision, with
// nothing locked, recorded, remembered or counted. Each answer is its
// StartResponse or its own error, in reqs' order.
func (s *Service) DryRun(ctx context.Context, reqs []StartRequest) ([]StartResponse, []error, error) {
	return s.decideWithout(ctx, reqs, dryRun)
}

// Availability decides each of reqs as if it were the only start, on what
// is committed now, recording nothing: what each button would get.
func (s *Service) Availability(ctx context.Context, reqs []StartRequest) ([]StartResponse, []error, error) {
	return s.decideWithout(ctx, reqs, eachAlone)
}

// decideWithout prepares and decides reqs in mode m (dryRun or
// eachAlone) in one read of the database.
func (s *Service) decideWithout(ctx context.Context, reqs []StartRequest, m mode) ([]StartResponse, []error, error) {
	out, errs := make([]StartResponse, len(reqs)), make([]error, len(reqs))
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var batch []*pending
		var at []int
		for i, req := range reqs {
			p, err := s.prepare(ctx, tx, req)
			if err != nil {
				errs[i] = err
				continue
			}
			batch, at = append(batch, p), append(at, i)
		}
		if len(batch) == 0 {
			return nil
		}
		if err := s.decideAs(ctx, tx, batch, m); err != nil {
			return err
		}
		for j, p := range batch {
			out[at[j]], errs[at[j]] = p.resp, p.err
		}
		return nil
	})
	return out, errs, err
}

// StartMany decides reqs as if each had been sent alone, in order (a
// start sees those before it on its scope), through the group decision:
// transactions of up to a group's window of starts, each falling back to
// its scopes one by one when it fails. Each answer is its StartResponse
// or its own error, in reqs' order.
func (s *Service) StartMany(ctx context.Context, reqs []StartRequest) ([]StartResponse, []error) {
	out, errs := make([]StartResponse, len(reqs)), make([]error, len(reqs))
	var batch []*pending
	var at []int
	for i, req := range reqs {
		p, err := s.prepare(ctx, s.db, req)
		if err != nil {
			errs[i] = err
			continue
		}
		batch, at = append(batch, p), append(at, i)
	}
	for from := 0; from < len(batch); from += groupWindow {
		s.starts.do(batch[from:min(from+groupWindow, len(batch))])
	}
	for j, p := range batch {
		out[at[j]], errs[at[j]] = s.tell(p)
	}
	return out, errs
}

// Button is one start button of a tenant: a surface and what it starts
// on (the tenant on its default connection, or a connection).
type Button struct {
	Request    StartRequest
	Connection *connections.Connection // the connection it starts on (nil: the tenant has no default)
}

// TenantSurfaces and ConnectionSurfaces are a tenant's buttons (contract
// section 15): the tenant's own, on its default connection, and each
// connection's.
var (
	TenantSurfaces     = []domain.Surface{domain.SurfaceTenantVerification, domain.SurfaceGroupsSync, domain.SurfaceRoleDefinitionsSync}
	ConnectionSurfaces = []domain.Surface{domain.SurfaceConnectionCheck, domain.SurfaceInventorySync, domain.SurfaceComplianceSnapshot}
)

// ButtonsOf returns every start button of tenant for who, given its
// connections: the tenant's surfaces first, then each connection's, in
// conns' order. The API's availability and the console's connections
// page decide the same list (Availability).
func ButtonsOf(who domain.Actor, tenant string, conns []connections.Connection) []Button {
	var def *connections.Connection
	for i := range conns {
		if conns[i].IsDefault {
			def = &conns[i]
		}
	}
	var out []Button
	for _, s := range TenantSurfaces {
		b := Button{Request: StartRequest{Actor: who, Surface: s, TenantID: tenant}, Connection: def}
		if def != nil {
			b.Request.ConnectionID = def.ID
		}
		out = append(out, b)
	}
	for i := range conns {
		for _, s := range ConnectionSurfaces {
			out = append(out, Button{Request: StartRequest{Actor: who, Surface: s, ConnectionID: conns[i].ID}, Connection: &conns[i]})
		}
	}
	return out
}

// Requests returns the start requests of buttons.
func Requests(buttons []Button) []StartRequest {
	out := make([]StartRequest, len(buttons))
	for i, b := range buttons {
		out[i] = b.Request
	}
	return out
}
