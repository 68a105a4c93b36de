<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * One HTTP answer: its status, headers (names in lower case) and body.
 */
final readonly class Response
{
    /**
     * @param array<string, string> $headers lower-case header name => value
     *        (repeated headers joined with ", ")
     */
    public function __construct(
        public int $status,
        public array $headers,
        public string $body,
    ) {
    }

    /** The value of header $name (case-insensitive), or null. */
    public function header(string $name): ?string
    {
        return $this->headers[strtolower($name)] ?? null;
    }

    /** Whether the body is an application/problem+json problem. */
    public function isProblem(): bool
    {
        return str_starts_with(strtolower($this->header('content-type') ?? ''), 'application/problem+json');
    }

    /**
     * The seconds Retry-After asks to wait (delay-seconds or an HTTP date),
     * or null without a usable header.
     */
    public function retryAfter(?int $now = null): ?float
    {
        $value = trim($this->header('retry-after') ?? '');
        if ($value === '') {
            return null;
        }
        if (ctype_digit($value)) {
            return (float) $value;
        }
        $at = strtotime($value);
        if ($at === false) {
            return null;
        }
        return (float) max(0, $at - ($now ?? time()));
    }

    /**
     * The body decoded as a JSON object.
     *
     * @return array<string, mixed>
     * @throws \Opsgate\UnexpectedResponseException when it is not one
     */
    public function json(): array
    {
        try {
            $data = json_decode($this->body, true, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \Opsgate\UnexpectedResponseException(
                sprintf('opsgate answered %d with a body that is not JSON: %s', $this->status, substr($this->body, 0, 200)),
                0,
                $e,
            );
        }
        if (!is_array($data)) {
            throw new \Opsgate\UnexpectedResponseException(sprintf('opsgate answered %d with JSON that is not an object', $this->status));
        }
        return $data;
    }
}
