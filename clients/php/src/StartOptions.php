<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * What every start may carry besides its surface's own arguments.
 *
 *     $client->syncInventory($connectionId, new StartOptions(
 *         idempotencyKey: "inventory-{$clickId}",   // the same click sent twice starts once
 *         traceparent: $span->traceparent(),        // links the executor's work to this request
 *         maxDurationSeconds: 900,
 *     ));
 */
final readonly class StartOptions
{
    /**
     * @param string|null $idempotencyKey the Idempotency-Key (at most 255 characters); null: a
     *        random one is generated, and the StartResult says which
     * @param string|null $traceparent W3C trace context of the caller's span, kept with the run
     *        and handed to the executor in its claim
     * @param int|null $queueTtlSeconds how long the run may wait to be claimed (1..86400)
     * @param int|null $maxDurationSeconds how long it may run once claimed (1..86400)
     * @param bool $dryRun decide against the state as it is now and record nothing
     */
    public function __construct(
        public ?string $idempotencyKey = null,
        public ?string $traceparent = null,
        public ?string $tracestate = null,
        public ?int $queueTtlSeconds = null,
        public ?int $maxDurationSeconds = null,
        public bool $dryRun = false,
    ) {
        if ($idempotencyKey !== null && ($idempotencyKey === '' || strlen($idempotencyKey) > 255)) {
            throw new \InvalidArgumentException('an Idempotency-Key has 1 to 255 characters');
        }
    }

    /**
     * The body's `limits` member, or null for the deployment's defaults.
     *
     * @return array<string, int>|null
     */
    public function limits(): ?array
    {
        $limits = array_filter(
            ['queue_ttl_s' => $this->queueTtlSeconds, 'max_duration_s' => $this->maxDurationSeconds],
            static fn (?int $v): bool => $v !== null,
        );
        return $limits === [] ? null : $limits;
    }
}
