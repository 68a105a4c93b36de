package audit

import (
	"context"
	"errors"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/projections"
)

// Moment is a point of the history: a position (the events up to it in
// subscriber order) or a time (the events recorded at or before it).
type Moment struct {
	Position int64
	Time     time.Time
	point    eventstore.Checkpoint
}

// AtPosition and AtTime return the moments of the history as of an event
// and as of a time.
func AtPosition(p int64) Moment { return Moment{Position: p} }
func AtTime(t time.Time) Moment { return Moment{Time: t} }
func atPoint(e eventstore.Event) Moment {
	return Moment{Position: e.Position, point: eventstore.Checkpoint{TxID: e.TxID, Position: e.Position}}
}

// includes reports whether e happened at or before m.
func (m Moment) includes(e eventstore.Event) bool {
	if m.Position > 0 {
		return !m.point.Before(e)
	}
	return !e.RecordedAt.After(m.Time)
}

// resolve finds the point of a position moment; eventstore.ErrUnknownPosition
// if no event has it.
func (h *History) resolve(ctx context.Context, m Moment) (Moment, error) {
	if m.Position <= 0 || m.point.Position != 0 {
		return m, nil
	}
	p, err := h.store.PointOf(ctx, m.Position)
	m.point = p
	return m, err
}

// decoded is an event with its payload.
type decoded struct {
	eventstore.Event
	payload domain.Event
}

func (h *History) decode(events []eventstore.Event) ([]decoded, error) {
	out := make([]decoded, 0, len(events))
	for _, e := range events {
		p, err := h.store.Registry().Decode(e)
		if errors.Is(err, eventstore.ErrUnknownEventType) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if de, ok := p.(domain.Event); ok {
			out = append(out, decoded{e, de})
		}
	}
	return out, nil
}

// runEvents returns the events of run id: its decision, the later starts
// answered with it and its lifecycle, in position order.
func (h *History) runEvents(ctx context.Context, id string) ([]decoded, error) {
	events, err := h.store.ReadCorrelated(ctx, id, 100_000)
	if err != nil {
		return nil, err
	}
	return h.decode(events)
}

// RunAt returns run id folded from its events as of m: its decision, then
// its lifecycle, the counts of later starts answered with it. It is
// domain.ErrNotFound if the run was not decided by then,
// eventstore.ErrUnknownPosition if m names no event.
func (h *History) RunAt(ctx context.Context, id string, m Moment) (projections.RunView, error) {
	m, err := h.resolve(ctx, m)
	if err != nil {
		return projections.RunView{}, err
	}
	events, err := h.runEvents(ctx, id)
	if err != nil {
		return projections.RunView{}, err
	}
	return foldRun(id, events, m)
}

func foldRun(id string, events []decoded, m Moment) (projections.RunView, error) {
	f := projections.RunFold{ID: id}
	for _, e := range events {
		if m.includes(e.Event) {
			f.Add(e.payload)
		}
	}
	if !f.Found {
		return projections.RunView{}, domain.ErrNotFound
	}
	return f.View, nil
}

// ConnectionAt returns connection id folded from its history as of m,
// domain.ErrNotFound if it did not exist by then.
func (h *History) ConnectionAt(ctx context.Context, id string, m Moment) (connections.Connection, error) {
	m, err := h.resolve(ctx, m)
	if err != nil {
		return connections.Connection{}, err
	}
	raw, err := h.store.ReadStream(ctx, domain.ConnectionStream(id).String(), 1)
	if err != nil {
		return connections.Connection{}, err
	}
	if len(raw) == 0 {
		return connections.Connection{}, domain.ErrNotFound
	}
	// Another connection made the default in its place names it; Apply
	// passes over those that name neither.
	others, err := h.store.ReadTenantOfType(ctx, raw[0].Metadata.TenantID, "ProviderConnectionMadeDefault")
	if err != nil {
		return connections.Connection{}, err
	}
	events, err := h.decode(append(raw, others...))
	if err != nil {
		return connections.Connection{}, err
	}
	var c connections.Connection
	found := false
	for _, e := range sortedBySubscriberOrder(events) {
		if !m.includes(e.Event) {
			continue
		}
		if _, ok := e.payload.(domain.ProviderConnectionCreated); ok {
			found = true
		}
		if found {
			c = c.Apply(e.payload, e.Metadata.Actor)
		}
	}
	if !found {
		return connections.Connection{}, domain.ErrNotFound
	}
	return c, nil
}

