<?php

declare(strict_types=1);

namespace Opsgate\Tests\Support;

/**
 * Collects the runner's log lines.
 */
final class MemoryLogger
{
    /** @var list<array{string, string, array<string, mixed>}> */
    public array $lines = [];

    /** @param array<string, mixed> $context */
    public function __invoke(string $level, string $message, array $context = []): void
    {
        $this->lines[] = [$level, $message, $context];
    }

    public function has(string $message): bool
    {
        foreach ($this->lines as [, $m]) {
            if ($m === $message) {
                return true;
            }
        }
        return false;
    }

    public function __toString(): string
    {
        return implode("\n", array_map(static fn (array $l): string => $l[0] . ' ' . $l[1] . ' ' . json_encode($l[2]), $this->lines));
    }
}
