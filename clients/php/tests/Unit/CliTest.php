<?php

declare(strict_types=1);

namespace Opsgate\Tests\Unit;

use Opsgate\Executor\Cli;
use PHPUnit\Framework\TestCase;

/**
 * bin/opsgate-work's command line: what it refuses before it starts.
 */
final class CliTest extends TestCase
{
    /** @return iterable<string, array{list<string>, array<string, string>, string}> */
    public static function usageErrors(): iterable
    {
        $env = ['OPSGATE_URL' => 'http://127.0.0.1:1', 'OPSGATE_EXECUTOR_TOKEN' => 'oge_x'];
        yield 'no provider' => [[], $env, '--provider is required'];
        yield 'no URL' => [['--provider=graph'], ['OPSGATE_EXECUTOR_TOKEN' => 'oge_x'], '--url (or OPSGATE_URL) is required'];
        yield 'no token' => [['--provider=graph'], ['OPSGATE_URL' => 'http://x'], '--token (or OPSGATE_EXECUTOR_TOKEN) is required'];
        yield 'unknown option' => [['--provider=graph', '--bogus=1'], $env, 'unknown option --bogus'];
        yield 'bad concurrency' => [['--provider=graph', '--concurrency=many'], $env, '--concurrency must be a whole number'];
        yield 'concurrency out of range' => [['--provider=graph', '--concurrency=0'], $env, 'concurrency is 1..100'];
        yield 'wait out of range' => [['--provider=graph', '--wait=31'], $env, 'wait is 0..30 seconds'];
        yield 'no handlers file' => [['--provider=graph', '--handlers=/nonexistent.php'], $env, 'no handlers file /nonexistent.php'];
        yield 'bad log level' => [['--provider=graph', '--log-level=loud'], $env, 'unknown log level loud'];
    }

    /**
     * @dataProvider usageErrors
     * @param list<string> $args
     * @param array<string, string> $env
     */
    public function testUsageErrorsExitTwo(array $args, array $env, string $says): void
    {
        $out = fopen('php://memory', 'w+');
        $err = fopen('php://memory', 'w+');
        self::assertSame(2, Cli::main(['opsgate-work', ...$args], $env, $out, $err));
        rewind($err);
        self::assertStringContainsString($says, (string) stream_get_contents($err));
    }

    public function testHelp(): void
    {
        $out = fopen('php://memory', 'w+');
        self::assertSame(0, Cli::main(['opsgate-work', '--help'], [], $out, fopen('php://memory', 'w+')));
        rewind($out);
        self::assertStringContainsString('usage: opsgate-work --provider=NAME', (string) stream_get_contents($out));
    }

    public function testARevokedTokenExitsOne(): void
    {
        // A server that refuses every request with 401, forked from the test.
        $server = stream_socket_server('tcp://127.0.0.1:0');
        self::assertNotFalse($server);
        $address = stream_socket_get_name($server, false);
        $pid = pcntl_fork();
        if ($pid === 0) {
            $conn = stream_socket_accept($server, 10);
            if ($conn !== false) {
                fread($conn, 8192);
                $body = '{"type":"about:blank","title":"Unauthorized","status":401,"detail":"unknown token","code":"unauthorized"}';
                fwrite($conn, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/problem+json\r\nContent-Length: " . strlen($body) . "\r\n\r\n" . $body);
                fclose($conn);
            }
            \Opsgate\Executor\Process::vanish();
        }
        fclose($server);
        $err = fopen('php://memory', 'w+');
        try {
            $code = Cli::main(['opsgate-work', '--provider=graph', '--wait=0'], ['OPSGATE_URL' => 'http://' . $address, 'OPSGATE_EXECUTOR_TOKEN' => 'oge_revoked'], fopen('php://memory', 'w+'), $err);
        } finally {
            pcntl_waitpid($pid, $status);
        }
        rewind($err);
        $log = (string) stream_get_contents($err);
        self::assertSame(1, $code, $log);
        self::assertStringContainsString('401 unauthorized', $log);
    }
}
