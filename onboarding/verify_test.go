package onboarding_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/internal/apptest"
)

// 6. The verification step, and who may see and run a session.
func TestVerificationAndAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t, harnessOptions{Grace: 5 * time.Second})
	conn := f.connection(t, "Graph", "granted", 10, true)
	sid := f.newSession(t, conn)
	base := "/api/v1/onboarding-sessions/" + sid

	// Who may not: non-members see 404 exactly as for a session that does
	// not exist; readonly members may look but not run. Nothing is recorded.
	before := len(f.h.AuditTrail(t, f.tenant, f.owner.Token))
	missing := "/api/v1/onboarding-sessions/" + randomID()
	requests := []struct {
		name, method, suffix string
		body                 any
		runs                 bool // needs onboarding.run
	}{
		{"get", "GET", "", nil, false},
		{"verify", "POST", "/verify", nil, true},
		{"bootstrap", "POST", "/bootstrap", map[string]any{"operations": []string{"inventory.sync"}}, true},
		{"bootstrap, unknown type", "POST", "/bootstrap", map[string]any{"operations": []string{"no.such.operation"}}, true},
		{"bootstrap, nothing selected", "POST", "/bootstrap", map[string]any{"operations": []string{}}, true},
		{"continue", "POST", "/bootstrap/continue", nil, true},
	}
	for _, rq := range requests {
		t.Run(strings.ReplaceAll(rq.name, " ", "_"), func(t *testing.T) {
			absent := f.h.Call(t, rq.method, missing+rq.suffix, f.outsider.Token, rq.body)
			absent.ExpectProblem(t, 404, "not_found")
			hidden := f.h.Call(t, rq.method, base+rq.suffix, f.outsider.Token, rq.body)
			hidden.ExpectProblem(t, 404, "not_found")
			if !bytes.Equal(hidden.Body, absent.Body) {
				t.Fatalf("non-member answer differs from a missing session:\n%s\n%s", hidden, absent)
			}
			r := f.h.Call(t, rq.method, base+rq.suffix, f.readonly.Token, rq.body)
			if !rq.runs {
				if r.Status != 200 {
					t.Fatalf("readonly: %s, want 200", r)
				}
				return
			}
			p := r.ExpectProblem(t, 403, "forbidden")
			if !strings.Contains(p.Detail, "onboarding.run") {
				t.Fatalf("403 does not name onboarding.run: %s", r)
			}
		})
	}
	if after := len(f.h.AuditTrail(t, f.tenant, f.owner.Token)); after != before {
		t.Fatalf("denied requests recorded %d events", after-before)
	}
	if s := f.session(t, sid); s.Status != "open" || s.Steps.Verification.Status != "not_run" {
		t.Fatalf("denied requests changed the session: %s", s)
	}

	// The operator may run it.
	res := f.h.Call(t, "POST", base+"/verify", f.operator.Token, nil).ExpectStart(t, "accepted")
	if res.Run.Type != "provider.connection.check" || res.Run.Surface != "onboarding_verification" ||
		res.Run.InitiatorID != f.operator.ID || res.Run.ProviderConnection == nil || res.Run.ProviderConnection.ID != conn {
		t.Fatalf("verification run: %+v", res.Run)
	}
	s := f.session(t, sid)
	v := s.Steps.Verification
	if v.Status != "accepted" || len(v.Attempts) != 1 || v.Attempts[0].RunID != res.Run.ID ||
		v.Attempts[0].Outcome != "accepted" || v.Attempts[0].Links.Self != "/api/v1/operations/"+res.Run.ID {
		t.Fatalf("verification step: %s", s)
	}
	// The readonly member and the owner see it; the run ends succeeded.
	var ro apptest.Session
	f.h.Must(t, 200, "GET", base, f.readonly.Token, nil, &ro)
	if ro.Steps.Verification.Status != "accepted" {
		t.Fatalf("readonly view: %s", ro)
	}
	f.waitOperation(t, res.Run.ID, "succeeded", 30*time.Second)

	// A second verification is a fresh attempt through the gate.
	again := f.h.Call(t, "POST", base+"/verify", f.owner.Token, nil).ExpectStart(t, "accepted")
	s = f.session(t, sid)
	if v := s.Steps.Verification; len(v.Attempts) != 2 || v.Attempts[1].RunID != again.Run.ID || again.Run.ID == res.Run.ID {
		t.Fatalf("second verification: %s", s)
	}

	// Creating a session needs onboarding.run; non-members get 404.
	path := "/api/v1/tenants/" + f.tenant + "/onboarding-sessions"
	f.h.Call(t, "POST", path, f.readonly.Token, map[string]any{}).ExpectProblem(t, 403, "forbidden")
	f.h.Call(t, "POST", path, f.outsider.Token, map[string]any{}).ExpectProblem(t, 404, "not_found")
}
