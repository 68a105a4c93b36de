package onboarding_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/onboarding"
)

// A session folded from its stream (Session.Apply) equals the session
// stored, after each step of a flow with every onboarding event: a
// verification blocked and then accepted, a bootstrap whose first run
// fails, and continue, after which the process manager admits the rest.
func TestSessionFoldedFromItsStreamIsTheStoredOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "missing", 10, true)
	sid := f.newSession(t, conn)
	base := "/api/v1/onboarding-sessions/" + sid
	checkFold(t, f, sid)

	blocked := f.h.Call(t, "POST", base+"/verify", f.owner.Token, nil).ExpectStart(t, "blocked")
	if s := checkFold(t, f, sid); len(s.Steps.Verification.Attempts) != 1 || s.Steps.Verification.Attempts[0].Reason == nil {
		t.Fatalf("a blocked verification keeps its reason (%+v): %+v", blocked.Reason, s.Steps.Verification)
	}
	f.h.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+conn, f.owner.Token, map[string]any{"consent": "granted"}, nil)
	check := f.h.Call(t, "POST", base+"/verify", f.owner.Token, nil).ExpectStart(t, "accepted")
	checkFold(t, f, sid)
	f.waitOperation(t, check.Run.ID, "succeeded", 30*time.Second)

	f.simulate(t, conn, 10, "provider.unavailable")
	first := f.bootstrap(t, sid, f.owner.Token, "inventory.sync", "entra_group_sync").ExpectStart(t, "accepted")
	checkFold(t, f, sid)
	f.waitSession(t, sid, 30*time.Second, "the first item failed", func(s apptest.Session) bool { return s.Status == "attention_needed" })
	checkFold(t, f, sid)

	f.waitOperation(t, first.Run.ID, "failed", 30*time.Second)
	f.simulate(t, conn, 10, nil)
	f.continueBootstrap(t, sid, f.owner.Token).ExpectStart(t, "accepted")
	f.waitSession(t, sid, 30*time.Second, "bootstrap completed", func(s apptest.Session) bool { return s.Status == "completed" })
	s := checkFold(t, f, sid)
	if it := s.Steps.Bootstrap.Items[1]; it.CanonicalType != "directory.groups.sync" || it.Label == "" {
		t.Fatalf("item 2's canonical type and label: %+v", it)
	}
}

// checkFold fails t unless session id folded from its stream equals the
// stored session; it returns the stored session.
func checkFold(t *testing.T, f *fixture, id string) onboarding.Session {
	t.Helper()
	stored, err := f.h.Onboarding.Get(f.h.Ctx, apptest.As(f.owner.ID), id)
	if err != nil {
		t.Fatalf("get session %s: %v", id, err)
	}
	var folded onboarding.Session
	for _, e := range f.h.Stream(t, domain.OnboardingStream(id).String()) {
		folded = folded.Apply(f.h.Decode(t, e).(domain.Event))
	}
	if !reflect.DeepEqual(folded, stored) {
		a, _ := json.Marshal(folded)
		b, _ := json.Marshal(stored)
		t.Fatalf("session %s\n  folded %s\n  stored %s", id, a, b)
	}
	return stored
}
