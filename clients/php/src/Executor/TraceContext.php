<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Json;

/**
 * The W3C trace context the run's start came with. A handler that traces
 * begins a trace of its own for the run and links it to this one, as the Go
 * runner does: a queued run is not part of the request that created it.
 * With OpenTelemetry's PHP SDK:
 *
 *     $builder = $tracer->spanBuilder('run ' . $job->run()->type)->setParent(false);
 *     if ($tc = $job->traceContext()) {
 *         $builder->addLink(SpanContext::createFromRemoteParent($tc->traceId(), $tc->spanId(),
 *             $tc->sampled() ? TraceFlags::SAMPLED : TraceFlags::DEFAULT));
 *     }
 */
final readonly class TraceContext
{
    public function __construct(
        public string $traceparent,
        public ?string $tracestate = null,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::string($data, 'traceparent'), Json::optionalString($data, 'tracestate'));
    }

    /** The trace id: 32 lower-case hex digits. */
    public function traceId(): string
    {
        return explode('-', $this->traceparent)[1] ?? '';
    }

    /** The id of the span the start was recorded in: 16 lower-case hex digits. */
    public function spanId(): string
    {
        return explode('-', $this->traceparent)[2] ?? '';
    }

    /** Whether the caller sampled the trace. */
    public function sampled(): bool
    {
        return (hexdec(explode('-', $this->traceparent)[3] ?? '0') & 1) === 1;
    }
}
