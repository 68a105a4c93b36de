package domain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// TestScopeStateMachine drives the ProtectedScope decider with random
// sequences of starts, lifecycle commands and connection changes and
// checks every answer against a small independent model.
//
// The sequences come from math/rand/v2 seeded per sequence, so a failure
// names the seed that reproduces it: OPSGATE_PROPERTY_SEED=<base> replays
// the run (sequence i uses seed base+i).
func TestScopeStateMachine(t *testing.T) {
	sequences := 10_000
	if testing.Short() {
		sequences = 1_000
	}
	base := uint64(time.Now().UnixNano())
	if s := os.Getenv("OPSGATE_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("OPSGATE_PROPERTY_SEED=%q: %v", s, err)
		}
		base = v
	}
	steps := 0
	seen := map[string]int{}
	for i := range sequences {
		seed := base + uint64(i)
		steps += runSequence(t, seed, base, i, seen)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d sequences, %d steps, base seed %d; answers %v", sequences, steps, base, seen)
	// The generator reaches every answer and every error, often.
	for _, k := range []string{
		"StartAccepted", "StartDeduped", "StartScopeBusy", "StartBlocked",
		"RunStarted", "RunSucceeded", "RunFailed", "RunCancelled",
		domain.ErrRunNotActive.Error(), domain.ErrRunAlreadyStarted.Error(), domain.ErrRunNotStarted.Error(),
		domain.ErrStaleEpoch.Error(), domain.ErrInvalidCommand.Error(),
	} {
		if seen[k] < sequences/100 {
			t.Errorf("only %d %q answers in %d sequences", seen[k], k, sequences)
		}
	}
	for _, b := range blockingReasons {
		if seen[string(b.code)] < sequences/100 {
			t.Errorf("only %d starts blocked by %s in %d sequences", seen[string(b.code)], b.code, sequences)
		}
	}
}

// The model: runs by id with their status, scope, epoch, what their start
// asked for, when it was accepted and when it started; connection
// usability; restore runs' previews. Canonical types come from the
// contract table of registry_test.go, not from the domain's registry.

type mRun struct {
	id, typ, canonical, target, conn string
	scope                            domain.ScopeID
	status                           domain.RunStatus
	epoch                            int64
	start                            domain.StartInfo
	createdAt                        time.Time
	startedAt                        *time.Time // nil until it starts
}

type mConn struct {
	enabled     bool
	consent     domain.Consent
	credentials domain.Credentials
}

type model struct {
	runs      map[string]*mRun
	order     []string
	conns     map[string]*mConn
	previewed map[string]bool
}

func (m *model) active(scope domain.ScopeID) *mRun {
	var found *mRun
	for _, id := range m.order {
		r := m.runs[id]
		if r.scope == scope && (r.status == domain.StatusQueued || r.status == domain.StatusRunning) {
			if found != nil {
				return nil // reported by checkModel
			}
			found = r
		}
	}
	return found
}

func (m *model) activeCount(scope domain.ScopeID) int {
	n := 0
	for _, r := range m.runs {
		if r.scope == scope && (r.status == domain.StatusQueued || r.status == domain.StatusRunning) {
			n++
		}
	}
	return n
}

func (m *model) usable(conn string) bool {
	c := m.conns[conn]
	return c != nil && c.enabled && c.consent == "granted" && c.credentials == "valid"
}

// blockReason is the model's own preflight.
func (m *model) blockReason(typ, conn, target string) domain.ReasonCode {
	if conn == "" {
		return "provider_connection.missing_default"
	}
	c := m.conns[conn]
	switch {
	case !c.enabled:
		return "provider_connection.disabled"
	case c.consent != "granted":
		return "provider_connection.consent_missing"
	case c.credentials != "valid":
		return "provider_connection.credentials_invalid"
	case typ == "restore.execute" && !m.previewed[target]:
		return "restore_run.preview_required"
	}
	return ""
}

func contractCanonical(typ string) string {
	for _, op := range contractOperations {
		if op.typ == typ {
			return op.canonical
		}
	}
	panic("no contract operation " + typ)
}

