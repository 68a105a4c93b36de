<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Json;

/**
 * A claim's hold on its run: the epoch fences every heartbeat and the
 * completion (a stale epoch answers 409 lease_lost).
 */
final readonly class Lease
{
    public function __construct(
        public int $epoch,
        public \DateTimeImmutable $expiresAt,
        /** how often opsgate asks to be told the run is still worked on */
        public int $heartbeatIntervalMs,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::int($data, 'epoch'), Json::time($data, 'expires_at'), Json::int($data, 'heartbeat_interval_ms'));
    }
}
