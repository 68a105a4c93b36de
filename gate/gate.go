// Package gate is the one gate every start passes through. It owns the
// ProtectedScope aggregate's streams: it decides starts (start.go, with
// the starts waiting on one scope grouped into one transaction in
// group.go), records the lifecycle of runs (lifecycle.go: claims, results,
// cancels, the reaper) and answers repeated idempotent requests
// (idempotency.go). Each decision is domain.Decide on the scope's state as
// of the scope's lock, appended with the snapshot of the state it leaves
// and the runs row it changes, in one transaction.
//
// The gate reads tenancy (who may start), connections (readiness, the
// default) and restore drafts (previews); it never changes them.
package gate

import (
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
)

// TopicStartsAccepted is the watermill topic that carries StartAccepted
// events and nothing else; execution subscribes to it alone.
const TopicStartsAccepted = "starts_accepted"

// Route sends StartAccepted events to TopicStartsAccepted besides the
// topic of all events; every store of opsgate is built with it.
func Route(eventType string) []string {
	if eventType == (domain.StartAccepted{}).EventType() {
		return []string{TopicStartsAccepted}
	}
	return nil
}

// Service decides starts and records run lifecycles.
type Service struct {
	store   *eventstore.Store
	conns   *connections.Service
	now     journal.Clock
	builtin []string
	// committer queues the starts of the process for group commit
	// (group.go); at most startQueue wait at once.
	committer  committer
	startQueue int
	// completer queues the completions of the process (complete.go).
	completer completer
	// decided, if set, is told of every start decided (not of replays),
	// with the operation type it asked for.
	decided func(res domain.StartResult, opType string)
}

// OnDecided sets fn to be told of every start this process decides, from
// any surface (the API, the console, onboarding's follow-ups), but not of
// idempotent replays; set it before the first start.
func (s *Service) OnDecided(fn func(res domain.StartResult, opType string)) { s.decided = fn }

func (s *Service) tell(opType string, resp StartResponse, err error) (StartResponse, error) {
	if err == nil && !resp.Replayed && s.decided != nil {
		s.decided(resp.Result, opType)
	}
	return resp, err
}

// New returns the gate over store; conns resolves the connections starts
// name or default to; builtin are the providers the built-in worker
// executes (every process of a deployment must agree on them). The store
// must route with Route.
func New(store *eventstore.Store, conns *connections.Service, now journal.Clock, builtin []string) *Service {
	return &Service{store: store, conns: conns, now: now, builtin: builtin, startQueue: DefaultStartQueue}
}

// DefaultStartQueue is how many starts may wait to be decided in one
// process, unless SetStartQueue says otherwise.
const DefaultStartQueue = 512

// SetStartQueue bounds the starts waiting to be decided in this process
// to n: a start that finds n waiting is refused with ErrOverloaded at once
// (load shedding), rather than queued behind them. Call it before use.
func (s *Service) SetStartQueue(n int) {
	if n > 0 {
		s.startQueue = n
	}
}