func contractClass(code domain.ReasonCode) (domain.ReasonClass, bool) {
	for _, r := range contractReasons {
		if r.code == string(code) {
			return domain.ReasonClass(r.class), true
		}
	}
	return "", false
}

func catalogReason(code domain.ReasonCode) domain.Reason {
	class, ok := contractClass(code)
	if !ok {
		panic("no contract reason " + string(code))
	}
	return domain.Reason{Code: code, Class: class, Message: domain.MustReason(code).Message}
}

// world is the system under test: the scopes' states folded with Evolve,
// their event logs and the runs projected from the events.
type world struct {
	states map[domain.ScopeID]domain.ScopeState
	logs   map[domain.ScopeID][]domain.Event
	runs   map[string]domain.Run
}

const propTenant = "tenant-p"

var (
	propConns     = []string{"conn-a", "conn-b"}
	propTargets   = []string{"rr-1", "rr-2"}
	consentStates = []domain.Consent{domain.ConsentGranted, domain.ConsentMissing, domain.ConsentRevoked}
	credStates    = []domain.Credentials{domain.CredentialsValid, domain.CredentialsExpired, domain.CredentialsInvalid, domain.CredentialsMissing}
	failReasons   = []domain.ReasonCode{
		domain.ReasonCredentialsRejected, domain.ReasonConsentRevoked, domain.ReasonThrottled, domain.ReasonUnavailable,
		domain.ReasonExecutionLost, domain.ReasonDisabled, domain.ReasonConsentMissing, domain.ReasonCredentialsInvalid,
	}
	propScopes = []domain.ScopeID{
		domain.ConnectionScope("conn-a"), domain.ConnectionScope("conn-b"), domain.TenantScope(propTenant),
	}
)

func propConnRef(id string) *domain.ConnectionRef {
	return &domain.ConnectionRef{ID: id, DisplayName: "Connection " + id, Provider: "simulated"}
}

type sequence struct {
	t     *testing.T
	rnd   *rand.Rand
	seed  uint64
	base  uint64
	index int
	trace []string
	m     *model
	w     *world
	next  int
	clock time.Time
	seen  map[string]int
}

func (s *sequence) failf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("sequence %d (OPSGATE_PROPERTY_SEED=%d, seed %d) failed: %s\ntrace:\n  %s",
		s.index, s.base, s.seed, fmt.Sprintf(format, args...), strings.Join(s.trace, "\n  "))
}

func (s *sequence) chance(p float64) bool { return s.rnd.Float64() < p }

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func runSequence(t *testing.T, seed, base uint64, index int, seen map[string]int) int {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := &sequence{
		t: t, rnd: rnd, seed: seed, base: base, index: index,
		m: &model{runs: map[string]*mRun{}, conns: map[string]*mConn{}, previewed: map[string]bool{}},
		w: &world{states: map[domain.ScopeID]domain.ScopeState{}, logs: map[domain.ScopeID][]domain.Event{},
			runs: map[string]domain.Run{}},
		clock: t0, seen: seen,
	}
	for _, c := range propConns {
		s.m.conns[c] = &mConn{
			enabled:     s.chance(0.85),
			consent:     biased(s, 0.8, consentStates),
			credentials: biased(s, 0.8, credStates),
		}
	}
	for _, rr := range propTargets {
		s.m.previewed[rr] = s.chance(0.6)
	}
	n := 1 + rnd.IntN(60)
	for range n {
		s.clock = s.clock.Add(time.Minute)
		switch x := rnd.IntN(100); {
		case x < 35:
			s.start()
		case x < 50:
			s.lifecycle("mark_started")
		case x < 60:
			s.lifecycle("succeed")
		case x < 70:
			s.lifecycle("fail")
		case x < 77:
			s.lifecycle("lose")
		case x < 85:
			s.lifecycle("cancel")
		case x < 95:
			s.changeConnection()
		default:
			rr := pick(rnd, propTargets)
			s.m.previewed[rr] = true
			s.trace = append(s.trace, "preview "+rr)
		}
		if s.t.Failed() {
			return n
		}
		s.check()
	}
	// Folding each scope's log from the empty state gives the same state.
	for scope, log := range s.w.logs {
		if got := fold(log...); !reflect.DeepEqual(got, s.w.states[scope]) {
			s.failf("refolding %s gives %+v, stepwise %+v", scope, got.Active, s.w.states[scope].Active)
		}
	}
	return n
}

