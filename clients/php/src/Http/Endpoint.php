<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * An opsgate base URL with a bearer token: builds the requests of the
 * client and of the executor client (JSON bodies, the token, a
 * User-Agent) and hands them to the transport. Internal plumbing; use
 * {@see \Opsgate\Client} and {@see \Opsgate\Executor\ExecutorClient}.
 *
 * @internal
 */
final class Endpoint
{
    public const USER_AGENT = 'opsgate-php/1.0';

    public readonly string $baseUrl;

    public function __construct(
        string $baseUrl,
        #[\SensitiveParameter] private readonly string $token,
        private readonly Transport $transport = new StreamTransport(),
    ) {
        $baseUrl = rtrim($baseUrl, '/');
        if (!preg_match('#^https?://#i', $baseUrl)) {
            throw new \InvalidArgumentException(sprintf('the opsgate URL must start with http:// or https://, got %s', $baseUrl));
        }
        if ($token === '') {
            throw new \InvalidArgumentException('an opsgate token is required');
        }
        $this->baseUrl = $baseUrl;
    }

    /**
     * Sends one request; any status comes back as a Response.
     *
     * @param array<string, mixed>|object|null $json the body, encoded as JSON (null: none)
     * @param array<string, string> $headers extra headers
     */
    public function send(
        string $method,
        string $path,
        array|object|null $json = null,
        array $headers = [],
        float $timeout = 30.0,
        ?\Closure $abort = null,
    ): Response {
        $headers = [
            'Authorization' => 'Bearer ' . $this->token,
            'Accept' => 'application/json, application/problem+json',
            'User-Agent' => self::USER_AGENT . ' PHP/' . PHP_VERSION,
        ] + array_filter($headers, static fn (?string $v): bool => $v !== null && $v !== '');
        $body = null;
        if ($json !== null) {
            $body = self::encode($json);
            $headers['Content-Type'] = 'application/json';
        }
        return $this->transport->send(new Request($method, $this->baseUrl . $path, $headers, $body, $timeout, $abort));
    }

    /**
     * JSON the way opsgate reads it: slashes and Unicode as they are, an
     * empty array as an empty object.
     *
     * @param array<mixed>|object $value
     */
    public static function encode(array|object $value): string
    {
        if ($value === []) {
            return '{}';
        }
        return json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_INVALID_UTF8_SUBSTITUTE);
    }
}
