<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

/**
 * Tests that spawn PHP processes (bin/opsgate-work, a `php -S` receiver).
 */
abstract class ProcessTestCase extends IntegrationTestCase
{
    /** @var list<array{resource, string, string}> process, stdout file, stderr file */
    private array $processes = [];

    protected function tearDown(): void
    {
        foreach ($this->processes as [$process]) {
            if (is_resource($process) && proc_get_status($process)['running']) {
                proc_terminate($process, SIGKILL);
            }
            if (is_resource($process)) {
                proc_close($process);
            }
        }
        $this->processes = [];
    }

    /**
     * Starts $command (no shell), its output in files; returns its index.
     *
     * @param list<string> $command
     * @param array<string, string> $env
     */
    protected function spawn(array $command, array $env, string $name): int
    {
        $out = self::temp($name . '.out');
        $err = self::temp($name . '.err');
        $process = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $out, 'w'], 2 => ['file', $err, 'w']], $pipes, dirname(__DIR__, 2), $env + ['PATH' => (string) getenv('PATH')]);
        self::assertIsResource($process, 'cannot start ' . implode(' ', $command));
        $this->processes[] = [$process, $out, $err];
        return count($this->processes) - 1;
    }

    protected function pid(int $index): int
    {
        return proc_get_status($this->processes[$index][0])['pid'];
    }

    /** What process $index wrote to stderr so far. */
    protected function stderr(int $index): string
    {
        return (string) @file_get_contents($this->processes[$index][2]);
    }

    /** Waits until process $index exits; returns its exit code. */
    protected function exitCode(int $index, float $timeout = self::DEADLINE): int
    {
        $process = $this->processes[$index][0];
        $code = null;
        $this->waitUntil(static function () use ($process, &$code): bool {
            $status = proc_get_status($process);
            if ($status['running']) {
                return false;
            }
            $code = $status['signaled'] ? 128 + $status['termsig'] : $status['exitcode'];
            return true;
        }, 'process ' . $index . ' to exit', $timeout);
        return (int) $code;
    }
}
