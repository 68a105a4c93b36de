// Package gate is opsgate's application service: it runs every decision
// of the domain and its append in one transaction under the protected
// scope's lock, and keeps the write-side state that decisions read current
// in the same transaction as the events that change it.
package gate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// TopicStartsAccepted is the watermill topic that carries StartAccepted
// events and nothing else; the worker subscribes to it alone.
const TopicStartsAccepted = "starts_accepted"

// NewRegistry returns the registry of every opsgate event.
func NewRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	for _, e := range domain.ScopeEvents() {
		reg.Register(e)
	}
	for _, e := range domain.TenancyEvents() {
		reg.Register(e)
	}
	for _, e := range domain.OnboardingEvents() {
		reg.Register(e)
	}
	return reg
}

// Route sends StartAccepted events to TopicStartsAccepted besides the
// topic of all events.
func Route(eventType string) []string {
	if eventType == (domain.StartAccepted{}).EventType() {
		return []string{TopicStartsAccepted}
	}
	return nil
}

// Service decides starts and records run lifecycles and the state they
// depend on.
type Service struct {
	store *eventstore.Store
	now   func() time.Time
	// tokens caches token hash -> user id of known tokens.
	tokens sync.Map
	// groups holds the per-scope groups of starts (group.go).
	groups sync.Map
}

// New returns a gate over store. The store must have been built with
// NewRegistry and Route.
func New(store *eventstore.Store) *Service {
	return &Service{store: store, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// Store returns the event store of the gate.
func (s *Service) Store() *eventstore.Store { return s.store }

func newID() string { return ulid.Make().String() }

// WithMetadata adds the tenant and correlation (and the actor, unless
// empty) to the metadata that appends in ctx record.
func WithMetadata(ctx context.Context, actorID, tenantID, correlationID string) context.Context {
	md := eventstore.MetadataFrom(ctx)
	if actorID != "" {
		md.Actor = actorID
	}
	md.TenantID = tenantID
	if correlationID != "" {
		md.CorrelationID = correlationID
	}
	return eventstore.WithMetadata(ctx, md)
}

// appendOne appends e to stream at any version, wrapping the error.
func appendOne(ctx context.Context, tx *eventstore.Tx, stream string, e domain.Event) error {
	if _, err := tx.Append(ctx, stream, eventstore.AnyVersion, e); err != nil {
		return fmt.Errorf("record %s: %w", e.EventType(), err)
	}
	return nil
}
