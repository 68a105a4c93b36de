<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * What an operator can do next: a label for a button, a stable action
 * name (opsgate may add actions: ignore unknown ones) and, where there is
 * one, the API path that does it.
 */
final readonly class NextStep
{
    public function __construct(
        public string $label,
        public string $action,
        public ?string $href,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::string($data, 'label'), Json::string($data, 'action'), Json::optionalString($data, 'href'));
    }

    /**
     * @param list<array<string, mixed>> $items
     * @return list<self>
     */
    public static function listFrom(array $items): array
    {
        return array_map(self::fromArray(...), $items);
    }
}
