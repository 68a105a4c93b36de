package gate

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// The gate's spans (Config.Tracer): a start's decision, a claim, a
// completion. A decision's span lasts from the start's arrival to its
// answer, the wait for its group's commit included.

// endSpan ends span, failed with err if there is one.
func endSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	span.SetAttributes(attrs...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// decisionAttrs are what a decision's span records of res.
func decisionAttrs(res StartResponse) []attribute.KeyValue {
	r := res.Result
	attrs := []attribute.KeyValue{attribute.String("opsgate.outcome", string(r.Outcome)),
		attribute.String("opsgate.run_id", r.Run.ID), attribute.Bool("opsgate.replayed", res.Replayed)}
	if r.Reason != nil {
		attrs = append(attrs, attribute.String("opsgate.reason", string(r.Reason.Code)))
	}
	return attrs
}