// biased returns xs[0] with probability p, otherwise any of xs.
func biased[T any](s *sequence, p float64, xs []T) T {
	if s.chance(p) {
		return xs[0]
	}
	return pick(s.rnd, xs)
}

func (s *sequence) changeConnection() {
	id := pick(s.rnd, propConns)
	c := s.m.conns[id]
	switch s.rnd.IntN(3) {
	case 0:
		c.enabled = s.chance(0.6)
	case 1:
		c.consent = biased(s, 0.6, consentStates)
	default:
		c.credentials = biased(s, 0.6, credStates)
	}
	s.trace = append(s.trace, fmt.Sprintf("connection %s: %+v", id, *c))
}

// decideOn runs Decide on scope, checks that it neither panicked nor
// changed the state, and that the state survives its JSON round trip.
func (s *sequence) decideOn(scope domain.ScopeID, cmd domain.Command, f domain.Facts) (e domain.Event, err error) {
	s.t.Helper()
	state := s.w.states[scope]
	before, merr := json.Marshal(state)
	if merr != nil {
		s.failf("marshal state: %v", merr)
	}
	var back domain.ScopeState
	if err := json.Unmarshal(before, &back); err != nil || !reflect.DeepEqual(back, state) {
		s.failf("state does not survive JSON: %s (%v)", before, err)
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.failf("Decide(%#v) panicked: %v", cmd, p)
			}
		}()
		e, err = domain.Decide(state, cmd, f)
	}()
	after, _ := json.Marshal(state)
	if string(before) != string(after) {
		s.failf("Decide changed its state: %s -> %s", before, after)
	}
	// The state as persisted decides the same.
	e2, err2 := domain.Decide(back, cmd, f)
	if !reflect.DeepEqual(e, e2) || fmt.Sprint(err) != fmt.Sprint(err2) {
		s.failf("Decide differs on the JSON round-tripped state: %#v/%v vs %#v/%v", e, err, e2, err2)
	}
	return e, err
}

func (s *sequence) record(scope domain.ScopeID, e domain.Event) {
	s.w.states[scope] = domain.Evolve(s.w.states[scope], e)
	s.w.logs[scope] = append(s.w.logs[scope], e)
	switch e := e.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, ok := domain.RunOf(e)
		if !ok {
			s.failf("RunOf(%s) created no run", e.EventType())
		}
		s.w.runs[run.ID] = run
	case domain.RunEvent:
		id := e.Ref().RunID
		s.w.runs[id] = s.w.runs[id].Apply(e)
		// A terminal event alone gives the run the whole history gives.
		ended, ok := domain.Ended(e)
		if ok != s.w.runs[id].Status.Terminal() {
			s.failf("Ended(%s) ok=%v for a %s run", e.EventType(), ok, s.w.runs[id].Status)
		}
		if ok && !reflect.DeepEqual(ended, s.w.runs[id]) {
			s.failf("Ended(%s) =\n  %#v\nprojected\n  %#v", e.EventType(), ended, s.w.runs[id])
		}
	}
}

