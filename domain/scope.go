package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ScopeID names a protected scope: one provider connection, or the tenant
// itself when no connection could be resolved.
type ScopeID string

// ConnectionScope is the scope of provider connection id.
func ConnectionScope(connectionID string) ScopeID { return ScopeID("scope-connection-" + connectionID) }

// TenantScope is the scope on which starts without a connection are recorded.
func TenantScope(tenantID string) ScopeID { return ScopeID("scope-tenant-" + tenantID) }

// ConnectionID returns the connection of a connection's scope.
func (s ScopeID) ConnectionID() (string, bool) {
	return strings.CutPrefix(string(s), "scope-connection-")
}

// ScopeState is the ProtectedScope aggregate's state: the one run that
// holds the scope, if any. Its size does not grow with history.
type ScopeState struct {
	Active *ActiveRun `json:"active,omitempty"`
}

// ActiveRun is the queued or running run that holds a scope.
type ActiveRun struct {
	RunID     string     `json:"run_id"`
	Start     StartInfo  `json:"start"`
	Status    RunStatus  `json:"status"`
	Epoch     int64      `json:"epoch"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	// WorkerID is the executor or built-in worker that claimed the run.
	WorkerID string `json:"worker_id,omitempty"`
	// ClaimBy and FinishBy are the run's deadlines (FinishBy once it was
	// claimed), MaxDurationS how long it may run once claimed; all unset
	// for a run accepted before deadlines existed.
	ClaimBy      *time.Time `json:"claim_by,omitempty"`
	FinishBy     *time.Time `json:"finish_by,omitempty"`
	MaxDurationS int64      `json:"max_duration_s,omitempty"`
}

// Run returns the active run as surfaces show it.
func (a ActiveRun) Run() Run {
	r := a.Start.run(a.RunID, a.Status, a.CreatedAt)
	r.StartedAt = a.StartedAt
	if a.ClaimBy != nil {
		r.Deadlines = &Deadlines{ClaimBy: *a.ClaimBy, FinishBy: a.FinishBy}
	}
	return r
}

// Errors of illegal lifecycle transitions.
var (
	// ErrRunNotActive means the run is not the scope's queued or running run.
	ErrRunNotActive = errors.New("run is not active on its scope")
	// ErrRunAlreadyStarted means the run is running already.
	ErrRunAlreadyStarted = errors.New("run already started")
	// ErrRunNotStarted means a result was reported for a run still queued.
	ErrRunNotStarted = errors.New("run not started")
	// ErrStaleEpoch means a result carries a fencing token older than the run's.
	ErrStaleEpoch = errors.New("stale run epoch")
	// ErrDeadlineNotReached means a deadline was to be enforced on a run
	// that has none, or before it passed.
	ErrDeadlineNotReached = errors.New("deadline not reached")
	// ErrInvalidCommand means a command lacks what it needs.
	ErrInvalidCommand = errors.New("invalid command")
)

// Command is a request to change a protected scope.
type Command interface{ commandName() string }

// StartCommand asks to start an operation on a scope.
type StartCommand struct {
	// RunID is the id a new run gets if the start is accepted or blocked.
	RunID string
	Start StartInfo
	// ClaimBy and MaxDuration are the deadlines an accepted run gets: by
	// when it must be claimed, and how long it may run once claimed.
	ClaimBy     time.Time
	MaxDuration time.Duration
	At          time.Time
}

// MarkStarted records that a worker began executing a queued run; Now is
// the database's clock, from which the run's finish_by is set.
type MarkStarted struct {
	RunID    string
	WorkerID string
	Now      time.Time
	At       time.Time
}

// MarkSucceeded records a run's success, fenced by the worker's epoch,
// with what its executor reported (a JSON object, or nothing).
type MarkSucceeded struct {
	RunID   string
	Epoch   int64
	Summary json.RawMessage
	At      time.Time
}

// MarkFailed records a run's failure, fenced by the worker's epoch.
type MarkFailed struct {
	RunID   string
	Epoch   int64
	Reason  ReasonCode
	Summary json.RawMessage
	At      time.Time
}

// MarkLost ends a running run whose worker's lease at Epoch expired.
type MarkLost struct {
	RunID string
	Epoch int64
	At    time.Time
}

// ExpireClaim ends a queued run whose claim_by passed (Now, the
// database's clock, is past it): no executor picked it up.
type ExpireClaim struct {
	RunID string
	Now   time.Time
	At    time.Time
}

// ExpireRun ends a running run whose finish_by passed: it timed out.
type ExpireRun struct {
	RunID string
	Now   time.Time
	At    time.Time
}

// Cancel ends a queued or running run on an operator's request.
type Cancel struct {
	RunID   string
	ActorID string
	At      time.Time
}

func (StartCommand) commandName() string  { return "start" }
func (MarkStarted) commandName() string   { return "mark_started" }
func (MarkSucceeded) commandName() string { return "mark_succeeded" }
func (MarkFailed) commandName() string    { return "mark_failed" }
func (MarkLost) commandName() string      { return "mark_lost" }
func (ExpireClaim) commandName() string   { return "expire_claim" }
func (ExpireRun) commandName() string     { return "expire_run" }
func (Cancel) commandName() string        { return "cancel" }

// Facts are what a start's decision depends on besides the scope: the
// readiness preflight's verdict ("" when ready).
type Facts struct {
	Blocked ReasonCode
	// ExecutorSeen, for a start blocked because no executor of the
	// provider is live, is when one was last seen (nil: never).
	ExecutorSeen *time.Time
}

// Decide returns the one event that answers cmd on a scope in state s. It
// is pure: the same state, command and facts always give the same event.
func Decide(s ScopeState, cmd Command, f Facts) (Event, error) {
	switch c := cmd.(type) {
	case StartCommand:
		return decideStart(s, c, f)
	case MarkStarted:
		a, err := s.active(c.RunID)
		if err != nil {
			return nil, err
		}
		if a.Status == StatusRunning {
			return nil, fmt.Errorf("start run %s: %w", c.RunID, ErrRunAlreadyStarted)
		}
		started := RunStarted{RunRef: a.ref(), Epoch: a.Epoch + 1, WorkerID: c.WorkerID, At: c.At}
		if a.MaxDurationS > 0 {
			finish := c.Now.Add(time.Duration(a.MaxDurationS) * time.Second)
			started.FinishBy = &finish
		}
		return started, nil
	case MarkSucceeded:
		a, err := s.running(c.RunID, c.Epoch)
		if err != nil {
			return nil, err
		}
		return RunSucceeded{RunRef: a.ref(), StartedAt: a.StartedAt, Epoch: c.Epoch, Summary: c.Summary, At: c.At}, nil
	case MarkFailed:
		a, err := s.running(c.RunID, c.Epoch)
		if err != nil {
			return nil, err
		}
		reason, ok := LookupReason(c.Reason)
		if !ok || !c.Reason.EndsRuns() {
			return nil, fmt.Errorf("fail run %s with %q: %w", c.RunID, c.Reason, ErrInvalidCommand)
		}
		return RunFailed{RunRef: a.ref(), StartedAt: a.StartedAt, Epoch: c.Epoch, Reason: reason, Summary: c.Summary, At: c.At}, nil
	case MarkLost:
		a, err := s.running(c.RunID, c.Epoch)
		if err != nil {
			return nil, err
		}
		return RunFailed{RunRef: a.ref(), StartedAt: a.StartedAt, Epoch: c.Epoch, Reason: MustReason(ReasonExecutionLost), WorkerID: a.WorkerID, At: c.At}, nil
	case ExpireClaim:
		a, err := s.active(c.RunID)
		if err != nil {
			return nil, err
		}
		if a.Status != StatusQueued {
			return nil, fmt.Errorf("expire the claim of run %s: %w", c.RunID, ErrRunAlreadyStarted)
		}
		if a.ClaimBy == nil || c.Now.Before(*a.ClaimBy) {
			return nil, fmt.Errorf("run %s claim_by: %w", c.RunID, ErrDeadlineNotReached)
		}
		return RunFailed{RunRef: a.ref(), Epoch: a.Epoch, Reason: MustReason(ReasonNotPickedUp), At: c.At}, nil
	case ExpireRun:
		a, err := s.active(c.RunID)
		if err != nil {
			return nil, err
		}
		if a.Status != StatusRunning {
			return nil, fmt.Errorf("time out run %s: %w", c.RunID, ErrRunNotStarted)
		}
		if a.FinishBy == nil || c.Now.Before(*a.FinishBy) {
			return nil, fmt.Errorf("run %s finish_by: %w", c.RunID, ErrDeadlineNotReached)
		}
		return RunFailed{RunRef: a.ref(), StartedAt: a.StartedAt, Epoch: a.Epoch, Reason: MustReason(ReasonTimedOut),
			WorkerID: a.WorkerID, At: c.At}, nil
	case Cancel:
		a, err := s.active(c.RunID)
		if err != nil {
			return nil, err
		}
		return RunCancelled{RunRef: a.ref(), StartedAt: a.StartedAt, ActorID: c.ActorID, WasRunning: a.Status == StatusRunning,
			Reason: MustReason(ReasonCancelled), At: c.At}, nil
	}
	return nil, fmt.Errorf("command %T: %w", cmd, ErrInvalidCommand)
}

func decideStart(s ScopeState, c StartCommand, f Facts) (Event, error) {
	if c.RunID == "" || c.Start.TenantID == "" || c.Start.ScopeID == "" || c.Start.Type == "" {
		return nil, fmt.Errorf("start: run id, tenant, scope and type are required: %w", ErrInvalidCommand)
	}
	if f.Blocked != "" {
		reason, ok := LookupReason(f.Blocked)
		if !ok || !f.Blocked.EndsRuns() {
			return nil, fmt.Errorf("start blocked by %q: %w", f.Blocked, ErrInvalidCommand)
		}
		if f.Blocked == ReasonNoExecutor && c.Start.Connection != nil {
			reason.Message += " " + executorSeen(c.Start.Connection.Provider, f.ExecutorSeen)
		}
		return StartBlocked{RunID: c.RunID, StartInfo: c.Start, Reason: reason, At: c.At}, nil
	}
	if a := s.Active; a != nil {
		if a.Start.CanonicalType == c.Start.CanonicalType && a.Start.Target == c.Start.Target {
			return StartDeduped{RunID: a.RunID, StartInfo: c.Start, At: c.At}, nil
		}
		return StartScopeBusy{RunID: a.RunID, ActiveType: a.Start.Type, StartInfo: c.Start, At: c.At}, nil
	}
	if c.Start.Connection == nil {
		return nil, fmt.Errorf("accept a start without a pinned connection: %w", ErrInvalidCommand)
	}
	accepted := StartAccepted{RunID: c.RunID, StartInfo: c.Start, At: c.At}
	if !c.ClaimBy.IsZero() {
		claimBy := c.ClaimBy
		accepted.ClaimBy, accepted.MaxDurationS = &claimBy, int64(c.MaxDuration/time.Second)
	}
	return accepted, nil
}

// executorSeen says when an executor of provider was last seen, for the
// message of a start blocked because none is live.
func executorSeen(provider string, seen *time.Time) string {
	if seen == nil {
		return fmt.Sprintf("No executor of provider %q has ever called in.", provider)
	}
	return fmt.Sprintf("An executor of provider %q was last seen at %s.", provider, seen.UTC().Format(time.RFC3339))
}

func (s ScopeState) active(runID string) (*ActiveRun, error) {
	if s.Active == nil || s.Active.RunID != runID {
		return nil, fmt.Errorf("run %s: %w", runID, ErrRunNotActive)
	}
	return s.Active, nil
}

func (s ScopeState) running(runID string, epoch int64) (*ActiveRun, error) {
	a, err := s.active(runID)
	if err != nil {
		return nil, err
	}
	if a.Status != StatusRunning {
		return nil, fmt.Errorf("run %s: %w", runID, ErrRunNotStarted)
	}
	if epoch != a.Epoch {
		return nil, fmt.Errorf("run %s at epoch %d, result from epoch %d: %w", runID, a.Epoch, epoch, ErrStaleEpoch)
	}
	return a, nil
}

func (a *ActiveRun) ref() RunRef {
	return RunRef{RunID: a.RunID, ScopeID: a.Start.ScopeID, TenantID: a.Start.TenantID, Start: a.Start, CreatedAt: a.CreatedAt}
}

// Evolve returns the state after e. Events that do not concern the scope's
// holder leave it unchanged.
func Evolve(s ScopeState, e Event) ScopeState {
	switch e := e.(type) {
	case StartAccepted:
		return ScopeState{Active: &ActiveRun{RunID: e.RunID, Start: e.StartInfo, Status: StatusQueued, CreatedAt: e.At,
			ClaimBy: e.ClaimBy, MaxDurationS: e.MaxDurationS}}
	case RunStarted:
		if s.Active != nil && s.Active.RunID == e.RunID {
			a := *s.Active
			a.Status, a.Epoch, a.WorkerID, a.FinishBy = StatusRunning, e.Epoch, e.WorkerID, e.FinishBy
			at := e.At
			a.StartedAt = &at
			return ScopeState{Active: &a}
		}
	case RunSucceeded, RunFailed, RunCancelled:
		if s.Active != nil && s.Active.RunID == e.(RunEvent).Ref().RunID {
			return ScopeState{}
		}
	}
	return s
}
