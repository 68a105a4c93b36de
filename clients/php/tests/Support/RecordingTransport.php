<?php

declare(strict_types=1);

namespace Opsgate\Tests\Support;

use Opsgate\Http\Request;
use Opsgate\Http\Response;
use Opsgate\Http\StreamTransport;
use Opsgate\Http\Transport;

/**
 * The real transport, recording the requests this process sent (a
 * forked child's requests are recorded in the child's copy).
 */
final class RecordingTransport implements Transport
{
    /** @var list<string> "METHOD path" */
    public array $sent = [];

    public function __construct(private readonly Transport $inner = new StreamTransport())
    {
    }

    public function send(Request $request): Response
    {
        $this->sent[] = $request->method . ' ' . (string) parse_url($request->url, PHP_URL_PATH);
        return $this->inner->send($request);
    }

    /** @return list<string> */
    public function matching(string $suffix): array
    {
        return array_values(array_filter($this->sent, static fn (string $s): bool => str_ends_with($s, $suffix)));
    }
}
