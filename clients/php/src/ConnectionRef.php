<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * A provider connection as pinned into a run when it was accepted.
 */
final readonly class ConnectionRef
{
    public function __construct(
        public string $id,
        public string $displayName,
        public string $provider,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::string($data, 'id'), Json::string($data, 'display_name'), Json::string($data, 'provider'));
    }
}
