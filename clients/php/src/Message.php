<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * The presenter's wording, the same on every surface: the title says
 * which operation and whether it was accepted, the body why not.
 */
final readonly class Message
{
    public function __construct(
        public string $title,
        public string $body,
        public Tone $tone,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        $tone = Tone::tryFrom(Json::string($data, 'tone'))
            ?? throw new UnexpectedResponseException(sprintf('unknown message tone %s', $data['tone']));
        return new self(Json::string($data, 'title'), Json::optionalString($data, 'body') ?? '', $tone);
    }
}
