// Package tracing exports opsgate's own spans (requests, decisions,
// claims, completions, feed batches) with the OpenTelemetry SDK over
// OTLP/HTTP, configured by the standard OTEL_ variables. Without them
// opsgate uses a no-op tracer provider and pays nothing for spans.
package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// Instrumentation is the name opsgate's tracers carry.
const Instrumentation = "github.com/opsgate/opsgate"

// NewProvider returns a tracer provider that batches spans to the OTLP
// endpoint of OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, as service
// OTEL_SERVICE_NAME (default "opsgate"), sampled per OTEL_TRACES_SAMPLER
// (default: every trace, or as the caller's trace says). Shutdown flushes
// what is pending.
func NewProvider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// The environment's service name and attributes win over the default.
	res, err := resource.Merge(resource.NewSchemaless(semconv.ServiceName("opsgate")), resource.Environment())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)), nil
}