func sortedBySubscriberOrder(events []decoded) []decoded {
	// Insertion sort: a connection's history is short and nearly sorted.
	for i := 1; i < len(events); i++ {
		for j := i; j > 0 && before(events[j].Event, events[j-1].Event); j-- {
			events[j], events[j-1] = events[j-1], events[j]
		}
	}
	return events
}

func before(a, b eventstore.Event) bool {
	return a.TxID < b.TxID || (a.TxID == b.TxID && a.Position < b.Position)
}

// Explanation says, from the history alone, why a run got its outcome.
type Explanation struct {
	RunID    string   `json:"run_id"`
	TenantID string   `json:"tenant_id"`
	Decision Decision `json:"decision"`
	AskedBy  Asker    `json:"asked_by"`
	Facts    Facts    `json:"facts"`
	// LaterStarts are the starts answered deduped or scope_busy with the
	// run, oldest first.
	LaterStarts []LaterStart `json:"later_starts"`
	// Lifecycle is what happened to the run after its decision.
	Lifecycle []Step `json:"lifecycle"`
}

// Decision is the gate's decision on the start that created the run, in
// the words its answer had.
type Decision struct {
	Outcome domain.Outcome `json:"outcome"`
	Message domain.Message `json:"message"`
	Reason  *domain.Reason `json:"reason"`
	At      time.Time      `json:"at"`
	Event   Record         `json:"event"`
}

// Asker is who asked for a start, and through which surface.
type Asker struct {
	InitiatorID string `json:"initiator_id"`
	Actor       string `json:"actor"`
	Surface     string `json:"surface"`
	RequestID   string `json:"request_id"`
	// Via is the integration the start came through ("integration:<id>";
	// null when its initiator asked directly).
	Via *string `json:"via"`
	// Label names the initiator for people ("<user> via <integration>");
	// the history holds ids only, so the surface that shows the
	// explanation sets it (Name).
	Label string `json:"label"`
}

// Name sets the asker's label with name, which names users and
// integrations.
func (a *Asker) Name(ctx context.Context, name func(ctx context.Context, userID, via string) (string, error)) error {
	via := ""
	if a.Via != nil {
		via = *a.Via
	}
	label, err := name(ctx, a.InitiatorID, via)
	a.Label = label
	return err
}

// Facts are what a decision was made on, as of that moment.
type Facts struct {
	// Connection is the provider connection (its readiness included) as it
	// was when the start was decided; nil for a start without one.
	Connection *connections.Connection `json:"provider_connection"`
	ScopeID    string                  `json:"scope_id"`
	// ScopeHeldBy is the run that was active on the scope then; nil if
	// the scope was free.
	ScopeHeldBy *domain.Run `json:"scope_held_by"`
}

// LaterStart is a start answered deduped or scope_busy with the run.
type LaterStart struct {
	Outcome     domain.Outcome `json:"outcome"`
	Requested   string         `json:"requested"`
	At          time.Time      `json:"at"`
	InitiatorID string         `json:"initiator_id"`
	Actor       string         `json:"actor"`
	Surface     string         `json:"surface"`
	// Via is the integration the start came through (null when its
	// initiator asked directly).
	Via      *string `json:"via"`
	Position int64   `json:"position"`
	EventID  string  `json:"event_id"`
}

// Step is a lifecycle event of a run.
type Step struct {
	Type     string           `json:"type"`
	Status   domain.RunStatus `json:"status"`
	At       time.Time        `json:"at"`
	Position int64            `json:"position"`
	EventID  string           `json:"event_id"`
}

