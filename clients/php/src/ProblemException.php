<?php

declare(strict_types=1);

namespace Opsgate;

use Opsgate\Http\Response;

/**
 * An answer opsgate gave as an RFC 9457/7807 problem
 * (application/problem+json): `{type, title, status, detail, code}`.
 *
 * The stable machine-readable code is {@see $problemCode} (Exception::$code
 * is PHP's own integer code and cannot be redeclared as a string).
 *
 *     try {
 *         $client->syncInventory($connectionId);
 *     } catch (ProblemException $e) {
 *         if ($e->is('forbidden')) { ... }
 *         error_log("{$e->status} {$e->problemCode}: {$e->detail}");
 *     }
 */
final class ProblemException extends \RuntimeException implements OpsgateException
{
    /**
     * @param array<string, mixed> $body the problem as sent, unknown members included
     * @param float|null $retryAfter seconds the Retry-After header asked to wait (429, 503), if any
     */
    public function __construct(
        public readonly int $status,
        public readonly string $problemCode,
        public readonly string $detail,
        public readonly string $title = '',
        public readonly string $type = 'about:blank',
        public readonly ?float $retryAfter = null,
        public readonly array $body = [],
        ?\Throwable $previous = null,
    ) {
        parent::__construct(sprintf('opsgate: %d %s: %s', $status, $problemCode, $detail), 0, $previous);
    }

    /** Builds the exception from an HTTP answer that is not a success. */
    public static function fromResponse(Response $response): self
    {
        $body = json_decode($response->body, true);
        if (!is_array($body)) {
            $body = [];
        }
        $detail = is_string($body['detail'] ?? null) ? $body['detail'] : trim(substr($response->body, 0, 500));
        return new self(
            status: $response->status,
            problemCode: is_string($body['code'] ?? null) ? $body['code'] : 'http_' . $response->status,
            detail: $detail,
            title: is_string($body['title'] ?? null) ? $body['title'] : '',
            type: is_string($body['type'] ?? null) ? $body['type'] : 'about:blank',
            retryAfter: $response->retryAfter(),
            body: $body,
        );
    }

    /** Whether the problem has the given stable code (`lease_lost`, `forbidden`, ...). */
    public function is(string $code): bool
    {
        return $this->problemCode === $code;
    }

    /**
     * Whether the same request may succeed later: 5xx (the database away,
     * a timeout, overload) and 429 (rate limited). A refusal (other 4xx)
     * will not mend by itself.
     */
    public function isTemporary(): bool
    {
        return $this->status >= 500 || $this->status === 429;
    }

    /** 409 lease_lost: the executor's lease on a run is gone; stop working on it. */
    public function isLeaseLost(): bool
    {
        return $this->problemCode === 'lease_lost';
    }
}
