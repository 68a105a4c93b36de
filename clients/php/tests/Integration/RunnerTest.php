<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

use Opsgate\Executor\ExecutorClient;
use Opsgate\Executor\Job;
use Opsgate\Executor\Result;
use Opsgate\Executor\RunFailed;
use Opsgate\Executor\Runner;
use Opsgate\Outcome;
use Opsgate\RunStatus;
use Opsgate\StartOptions;
use Opsgate\Tests\Support\MemoryLogger;
use Opsgate\Tests\Support\RecordingTransport;

/**
 * The executor runner (library) against a real opsgate: each test has an
 * executor of a provider of its own and a connection of it.
 */
final class RunnerTest extends IntegrationTestCase
{
    public function testClaimsHeartbeatsAndCompletesARun(): void
    {
        $executor = $this->executor('SUCCEED');
        $this->callIn($executor);
        $traceparent = self::traceparent();
        $start = $this->operator()->syncInventory(self::env('OPSGATE_EXEC_SUCCEED_CONN'), new StartOptions(traceparent: $traceparent));
        self::assertSame(Outcome::Accepted, $start->outcome);

        $seen = [];
        $logger = new MemoryLogger();
        $runner = new Runner($executor, [
            'inventory.sync' => function (Job $job) use (&$seen): array {
                // Work until the heartbeat process has extended the lease twice.
                $first = $job->leaseExpiresAt();
                $this->waitUntil(static fn (): bool => $job->heartbeats() >= 2, 'two heartbeats');
                $seen = [
                    'run' => $job->run()->id,
                    'status' => $job->run()->status,
                    'connection' => $job->connection()->id,
                    'provider' => $job->connection()->provider,
                    'traceparent' => $job->traceContext()?->traceparent,
                    'link' => [$job->traceContext()?->traceId(), $job->traceContext()?->spanId(), $job->traceContext()?->sampled()],
                    'extended' => $job->leaseExpiresAt() > $first,
                    'epoch' => $job->claim->lease->epoch,
                ];
                return ['devices' => 3];
            },
        ], wait: 5.0, providers: [self::env('OPSGATE_EXEC_SUCCEED_PROVIDER')], maxRuns: 1, logger: $logger);

        self::assertSame(1, $runner->run(), (string) $logger);
        self::assertSame($start->runId(), $seen['run']);
        self::assertSame(RunStatus::Running, $seen['status']);
        self::assertSame(self::env('OPSGATE_EXEC_SUCCEED_CONN'), $seen['connection']);
        self::assertSame(self::env('OPSGATE_EXEC_SUCCEED_PROVIDER'), $seen['provider']);
        self::assertSame($traceparent, $seen['traceparent'], 'the start\'s trace context reaches the executor');
        [, $traceId, $spanId, $flags] = explode('-', $traceparent);
        self::assertSame([$traceId, $spanId, $flags === '01'], $seen['link'], 'what a handler links its span to');
        self::assertTrue($seen['extended'], 'the heartbeats extended the lease');
        self::assertGreaterThan(0, $seen['epoch']);

        $run = $this->ended((string) $start->runId());
        self::assertSame(RunStatus::Succeeded, $run->status, (string) $logger);
        self::assertSame(['devices' => 3], $run->summary);
        self::assertTrue($logger->has('run completed'), (string) $logger);
    }

