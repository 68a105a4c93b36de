package api

import (
	"context"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkStartSpans: what tracing adds to one start, the request's span
// and the decision's, with tracing off (a no-op tracer) and on (the SDK
// batching to an exporter that drops everything), and the trace context
// the start keeps.
func BenchmarkStartSpans(b *testing.B) {
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	for _, c := range []struct {
		name   string
		tracer trace.Tracer
	}{{"off", noop.NewTracerProvider().Tracer("")}, {"on", sdk.Tracer("")}} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest("POST", "/api/v1/provider-connections/x/inventory-sync", nil)
			req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			b.ReportAllocs()
			for b.Loop() {
				ctx, span := startSpan(context.Background(), c.tracer, req, "/api/v1/provider-connections/:connectionId/inventory-sync")
				if traceContextOf(req.WithContext(ctx)) == nil {
					b.Fatal("no trace context kept")
				}
				_, decision := c.tracer.Start(ctx, "gate.decide")
				decision.End()
				endSpan(span, 202)
			}
		})
	}
}
