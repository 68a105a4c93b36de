<?php

declare(strict_types=1);

namespace Opsgate\Tests\Support;

use Opsgate\Http\Request;
use Opsgate\Http\Response;
use Opsgate\Http\Transport;
use Opsgate\Http\TransportException;

/**
 * A transport that answers from a script and records what was sent.
 */
final class FakeTransport implements Transport
{
    /** @var list<Request> */
    public array $sent = [];

    /** @param list<Response|TransportException> $answers */
    public function __construct(private array $answers)
    {
    }

    public function send(Request $request): Response
    {
        $this->sent[] = $request;
        $answer = array_shift($this->answers) ?? throw new \LogicException('no answer scripted for ' . $request->method . ' ' . $request->url);
        if ($answer instanceof TransportException) {
            throw $answer;
        }
        return $answer;
    }

    /** @param array<string, mixed> $body */
    public static function json(int $status, array $body, array $headers = []): Response
    {
        return new Response($status, ['content-type' => 'application/json'] + array_change_key_case($headers), json_encode($body, JSON_THROW_ON_ERROR));
    }

    public static function problem(int $status, string $code, array $headers = []): Response
    {
        $body = ['type' => 'https://opsgate.dev/problems/' . $code, 'title' => 'Problem', 'status' => $status, 'detail' => 'detail of ' . $code, 'code' => $code];
        return new Response($status, ['content-type' => 'application/problem+json'] + array_change_key_case($headers), json_encode($body, JSON_THROW_ON_ERROR));
    }

    /** @return array<string, mixed> */
    public static function run(string $id = '01J00000000000000000000000', string $status = 'queued'): array
    {
        return [
            'id' => $id, 'tenant_id' => '01J0000000000000000000000T', 'type' => 'inventory.sync', 'canonical_type' => 'inventory.sync',
            'label' => 'Inventory sync', 'status' => $status, 'target' => null,
            'provider_connection' => ['id' => '01J0000000000000000000000C', 'display_name' => 'Graph', 'provider' => 'graph'],
            'initiator_id' => '01J0000000000000000000000U', 'surface' => 'inventory_sync',
            'created_at' => '2026-03-01T10:00:00.123456789Z', 'started_at' => null, 'finished_at' => null,
            'reason' => null, 'deadlines' => ['claim_by' => '2026-03-01T10:15:00Z', 'finish_by' => null], 'rerun_of' => null,
            'links' => ['self' => '/api/v1/operations/' . $id],
        ];
    }

    /** @return array<string, mixed> */
    public static function accepted(): array
    {
        return [
            'outcome' => 'accepted', 'run' => self::run(), 'reason' => null, 'next_steps' => [],
            'message' => ['title' => 'Inventory sync accepted', 'body' => '', 'tone' => 'success'],
        ];
    }
}
