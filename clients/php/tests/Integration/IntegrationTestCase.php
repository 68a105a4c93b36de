<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

use Opsgate\Client;
use Opsgate\Executor\ExecutorClient;
use Opsgate\Http\Endpoint;
use Opsgate\Run;
use PHPUnit\Framework\TestCase;

/**
 * The base of the tests against a real opsgate. `go test ./clients/php/`
 * starts one, creates the fixture and passes it in OPSGATE_* variables;
 * without them these tests are skipped.
 */
abstract class IntegrationTestCase extends TestCase
{
    /** Bounds every wait for a condition. */
    protected const DEADLINE = 20.0;

    protected function setUp(): void
    {
        if (getenv('OPSGATE_URL') === false || getenv('OPSGATE_EXEC_SUCCEED_TOKEN') === false) {
            self::markTestSkipped('needs a real opsgate: run `go test ./clients/php/` from the repository root');
        }
    }

    protected static function env(string $name): string
    {
        $value = getenv($name);
        if ($value === false || $value === '') {
            throw new \RuntimeException(sprintf('the fixture variable %s is not set', $name));
        }
        return $value;
    }

    /** A client with the operator's token. */
    protected function operator(): Client
    {
        return new Client(self::env('OPSGATE_URL'), self::env('OPSGATE_OPERATOR_TOKEN'));
    }

    /** The executor client of a scenario (SUCCEED, FAIL, LEASE, ...). */
    protected function executor(string $scenario): ExecutorClient
    {
        return new ExecutorClient(self::env('OPSGATE_URL'), self::env("OPSGATE_EXEC_{$scenario}_TOKEN"));
    }

    /**
     * Makes the scenario's executor live (it calls in with an empty
     * claim), so that starts of its provider are accepted.
     */
    protected function callIn(ExecutorClient $executor): void
    {
        self::assertSame([], $executor->claim(1, 0.0), 'nothing is queued for this executor yet');
    }

    /**
     * Admin requests, for the webhook test.
     *
     * @param array<string, mixed>|null $body
     * @return array<string, mixed>
     */
    protected function admin(string $method, string $path, ?array $body = null): array
    {
        $response = (new Endpoint(self::env('OPSGATE_URL'), self::env('OPSGATE_ADMIN_TOKEN')))->send($method, $path, $body);
        self::assertLessThan(300, $response->status, $response->body);
        return $response->json();
    }

    /** Waits until $condition holds, failing at the deadline. */
    protected function waitUntil(\Closure $condition, string $what, float $timeout = self::DEADLINE): void
    {
        $deadline = microtime(true) + $timeout;
        while (!$condition()) {
            if (microtime(true) > $deadline) {
                self::fail(sprintf('timed out after %.0f s waiting for %s', $timeout, $what));
            }
            usleep(20_000);
        }
    }

    /** Waits (long polls) until run $id has ended. */
    protected function ended(string $id): Run
    {
        $run = $this->operator()->waitForRun($id, self::DEADLINE);
        self::assertTrue($run->status->isTerminal(), sprintf('run %s is still %s after %.0f s', $id, $run->status->value, self::DEADLINE));
        return $run;
    }

    /** A fresh W3C traceparent. */
    protected static function traceparent(): string
    {
        return sprintf('00-%s-%s-01', bin2hex(random_bytes(16)), bin2hex(random_bytes(8)));
    }

    /** A file path under the test's temporary directory. */
    protected static function temp(string $name): string
    {
        return self::env('OPSGATE_PHPUNIT_TEMP') . '/' . $name;
    }
}
