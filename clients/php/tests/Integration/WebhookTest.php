<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

use Opsgate\Webhooks\Verifier;

/**
 * opsgate's own webhook messages verify with the PHP verifier (and a
 * forged one does not), through a `php -S` receiver.
 */
final class WebhookTest extends ProcessTestCase
{
    public function testOpsgateMessagesVerify(): void
    {
        $dir = self::temp('webhooks');
        @mkdir($dir);
        $probe = stream_socket_server('tcp://127.0.0.1:0');
        self::assertNotFalse($probe);
        $address = (string) stream_socket_get_name($probe, false);
        fclose($probe);
        $receiver = $this->spawn([PHP_BINARY, '-S', $address, 'tests/fixtures/webhook-receiver.php'], ['OPSGATE_TEST_DIR' => $dir], 'receiver');
        $this->waitUntil(static function () use ($address): bool {
            $socket = @stream_socket_client('tcp://' . $address, $errno, $errstr, 0.2);
            if ($socket === false) {
                return false;
            }
            fclose($socket);
            return true;
        }, 'the receiver to listen; its log: ' . $this->stderr($receiver));

        $hook = $this->admin('POST', '/api/v1/admin/webhooks', ['workspace_id' => self::env('OPSGATE_WEBHOOK_WORKSPACE'), 'url' => 'http://' . $address . '/hook']);
        self::assertStringStartsWith('whsec_', $hook['secret']);
        file_put_contents($dir . '/secret', $hook['secret']);
        $this->admin('POST', '/api/v1/admin/webhooks/' . $hook['id'] . '/ping');

        $received = static fn (): array => array_map(
            static fn (string $line): array => json_decode($line, true),
            file(is_file($dir . '/received.jsonl') ? $dir . '/received.jsonl' : '/dev/null', FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [],
        );
        $this->waitUntil(static fn (): bool => $received() !== [], 'the ping to arrive; receiver log: ' . $this->stderr($receiver));
        $first = $received()[0];
        self::assertTrue($first['ok'], json_encode($first) ?: '');
        self::assertSame('ping', $first['type']);
        self::assertNotEmpty($first['id']);

        // A forged message (signed with another secret) is refused.
        $body = '{"type":"run.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{}}';
        $now = time();
        $forged = Verifier::sign('whsec_' . base64_encode(random_bytes(32)), 'msg_forged', $now, $body);
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/json\r\nwebhook-id: msg_forged\r\nwebhook-timestamp: {$now}\r\nwebhook-signature: {$forged}\r\n",
            'content' => $body,
            'ignore_errors' => true,
        ]]);
        file_get_contents('http://' . $address . '/hook', false, $context);
        self::assertStringContainsString(' 401 ', $http_response_header[0] ?? '');
        $last = $received()[count($received()) - 1];
        self::assertFalse($last['ok']);
        self::assertSame('signature', $last['failure']);
    }
}
