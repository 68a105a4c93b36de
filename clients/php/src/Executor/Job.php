<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Run;

/**
 * What a handler gets: the claimed run, its pinned connection, and a view
 * of its lease, kept alive by the heartbeat process while the handler
 * works.
 *
 *     function (Job $job): array {
 *         foreach ($pages as $page) {
 *             $job->ensureLease();            // stop if the run was cancelled
 *             $this->sync($job->connection()->id, $page);
 *         }
 *         return ['pages' => count($pages)];  // succeeded, with a summary
 *     }
 */
final class Job
{
    /** @internal */
    public function __construct(
        public readonly Claim $claim,
        private readonly Heartbeat $heartbeat,
    ) {
    }

    /** The run (status running). */
    public function run(): Run
    {
        return $this->claim->run;
    }

    /** The connection pinned into the run at its start, with its non-secret settings. */
    public function connection(): ClaimedConnection
    {
        return $this->claim->connection;
    }

    /** The start's W3C trace context, if it had one. */
    public function traceContext(): ?TraceContext
    {
        return $this->claim->traceContext;
    }

    /**
     * Whether the lease is gone: an operator cancelled the run, it ran past
     * its finish_by, or it was reaped. Nothing the handler returns will be
     * recorded any more: it should stop.
     */
    public function leaseLost(): bool
    {
        return $this->heartbeat->lost();
    }

    /**
     * Throws LeaseLostException when the lease is gone: call it between
     * steps of long work.
     */
    public function ensureLease(): void
    {
        if ($this->heartbeat->lost()) {
            throw new LeaseLostException(sprintf('the lease on run %s is lost: %s', $this->claim->run->id, $this->heartbeat->lostDetail()));
        }
    }

    /** How many heartbeats opsgate has accepted for this run so far. */
    public function heartbeats(): int
    {
        return $this->heartbeat->beats();
    }

    /** Whether the heartbeat process still runs (it stops after lease_lost). */
    public function heartbeating(): bool
    {
        return $this->heartbeat->running();
    }

    /** When the lease expires unless extended, as of the last heartbeat. */
    public function leaseExpiresAt(): \DateTimeImmutable
    {
        return $this->heartbeat->expiresAt();
    }
}
