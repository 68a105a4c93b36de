<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * Who started a run: the user, and the integration the request came
 * through when the platform acted on the user's behalf.
 */
final readonly class Initiator
{
    public function __construct(
        public string $userId,
        public string $name,
        public ?string $viaIntegrationId,
        public ?string $viaIntegrationName,
        /** "<user> via <integration>", or the user's name */
        public string $label,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        $via = Json::optionalObject($data, 'via');
        return new self(
            Json::string($data, 'user_id'),
            Json::optionalString($data, 'name') ?? '',
            $via !== null ? Json::optionalString($via, 'id') : null,
            $via !== null ? Json::optionalString($via, 'name') : null,
            Json::optionalString($data, 'label') ?? '',
        );
    }
}
