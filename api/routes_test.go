package api_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// startHandlerName is in the name Echo gives every route served by
// handlers.start (the closure it returns).
const startHandlerName = "(*handlers).start"

// TestStartRoutesUseTheOneHandler: every start endpoint of contract
// section 3 that the API serves directly is served by handlers.start, and
// no other route is.
func TestStartRoutesUseTheOneHandler(t *testing.T) {
	t.Parallel()
	s := server(t)
	want := map[string]bool{}
	for _, sc := range contractSurfaces {
		want["POST "+sc.path] = true
	}
	found := map[string]bool{}
	for _, r := range echoOf(s).Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		key := r.Method + " " + r.Path
		byStart := strings.Contains(r.Name, startHandlerName)
		switch {
		case want[key] && !byStart:
			t.Errorf("start endpoint %s is served by %s, not by handlers.start", key, r.Name)
		case !want[key] && byStart:
			t.Errorf("%s is served by handlers.start but is no start endpoint of the contract", key)
		case want[key]:
			if found[key] {
				t.Errorf("%s is registered twice", key)
			}
			found[key] = true
		}
	}
	for key := range want {
		if !found[key] {
			t.Errorf("start endpoint %s is not registered", key)
		}
	}
	// The onboarding start endpoints (section 3) reach the gate through the
	// onboarding service rather than handlers.start; check that they exist
	// and that the service starts through the gate.
	for _, p := range []string{
		"POST /api/v1/onboarding-sessions/:sessionId/verify",
		"POST /api/v1/onboarding-sessions/:sessionId/bootstrap",
		"POST /api/v1/onboarding-sessions/:sessionId/bootstrap/continue",
	} {
		if _, ok := registeredRoutes(echoOf(s))[openAPIPath(p)]; !ok {
			t.Errorf("onboarding start endpoint %s is not registered", p)
		}
	}
	src, err := os.ReadFile(filepath.Join("..", "onboarding", "service.go"))
	if err != nil {
		t.Fatalf("read onboarding/service.go: %v", err)
	}
	if !strings.Contains(string(src), "s.gate.StartTx(") {
		t.Errorf("onboarding/service.go does not start through the gate")
	}
}

// TestGateStartCalledOnlyFromStarts: within package api only starts.go
// calls the gate's Start.
func TestGateStartCalledOnlyFromStarts(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var callers []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(src), "gate.Start("); n > 0 {
			callers = append(callers, f)
			if f == "starts.go" && n != 1 {
				t.Errorf("starts.go calls gate.Start( %d times, want once (in handlers.start)", n)
			}
		}
	}
	sort.Strings(callers)
	if len(callers) != 1 || callers[0] != "starts.go" {
		t.Errorf("gate.Start( appears in %v, want only starts.go", callers)
	}
}
