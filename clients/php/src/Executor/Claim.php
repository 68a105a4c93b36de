<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Json;
use Opsgate\Run;
use Opsgate\UnexpectedResponseException;

/**
 * A run handed to this executor: the run (now running), its pinned
 * connection, the lease and the start's trace context.
 */
final readonly class Claim
{
    public function __construct(
        public Run $run,
        public ClaimedConnection $connection,
        public Lease $lease,
        public ?TraceContext $traceContext,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        $run = Json::optionalObject($data, 'run') ?? throw new UnexpectedResponseException('a claim without a run');
        $connection = Json::optionalObject($data, 'connection') ?? throw new UnexpectedResponseException('a claim without a connection');
        $lease = Json::optionalObject($data, 'lease') ?? throw new UnexpectedResponseException('a claim without a lease');
        $trace = Json::optionalObject($data, 'trace_context');
        return new self(
            Run::fromArray($run),
            ClaimedConnection::fromArray($connection),
            Lease::fromArray($lease),
            $trace !== null ? TraceContext::fromArray($trace) : null,
        );
    }
}
