package api

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/opsgate/opsgate/domain"
)

// w3c reads and writes W3C trace context headers (traceparent,
// tracestate); a malformed traceparent is ignored, as the W3C says.
var w3c propagation.TraceContext

// startSpan starts the server span of req on route, the child of the
// trace context req came with. With tracing off (a no-op tracer) the span
// records nothing and only carries the caller's context, so that a start
// still keeps it with its run.
func startSpan(ctx context.Context, tracer trace.Tracer, req *http.Request, route string) (context.Context, trace.Span) {
	ctx = w3c.Extract(ctx, propagation.HeaderCarrier(req.Header))
	return tracer.Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(req.Method), semconv.HTTPRoute(route)))
}

// endSpan ends a request's span with its answer's status.
func endSpan(span trace.Span, status int) {
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// traceContextOf returns the trace context a start is recorded with, for
// its executor to link its work to (contract section 16): the request's
// span's (opsgate's own with tracing on, the caller's as it came with it
// off), or nil when the request came with none, or a malformed one (the
// start goes on, with no trace).
func traceContextOf(req *http.Request) *domain.TraceContext {
	ctx := req.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	w3c.Inject(ctx, carrier)
	return &domain.TraceContext{Traceparent: carrier.Get("traceparent"), Tracestate: carrier.Get("tracestate")}
}
