<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * An accepted run's deadlines (contract section 12): unclaimed past
 * claimBy it ends failed / execution.not_picked_up; running past finishBy
 * (set when claimed) it ends failed / execution.timed_out.
 */
final readonly class Deadlines
{
    public function __construct(
        public \DateTimeImmutable $claimBy,
        public ?\DateTimeImmutable $finishBy,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::time($data, 'claim_by'), Json::optionalTime($data, 'finish_by'));
    }
}
