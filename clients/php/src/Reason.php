<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * An entry of opsgate's one reason catalog (contract section 6): the same
 * problem has the same code and class wherever it is shown.
 */
final readonly class Reason
{
    /**
     * @param string $code the stable code, e.g. provider_connection.consent_missing
     * @param string $class the family, e.g. provider_consent
     * @param string $message one sentence for people
     */
    public function __construct(
        public string $code,
        public string $class,
        public string $message,
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        return new self(Json::string($data, 'code'), Json::string($data, 'class'), Json::optionalString($data, 'message') ?? '');
    }
}
