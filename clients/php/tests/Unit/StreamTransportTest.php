<?php

declare(strict_types=1);

namespace Opsgate\Tests\Unit;

use Opsgate\Executor\Process;
use Opsgate\Http\AbortedException;
use Opsgate\Http\Request;
use Opsgate\Http\StreamTransport;
use Opsgate\Http\TransportException;
use PHPUnit\Framework\TestCase;

/**
 * The socket transport against a one-shot server forked from the test.
 */
final class StreamTransportTest extends TestCase
{
    /** @var list<int> */
    private array $children = [];

    protected function tearDown(): void
    {
        foreach ($this->children as $pid) {
            posix_kill($pid, SIGKILL);
            pcntl_waitpid($pid, $status);
        }
    }

    public function testContentLengthAndHeaders(): void
    {
        $url = $this->serve("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 11\r\n\r\n{\"ok\":true}");
        $response = (new StreamTransport())->send(new Request('POST', $url . '/x?y=1', ['Content-Type' => 'application/json'], '{}', 5));
        self::assertSame(201, $response->status);
        self::assertSame('{"ok":true}', $response->body);
        self::assertSame('1, 2', $response->header('X-A'));
        self::assertSame(['ok' => true], $response->json());
    }

    public function testChunkedBody(): void
    {
        $url = $this->serve("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
        $response = (new StreamTransport())->send(new Request('GET', $url, [], null, 5));
        self::assertSame('hello world', $response->body);
    }

    public function testAnAbortEndsAWaitAtOnce(): void
    {
        $url = $this->serve(null); // accepts, never answers
        $until = microtime(true) + 0.3;
        $began = microtime(true);
        try {
            (new StreamTransport())->send(new Request('POST', $url, [], '{}', 20, static fn (): bool => microtime(true) > $until));
            self::fail('no exception');
        } catch (AbortedException) {
        }
        self::assertLessThan(2.0, microtime(true) - $began);
    }

    public function testATimeout(): void
    {
        $url = $this->serve(null);
        $this->expectException(TransportException::class);
        $this->expectExceptionMessage('no answer within');
        (new StreamTransport())->send(new Request('GET', $url, [], null, 0.3));
    }

    public function testARefusedConnection(): void
    {
        $server = stream_socket_server('tcp://127.0.0.1:0');
        self::assertNotFalse($server);
        $address = stream_socket_get_name($server, false);
        fclose($server);
        $this->expectException(TransportException::class);
        (new StreamTransport())->send(new Request('GET', 'http://' . $address . '/', [], null, 2));
    }

    /** Serves $answer (null: nothing) to one request from a forked child; returns the base URL. */
    private function serve(?string $answer): string
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        self::assertNotFalse($server, $errstr);
        $address = stream_socket_get_name($server, false);
        $pid = pcntl_fork();
        if ($pid === 0) {
            $conn = stream_socket_accept($server, 10);
            if ($conn !== false) {
                $request = '';
                while (!str_contains($request, "\r\n\r\n") && ($chunk = fread($conn, 8192)) !== false && $chunk !== '') {
                    $request .= $chunk;
                }
                if ($answer !== null) {
                    fwrite($conn, $answer);
                    fclose($conn);
                } else {
                    sleep(30);
                }
            }
            Process::vanish();
        }
        fclose($server);
        $this->children[] = $pid;
        return 'http://' . $address;
    }
}
