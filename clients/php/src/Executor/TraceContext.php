<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Json;

/**
 * The W3C trace context the run's start came with: a handler that traces
 * makes its span a child of $traceparent, linking its work to the click.
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
}
