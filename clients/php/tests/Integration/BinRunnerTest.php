<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

use Opsgate\Outcome;
use Opsgate\RunStatus;
use Opsgate\StartOptions;

/**
 * bin/opsgate-work as a supervisor runs it: a process stopped with SIGTERM.
 */
final class BinRunnerTest extends ProcessTestCase
{
    public function testSigtermLetsTheRunInHandFinishAndExitsZero(): void
    {
        $dir = self::temp('sigterm');
        @mkdir($dir);
        $conn = self::env('OPSGATE_EXEC_SIGTERM_CONN');
        $bin = $this->spawnRunner('SIGTERM', ['--handlers=tests/fixtures/sigterm-handlers.php'], ['OPSGATE_TEST_DIR' => $dir]);
        $this->waitUntilLive($bin, $conn);

        $start = $this->operator()->syncInventory($conn);
        self::assertSame(Outcome::Accepted, $start->outcome);
        $this->waitUntil(static fn (): bool => is_file($dir . '/started'), 'the handler to start');
        self::assertSame($start->runId(), file_get_contents($dir . '/started'));

        // The stop arrives while the handler works; it is released after.
        self::assertTrue(posix_kill($this->pid($bin), SIGTERM));
        touch($dir . '/release');

        self::assertSame(0, $this->exitCode($bin), $this->stderr($bin));
        // Exited: the run must already be completed, not left to a lease.
        $run = $this->operator()->operation((string) $start->runId());
        self::assertSame(RunStatus::Succeeded, $run->status, $this->stderr($bin));
        self::assertFalse($run->summary['interrupted'] ?? true, 'the stop signal cut the handler\'s sleep short');
        self::assertStringContainsString('SIGTERM: stopping after the runs in hand', $this->stderr($bin));
        self::assertStringContainsString('run completed', $this->stderr($bin));
        self::assertStringContainsString('runner stopped', $this->stderr($bin));
    }

    public function testSigtermEndsALongPollAtOnce(): void
    {
        $bin = $this->spawnRunner('IDLE', ['--wait=25'], []);
        $this->waitUntilLive($bin, self::env('OPSGATE_EXEC_IDLE_CONN'));
        // The runner is now in a 25 s long poll for work.
        $began = microtime(true);
        self::assertTrue(posix_kill($this->pid($bin), SIGTERM));
        self::assertSame(0, $this->exitCode($bin, 10.0), $this->stderr($bin));
        self::assertLessThan(5.0, microtime(true) - $began, 'the long poll was not abandoned');
        self::assertStringContainsString('runner stopped', $this->stderr($bin));
    }

    public function testTheDemoHandlersAndMaxRuns(): void
    {
        $conn = self::env('OPSGATE_EXEC_DEMO_CONN');
        $bin = $this->spawnRunner('DEMO', ['--max-runs=1'], ['OPSGATE_DEMO_SECONDS' => '0.3']);
        $this->waitUntilLive($bin, $conn);
        $start = $this->operator()->syncDirectoryGroups(self::env('OPSGATE_TENANT_ID'), $conn);
        self::assertSame(Outcome::Accepted, $start->outcome);
        self::assertSame(0, $this->exitCode($bin), $this->stderr($bin));
        $run = $this->operator()->operation((string) $start->runId());
        self::assertSame(RunStatus::Succeeded, $run->status, $this->stderr($bin));
        self::assertSame('entra_group_sync', $run->type);
        self::assertSame(['demo' => true, 'type' => 'directory.groups.sync', 'connection' => 'demo'], array_intersect_key($run->summary ?? [], ['demo' => 0, 'type' => 0, 'connection' => 0]));
        self::assertStringContainsString('runner stopped', $this->stderr($bin));
    }

    /**
     * @param list<string> $args
     * @param array<string, string> $env
     */
    private function spawnRunner(string $scenario, array $args, array $env): int
    {
        return $this->spawn(
            [PHP_BINARY, 'bin/opsgate-work', '--provider=' . self::env("OPSGATE_EXEC_{$scenario}_PROVIDER"), '--wait=2', ...$args],
            ['OPSGATE_URL' => self::env('OPSGATE_URL'), 'OPSGATE_EXECUTOR_TOKEN' => self::env("OPSGATE_EXEC_{$scenario}_TOKEN")] + $env,
            strtolower($scenario),
        );
    }

    /** Waits until the runner has called in: a dry run of a start on its provider is accepted. */
    private function waitUntilLive(int $bin, string $conn): void
    {
        $client = $this->operator();
        $this->waitUntil(
            fn (): bool => $client->syncInventory($conn, new StartOptions(dryRun: true))->outcome === Outcome::Accepted,
            'the runner to call in; its log: ' . $this->stderr($bin),
        );
    }
}
