<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * One HTTP request as a transport sends it.
 */
final readonly class Request
{
    /**
     * @param array<string, string> $headers header name => value
     * @param float $timeout seconds the whole exchange may take
     * @param \Closure(): bool|null $abort checked while waiting for the answer;
     *        true abandons the request with an {@see AbortedException}
     */
    public function __construct(
        public string $method,
        public string $url,
        public array $headers = [],
        public ?string $body = null,
        public float $timeout = 30.0,
        public ?\Closure $abort = null,
    ) {
    }

    /** The value of header $name (case-insensitive), or null. */
    public function header(string $name): ?string
    {
        foreach ($this->headers as $key => $value) {
            if (strcasecmp($key, $name) === 0) {
                return $value;
            }
        }
        return null;
    }
}