func (s *sequence) start() {
	surfaces := contractSurfaces[:len(contractSurfaces)-1] // not the bootstrap: it selects its types
	sf := pick(s.rnd, surfaces)
	op := domain.MustOperation(sf.typ)
	target := ""
	if sf.typ == "restore.execute" {
		target = pick(s.rnd, propTargets)
	}
	conn := ""
	if !s.chance(0.1) {
		conn = pick(s.rnd, propConns)
	}
	runID := ""
	if !s.chance(0.04) {
		s.next++
		runID = fmt.Sprintf("run-%03d", s.next)
	}
	si := domain.StartInfo{
		TenantID: propTenant, ScopeID: domain.TenantScope(propTenant), Type: op.Type, CanonicalType: op.Canonical,
		Label: op.Label, Surface: sf.name, InitiatorID: "user-p", Target: target,
	}
	var readiness *domain.ConnectionReadiness
	if conn != "" {
		si.ScopeID, si.Connection = domain.ConnectionScope(conn), propConnRef(conn)
		c := s.m.conns[conn]
		readiness = &domain.ConnectionReadiness{Enabled: c.enabled, Consent: c.consent, Credentials: c.credentials, Executable: true}
	}
	var restore *domain.RestoreReadiness
	if target != "" {
		restore = &domain.RestoreReadiness{Previewed: s.m.previewed[target]}
	}
	s.trace = append(s.trace, fmt.Sprintf("start %s %q via %s target=%q conn=%q", runID, op.Type, sf.name, target, conn))

	want := s.m.blockReason(sf.typ, conn, target)
	facts := domain.Facts{Blocked: domain.Preflight(op, readiness, restore)}
	if facts.Blocked != want {
		s.failf("Preflight = %q, model says %q", facts.Blocked, want)
	}
	cmd := domain.StartCommand{RunID: runID, Start: si, At: s.clock}
	e, err := s.decideOn(si.ScopeID, cmd, facts)
	if runID == "" {
		if !errors.Is(err, domain.ErrInvalidCommand) || e != nil {
			s.failf("start without run id: %#v, %v; want ErrInvalidCommand", e, err)
		}
		s.seen[domain.ErrInvalidCommand.Error()]++
		return
	}
	if err != nil {
		s.failf("start: unexpected error %v", err)
	}

	canonical := contractCanonical(sf.typ)
	holder := s.m.active(si.ScopeID)
	var expected domain.Event
	switch {
	case want != "":
		expected = domain.StartBlocked{RunID: runID, StartInfo: si, Reason: catalogReason(want), At: s.clock}
		s.addRun(&mRun{id: runID, typ: sf.typ, canonical: canonical, target: target, conn: conn,
			scope: si.ScopeID, status: domain.StatusBlocked, start: si, createdAt: s.clock})
	case holder != nil && holder.canonical == canonical && holder.target == target:
		expected = domain.StartDeduped{RunID: holder.id, StartInfo: si, At: s.clock}
	case holder != nil:
		expected = domain.StartScopeBusy{RunID: holder.id, ActiveType: holder.typ, StartInfo: si, At: s.clock}
	default:
		expected = domain.StartAccepted{RunID: runID, StartInfo: si, At: s.clock}
		s.addRun(&mRun{id: runID, typ: sf.typ, canonical: canonical, target: target, conn: conn,
			scope: si.ScopeID, status: domain.StatusQueued, start: si, createdAt: s.clock})
	}
	if !reflect.DeepEqual(e, expected) {
		s.failf("start answered\n  %#v\nmodel expects\n  %#v", e, expected)
	}
	if acc, ok := e.(domain.StartAccepted); ok {
		if conn == "" || !s.m.usable(conn) || (target != "" && !s.m.previewed[target]) {
			s.failf("accepted a start on unusable connection %q: %+v", conn, s.m.conns[conn])
		}
		if acc.Connection == nil || acc.Connection.ID != conn {
			s.failf("accepted start pinned %+v, want %s", acc.Connection, conn)
		}
	}
	s.record(si.ScopeID, e)
	s.trace[len(s.trace)-1] += " -> " + e.EventType()
	s.seen[e.EventType()]++
	if b, ok := e.(domain.StartBlocked); ok {
		s.seen[string(b.Reason.Code)]++
	}
}

func (s *sequence) addRun(r *mRun) {
	s.m.runs[r.id] = r
	s.m.order = append(s.m.order, r.id)
}

