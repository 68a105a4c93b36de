package api_test

import (
	"testing"

	"github.com/opsgate/opsgate/internal/apptest"
)

// TestTraceContextReachesTheExecutor: a start's traceparent and
// tracestate are kept with its run and handed to the executor in the
// claim; a malformed traceparent is ignored (the start goes on, with no
// trace).
func TestTraceContextReachesTheExecutor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, c := range []struct {
		name, traceparent, want string
	}{
		{"valid", parent, parent},
		{"upper case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", parent},
		{"malformed", "00-not-a-trace-01", ""},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"none", "", ""},
	} {
		acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
		headers := []apptest.Header{{Key: "tracestate", Value: "vendor=opsgate"}}
		if c.traceparent != "" {
			headers = append(headers, apptest.Header{Key: "traceparent", Value: c.traceparent})
		}
		run := f.start(t, contractSurfaces[5], startArgs{conn: acme}, headers...).ExpectStart(t, "accepted").Run.ID
		var out struct {
			Items []struct {
				Run          struct{ ID string }
				TraceContext *struct {
					Traceparent string `json:"traceparent"`
					Tracestate  string `json:"tracestate"`
				} `json:"trace_context"`
			}
		}
		f.Must(t, 200, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1}, &out)
		if len(out.Items) != 1 || out.Items[0].Run.ID != run {
			t.Fatalf("%s: claimed %+v, want %s", c.name, out.Items, run)
		}
		got := out.Items[0].TraceContext
		switch {
		case c.want == "" && got != nil:
			t.Errorf("%s: claim carries %+v, want none", c.name, got)
		case c.want != "" && (got == nil || got.Traceparent != c.want || got.Tracestate != "vendor=opsgate"):
			t.Errorf("%s: claim carries %+v, want %s", c.name, got, c.want)
		}
	}
}
