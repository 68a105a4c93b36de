package api_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/opsgate/opsgate/executorclient"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
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
		{"upper case (not W3C)", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", ""},
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

// TestSpansOfOneStart: with an SDK installed (an in-memory exporter), one
// start makes opsgate's spans, the HTTP request's the child of the
// caller's traceparent and the decision's the child of the request's; the
// claim, the completion and a feed batch have spans; and the Go runner's
// span of the run begins a trace of its own, linked to the start's.
func TestSpansOfOneStart(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithTracerProvider(tp))))
	ex := f.registerExecutor(t, "Go jobs", []string{"acme"}, nil)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}, apptest.Header{Key: "traceparent", Value: caller}).
		ExpectStart(t, "accepted").Run.ID

	ranSpans := tracetest.NewInMemoryExporter()
	ctx, stop := context.WithCancel(f.Ctx)
	defer stop()
	runner := &executorclient.Runner{Client: executorclient.New(f.URL, ex.Token), Wait: time.Second,
		Tracer: sdktrace.NewTracerProvider(sdktrace.WithSyncer(ranSpans)).Tracer("test"),
		Handler: func(context.Context, executorclient.Claim) executorclient.Result {
			return executorclient.Succeeded(nil)
		}}
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	apptest.WaitFor(t, 30*time.Second, "the run's span at the executor", func() bool { return len(ranSpans.GetSpans()) > 0 })
	apptest.WaitFor(t, 30*time.Second, "opsgate's span of the completion", func() bool { return named(spans, "gate.complete") != nil })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	request := named(spans, "POST /api/v1/provider-connections/:connectionId/inventory-sync")
	decision := named(spans, "gate.decide")
	if request == nil || decision == nil {
		t.Fatalf("no span of the start's request or decision among %d", len(spans.GetSpans()))
	}
	if got := request.Parent; got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the request's span has parent %s/%s, want the caller's", got.TraceID(), got.SpanID())
	}
	if decision.Parent.SpanID() != request.SpanContext.SpanID() ||
		!hasAttrs(decision, attribute.String("opsgate.outcome", "accepted"), attribute.String("opsgate.run_id", run)) {
		t.Errorf("the decision's span %+v is not the request's child with its outcome", decision.Attributes)
	}
	if named(spans, "gate.claim", attribute.Int("opsgate.claimed", 1)) == nil {
		t.Error("no span of the claim that took the run")
	}
	if named(spans, "feed.batch") == nil {
		t.Error("no span of a feed batch")
	}
	ran := ranSpans.GetSpans()[0]
	if ran.Name != "run inventory.sync" || ran.Parent.IsValid() || len(ran.Links) != 1 ||
		ran.Links[0].SpanContext.TraceID() != request.SpanContext.TraceID() || ran.Links[0].SpanContext.SpanID() != request.SpanContext.SpanID() {
		t.Errorf("the executor's span %q (parent %v, links %+v) is not a root linked to the start's request", ran.Name, ran.Parent, ran.Links)
	}
}

// named returns the first span of exporter called name with the
// attributes attrs, nil if none.
func named(exporter *tracetest.InMemoryExporter, name string, attrs ...attribute.KeyValue) *tracetest.SpanStub {
	for _, s := range exporter.GetSpans() {
		if s.Name == name && hasAttrs(&s, attrs...) {
			return &s
		}
	}
	return nil
}

func hasAttrs(s *tracetest.SpanStub, attrs ...attribute.KeyValue) bool {
	for _, want := range attrs {
		if !slices.Contains(s.Attributes, want) {
			return false
		}
	}
	return true
}