    public function testAThrowingHandlerFailsTheRunWithItsCatalogReason(): void
    {
        $executor = $this->executor('FAIL');
        $this->callIn($executor);
        $conn = self::env('OPSGATE_EXEC_FAIL_CONN');
        $handlers = [
            'inventory.sync' => static fn (Job $job) => throw RunFailed::throttled('Graph kept answering 429', ['retries' => 5]),
            'compliance.snapshot' => static fn (Job $job) => throw new \DomainException('the snapshot API changed'),
        ];

        $throttled = $this->operator()->syncInventory($conn);
        self::assertSame(Outcome::Accepted, $throttled->outcome);
        (new Runner($executor, $handlers, wait: 5.0, maxRuns: 1))->run();
        $run = $this->ended((string) $throttled->runId());
        self::assertSame(RunStatus::Failed, $run->status);
        self::assertSame('provider.throttled', $run->reason?->code);
        self::assertSame('provider_throttled', $run->reason?->class);
        self::assertSame(5, $run->summary['retries'] ?? null);
        self::assertSame('Graph kept answering 429', $run->summary['error'] ?? null);

        // An exception that names no reason: the generic one of the catalog.
        $generic = $this->operator()->snapshotCompliance($conn);
        self::assertSame(Outcome::Accepted, $generic->outcome);
        (new Runner($executor, $handlers, wait: 5.0, maxRuns: 1))->run();
        $run = $this->ended((string) $generic->runId());
        self::assertSame(RunStatus::Failed, $run->status);
        self::assertSame('provider.unavailable', $run->reason?->code);
        self::assertSame(\DomainException::class, $run->summary['exception'] ?? null);
        self::assertSame('the snapshot API changed', $run->summary['error'] ?? null);
    }

    public function testAHandlerOutlivingItsLeaseStopsOnThe409AndDoesNotComplete(): void
    {
        $transport = new RecordingTransport();
        $executor = new ExecutorClient(self::env('OPSGATE_URL'), self::env('OPSGATE_EXEC_LEASE_TOKEN'), $transport);
        $this->callIn($executor);
        // The run may take one second once claimed: then it times out, and
        // the next heartbeat is answered 409 lease_lost.
        $start = $this->operator()->syncInventory(self::env('OPSGATE_EXEC_LEASE_CONN'), new StartOptions(maxDurationSeconds: 1));
        self::assertSame(Outcome::Accepted, $start->outcome);

        $observed = [];
        $logger = new MemoryLogger();
        $runner = new Runner($executor, [
            '*' => function (Job $job) use (&$observed): Result {
                $this->waitUntil(static fn (): bool => $job->leaseLost(), 'the lease to be lost');
                $this->waitUntil(static fn (): bool => !$job->heartbeating(), 'the heartbeat to stop');
                $observed = ['beats' => $job->heartbeats()];
                return Result::succeeded(['too' => 'late']);
            },
        ], wait: 5.0, maxRuns: 1, logger: $logger);
        $runner->run();

        self::assertNotSame([], $observed, 'the handler saw the lease lost and the heartbeat stop');
        self::assertTrue($logger->has('lease lost; result dropped'), (string) $logger);
        self::assertSame([], $transport->matching('/complete'), 'a run whose lease is lost is not completed');
        $run = $this->ended((string) $start->runId());
        self::assertSame(RunStatus::Failed, $run->status);
        self::assertSame('execution.timed_out', $run->reason?->code);
        self::assertNull($run->summary, 'nothing of the late result was recorded');
    }

    public function testConcurrentRunsAreHandledInForkedProcesses(): void
    {
        $executor = $this->executor('CONCURRENT');
        $this->callIn($executor);
        $starts = [
            $this->operator()->syncInventory(self::env('OPSGATE_EXEC_CONCURRENT_CONN')),
            $this->operator()->syncInventory(self::env('OPSGATE_EXEC_CONCURRENT_CONN2')),
        ];
        $dir = self::temp('concurrent');
        @mkdir($dir);
        $runner = new Runner($executor, [
            // Each handler says it is running, then waits until both are:
            // only concurrent handlers get past this.
            '*' => static function (Job $job) use ($dir): array {
                touch($dir . '/' . $job->run()->id);
                $deadline = microtime(true) + 20;
                while (count(glob($dir . '/*') ?: []) < 2) {
                    if (microtime(true) > $deadline) {
                        throw new \RuntimeException('the other run never ran beside this one');
                    }
                    usleep(20_000);
                }
                return ['pid' => getmypid()];
            },
        ], concurrency: 2, wait: 5.0, maxRuns: 2);
        self::assertSame(2, $runner->run());

        $pids = [];
        foreach ($starts as $start) {
            $run = $this->ended((string) $start->runId());
            self::assertSame(RunStatus::Succeeded, $run->status, json_encode($run->summary) ?: '');
            $pids[] = $run->summary['pid'] ?? null;
        }
        self::assertNotContains(getmypid(), $pids, 'the handlers ran in forked processes');
        self::assertCount(2, array_unique($pids));
    }
}
