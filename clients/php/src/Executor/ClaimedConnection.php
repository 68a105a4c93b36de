<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Json;

/**
 * The connection pinned into a claimed run, with its non-secret settings.
 * Secrets (the app registration's credentials) stay with the platform:
 * look them up by $id.
 */
final readonly class ClaimedConnection
{
    /** @param array<string, mixed> $settings */
    public function __construct(
        public string $id,
        public string $displayName,
        public string $provider,
        public array $settings,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(
            Json::string($data, 'id'),
            Json::optionalString($data, 'display_name') ?? '',
            Json::string($data, 'provider'),
            Json::optionalObject($data, 'settings') ?? [],
        );
    }
}