// lifecycle sends a lifecycle command for a known or unknown run, mostly
// on the run's own scope, with a correct or stale epoch.
func (s *sequence) lifecycle(kind string) {
	var r *mRun
	var actives []*mRun
	for _, id := range s.m.order {
		if st := s.m.runs[id].status; st == domain.StatusQueued || st == domain.StatusRunning {
			actives = append(actives, s.m.runs[id])
		}
	}
	switch {
	case len(actives) > 0 && s.chance(0.6):
		r = pick(s.rnd, actives)
	case len(s.m.order) > 0 && s.chance(0.8):
		r = s.m.runs[pick(s.rnd, s.m.order)]
	}
	runID, scope := fmt.Sprintf("run-unknown-%d", s.rnd.IntN(3)), pick(s.rnd, propScopes)
	var epoch int64
	if r != nil {
		runID, epoch = r.id, r.epoch
		if s.chance(0.9) {
			scope = r.scope
		}
	}
	if s.chance(0.25) {
		epoch = pick(s.rnd, []int64{epoch - 1, epoch + 1, 0, 7})
	}
	reason := pick(s.rnd, failReasons)
	if s.chance(0.1) {
		reason = pick(s.rnd, []domain.ReasonCode{"", "provider.exploded"})
	}

	var cmd domain.Command
	switch kind {
	case "mark_started":
		cmd = domain.MarkStarted{RunID: runID, WorkerID: "worker-p", At: s.clock}
	case "succeed":
		cmd = domain.MarkSucceeded{RunID: runID, Epoch: epoch, At: s.clock}
	case "fail":
		cmd = domain.MarkFailed{RunID: runID, Epoch: epoch, Reason: reason, At: s.clock}
	case "lose":
		cmd = domain.MarkLost{RunID: runID, Epoch: epoch, At: s.clock}
	case "cancel":
		cmd = domain.Cancel{RunID: runID, ActorID: "user-p", At: s.clock}
	}
	s.trace = append(s.trace, fmt.Sprintf("%s on %s: %+v", kind, scope, cmd))

	// The model's verdict.
	isActive := r != nil && r.scope == scope && (r.status == domain.StatusQueued || r.status == domain.StatusRunning)
	var wantErr error
	var expected domain.Event
	var next domain.RunStatus
	var nextEpoch int64
	var nextStartedAt, startedAt *time.Time
	var ref domain.RunRef
	if r != nil {
		nextEpoch, nextStartedAt, startedAt = r.epoch, r.startedAt, r.startedAt
		ref = domain.RunRef{RunID: runID, ScopeID: scope, TenantID: propTenant, Start: r.start, CreatedAt: r.createdAt}
	}
	switch {
	case !isActive:
		wantErr = domain.ErrRunNotActive
	case kind == "mark_started":
		if r.status == domain.StatusRunning {
			wantErr = domain.ErrRunAlreadyStarted
		} else {
			clock := s.clock
			next, nextEpoch, nextStartedAt = domain.StatusRunning, r.epoch+1, &clock
			expected = domain.RunStarted{RunRef: ref, Epoch: r.epoch + 1, WorkerID: "worker-p", At: s.clock}
		}
	case kind == "cancel":
		next = domain.StatusCancelled
		expected = domain.RunCancelled{RunRef: ref, StartedAt: startedAt, ActorID: "user-p", WasRunning: r.status == domain.StatusRunning,
			Reason: catalogReason("operation.cancelled"), At: s.clock}
	case r.status == domain.StatusQueued:
		wantErr = domain.ErrRunNotStarted
	case epoch != r.epoch:
		wantErr = domain.ErrStaleEpoch
	case kind == "succeed":
		next = domain.StatusSucceeded
		expected = domain.RunSucceeded{RunRef: ref, StartedAt: startedAt, Epoch: epoch, At: s.clock}
	case kind == "lose":
		next = domain.StatusFailed
		expected = domain.RunFailed{RunRef: ref, StartedAt: startedAt, Epoch: epoch, Reason: catalogReason("execution.lost"), WorkerID: "worker-p", At: s.clock} // every run here was started by worker-p
	case kind == "fail":
		if _, ok := contractClass(reason); !ok {
			wantErr = domain.ErrInvalidCommand
		} else {
			next = domain.StatusFailed
			expected = domain.RunFailed{RunRef: ref, StartedAt: startedAt, Epoch: epoch, Reason: catalogReason(reason), At: s.clock}
		}
	}

	e, err := s.decideOn(scope, cmd, domain.Facts{})
	if wantErr != nil {
		if !errors.Is(err, wantErr) || e != nil {
			s.failf("%s answered %#v, %v; model expects error %v", kind, e, err, wantErr)
		}
		s.trace[len(s.trace)-1] += " -> " + wantErr.Error()
		s.seen[wantErr.Error()]++
		return
	}
	if err != nil {
		s.failf("%s: unexpected error %v; model expects %#v", kind, err, expected)
	}
	if !reflect.DeepEqual(e, expected) {
		s.failf("%s answered\n  %#v\nmodel expects\n  %#v", kind, e, expected)
	}
	r.status, r.epoch, r.startedAt = next, nextEpoch, nextStartedAt
	s.record(scope, e)
	s.trace[len(s.trace)-1] += " -> " + e.EventType()
	s.seen[e.EventType()]++
}

