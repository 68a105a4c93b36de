<?php

declare(strict_types=1);

namespace Opsgate;

use Opsgate\Http\TransportException;

/**
 * When the client sends a request again by itself.
 *
 * - 429 rate_limited and 503 (database_unavailable, overloaded,
 *   request_timeout) recorded nothing: the client waits what Retry-After
 *   says (or $defaultWait without one) and sends the same request again,
 *   with the same Idempotency-Key, at most $maxRetries times. A
 *   Retry-After longer than $maxWait is not waited for: the
 *   ProblemException is thrown at once, its retryAfter saying when to come
 *   back (a web request should not sleep for a minute).
 * - A request that got no answer at all (refused, reset) is sent again
 *   after $defaultWait, doubling, only when repeating it is harmless:
 *   reads, and starts (their Idempotency-Key makes a repeat answer the
 *   first result).
 */
final readonly class RetryPolicy
{
    /**
     * @param \Closure(float): void|null $sleep how to wait (tests pass a recorder); default usleep
     * @param \Closure(int, float, ProblemException|TransportException): void|null $onRetry told
     *        before each retry: the attempt that failed (1 = the first), the seconds it will wait,
     *        and why
     */
    public function __construct(
        public int $maxRetries = 3,
        public float $maxWait = 30.0,
        public float $defaultWait = 1.0,
        public ?\Closure $sleep = null,
        public ?\Closure $onRetry = null,
    ) {
        if ($maxRetries < 0 || $maxWait < 0 || $defaultWait < 0) {
            throw new \InvalidArgumentException('retry bounds must not be negative');
        }
    }

    /** No retries at all. */
    public static function none(): self
    {
        return new self(maxRetries: 0);
    }

    /** @internal */
    public function pause(float $seconds): void
    {
        if ($this->sleep !== null) {
            ($this->sleep)($seconds);
            return;
        }
        usleep((int) round($seconds * 1_000_000));
    }
}
