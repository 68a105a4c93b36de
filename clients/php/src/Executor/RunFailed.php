<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * Thrown by a handler: the run ends failed with this catalog reason.
 *
 *     throw RunFailed::throttled('Graph kept answering 429 after 5 retries', ['retries' => 5]);
 */
class RunFailed extends \RuntimeException implements FailsWithReason
{
    /** @param array<string, mixed> $summary */
    public function __construct(
        private readonly ExecutionReason $reason,
        string $message = '',
        private readonly array $summary = [],
        ?\Throwable $previous = null,
    ) {
        parent::__construct($message !== '' ? $message : $reason->value, 0, $previous);
    }

    /** @param array<string, mixed> $summary */
    public static function credentialsRejected(string $message = '', array $summary = [], ?\Throwable $previous = null): self
    {
        return new self(ExecutionReason::CredentialsRejected, $message, $summary, $previous);
    }

    /** @param array<string, mixed> $summary */
    public static function consentRevoked(string $message = '', array $summary = [], ?\Throwable $previous = null): self
    {
        return new self(ExecutionReason::ConsentRevoked, $message, $summary, $previous);
    }

    /** @param array<string, mixed> $summary */
    public static function throttled(string $message = '', array $summary = [], ?\Throwable $previous = null): self
    {
        return new self(ExecutionReason::Throttled, $message, $summary, $previous);
    }

    /** @param array<string, mixed> $summary */
    public static function unavailable(string $message = '', array $summary = [], ?\Throwable $previous = null): self
    {
        return new self(ExecutionReason::Unavailable, $message, $summary, $previous);
    }

    public function reason(): ExecutionReason
    {
        return $this->reason;
    }

    public function summary(): array
    {
        return $this->summary;
    }
}