// check compares the aggregate and the projected runs with the model.
func (s *sequence) check() {
	s.t.Helper()
	for _, scope := range propScopes {
		if n := s.m.activeCount(scope); n > 1 {
			s.failf("model has %d active runs on %s", n, scope)
		}
		want := s.m.active(scope)
		got := s.w.states[scope].Active
		switch {
		case want == nil && got != nil:
			s.failf("%s held by %s (%s), model says free", scope, got.RunID, got.Status)
		case want != nil && got == nil:
			s.failf("%s free, model says held by %s (%s)", scope, want.id, want.status)
		case want != nil:
			if got.RunID != want.id || got.Status != want.status || got.Epoch != want.epoch ||
				got.Start.CanonicalType != want.canonical || got.Start.Target != want.target ||
				got.Start.Connection == nil || got.Start.Connection.ID != want.conn || got.Start.ScopeID != scope {
				s.failf("%s holder %+v (start %+v), model %+v", scope, *got, got.Start, *want)
			}
			if (got.StartedAt != nil) != (want.status == domain.StatusRunning) {
				s.failf("%s holder %s: started_at %v with status %s", scope, got.RunID, got.StartedAt, got.Status)
			}
			if !reflect.DeepEqual(got.Start, want.start) || !got.CreatedAt.Equal(want.createdAt) ||
				!reflect.DeepEqual(got.StartedAt, want.startedAt) {
				s.failf("%s holder %s: start %+v created %v started %v, model start %+v created %v started %v",
					scope, got.RunID, got.Start, got.CreatedAt, got.StartedAt, want.start, want.createdAt, want.startedAt)
			}
		}
	}
	if scope := domain.TenantScope(propTenant); s.w.states[scope].Active != nil {
		s.failf("a run holds the tenant scope, where only blocked starts are recorded")
	}
	ids := make([]string, 0, len(s.w.runs))
	for id := range s.w.runs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) != len(s.m.order) {
		s.failf("%d runs projected, model has %d", len(ids), len(s.m.order))
	}
	for _, id := range ids {
		run, r := s.w.runs[id], s.m.runs[id]
		if r == nil {
			s.failf("projected run %s unknown to the model", id)
		}
		if run.Status != r.status {
			s.failf("run %s projected %s, model %s", id, run.Status, r.status)
		}
		if r.conn != "" && (run.ProviderConnection == nil || run.ProviderConnection.ID != r.conn) {
			s.failf("run %s pinned %+v, model %s", id, run.ProviderConnection, r.conn)
		}
		if (run.Reason == nil) != (r.status == domain.StatusQueued || r.status == domain.StatusRunning || r.status == domain.StatusSucceeded) {
			s.failf("run %s (%s) reason %+v", id, run.Status, run.Reason)
		}
		if (run.FinishedAt != nil) != r.status.Terminal() {
			s.failf("run %s (%s) finished_at %v", id, run.Status, run.FinishedAt)
		}
		if !run.CreatedAt.Equal(r.createdAt) || !reflect.DeepEqual(run.StartedAt, r.startedAt) {
			s.failf("run %s created %v started %v, model created %v started %v", id, run.CreatedAt, run.StartedAt, r.createdAt, r.startedAt)
		}
	}
}