// Explain returns why run id got its outcome, from its events and those
// of its scope and connection as of its decision; domain.ErrNotFound if
// no run has that id.
func (h *History) Explain(ctx context.Context, id string) (Explanation, error) {
	events, err := h.runEvents(ctx, id)
	if err != nil {
		return Explanation{}, err
	}
	var x Explanation
	var decision *decoded
	var run domain.Run
	for i, e := range events {
		switch p := e.payload.(type) {
		case domain.StartAccepted, domain.StartBlocked:
			r, _ := domain.RunOf(p)
			if r.ID != id {
				continue
			}
			decision, run = &events[i], r
			outcome := domain.OutcomeOf(p)
			res := domain.PresentStart(r.Label, outcome, r)
			x.RunID, x.TenantID = id, r.TenantID
			x.Decision = Decision{Outcome: outcome, Message: res.Message, Reason: res.Reason, At: r.CreatedAt, Event: RecordOf(e.Event)}
			x.AskedBy = Asker{InitiatorID: r.InitiatorID, Actor: e.Metadata.Actor, Surface: r.Surface, RequestID: e.Metadata.RequestID}
			x.AskedBy.Via = viaOf(e.Metadata)
		case domain.StartDeduped:
			if p.RunID == id {
				x.LaterStarts = append(x.LaterStarts, laterStart(domain.OutcomeDeduped, p.StartInfo, p.At, e.Event))
			}
		case domain.StartScopeBusy:
			if p.RunID == id {
				x.LaterStarts = append(x.LaterStarts, laterStart(domain.OutcomeScopeBusy, p.StartInfo, p.At, e.Event))
			}
		case domain.RunEvent:
			if decision != nil && p.Ref().RunID == id {
				run = run.Apply(p)
				at := run.StartedAt // RunStarted; an end sets FinishedAt
				if run.FinishedAt != nil {
					at = run.FinishedAt
				}
				x.Lifecycle = append(x.Lifecycle, Step{Type: e.Type, Status: run.Status, At: *at, Position: e.Position, EventID: e.ID})
			}
		}
	}
	if decision == nil {
		return Explanation{}, domain.ErrNotFound
	}
	if x.LaterStarts == nil {
		x.LaterStarts = []LaterStart{}
	}
	if x.Lifecycle == nil {
		x.Lifecycle = []Step{}
	}
	at := atPoint(decision.Event)
	x.Facts.ScopeID = decision.StreamID
	if ref := run.ProviderConnection; ref != nil {
		c, err := h.ConnectionAt(ctx, ref.ID, at)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return Explanation{}, err
		}
		if err == nil {
			x.Facts.Connection = &c
		}
	}
	holder, err := h.holderAt(ctx, decision.Event, at)
	if err != nil {
		return Explanation{}, err
	}
	x.Facts.ScopeHeldBy = holder
	return x, nil
}

// holderAt returns the run active on the scope of decision just before
// it: the scope's last run accepted before, if it had not ended by then.
func (h *History) holderAt(ctx context.Context, decision eventstore.Event, at Moment) (*domain.Run, error) {
	accepted, ok, err := h.store.LastBefore(ctx, decision.StreamID, decision.StreamVersion, domain.StartAccepted{}.EventType())
	if err != nil || !ok {
		return nil, err
	}
	p, err := h.store.Registry().Decode(accepted)
	if err != nil {
		return nil, err
	}
	holderID := p.(domain.StartAccepted).RunID
	v, err := h.RunAt(ctx, holderID, at)
	if err != nil {
		return nil, err
	}
	if v.Status != domain.StatusQueued && v.Status != domain.StatusRunning {
		return nil, nil
	}
	return &v.Run, nil
}

func laterStart(outcome domain.Outcome, s domain.StartInfo, at time.Time, e eventstore.Event) LaterStart {
	return LaterStart{Outcome: outcome, Requested: s.Label, At: at, InitiatorID: s.InitiatorID, Actor: e.Metadata.Actor,
		Surface: s.Surface, Via: viaOf(e.Metadata), Position: e.Position, EventID: e.ID}
}

// viaOf is the integration an event was recorded through, nil if none.
func viaOf(md eventstore.Metadata) *string {
	if md.Via == "" {
		return nil
	}
	return &md.Via
}
