<?php

declare(strict_types=1);

namespace Opsgate;

use Opsgate\Http\Endpoint;
use Opsgate\Http\Response;
use Opsgate\Http\StreamTransport;
use Opsgate\Http\Transport;
use Opsgate\Http\TransportException;

/**
 * The opsgate API for operators and for the platform acting on their
 * behalf: starts (contract sections 3 and 5) and reads of runs (7, 14).
 *
 *     $opsgate = new Opsgate\Client('https://opsgate.example', getenv('OPSGATE_TOKEN'));
 *     $result = $opsgate->syncInventory($connectionId);
 *     echo $result->outcome->value, ': ', $result->message->title, PHP_EOL;
 *     $run = $opsgate->waitForRun($result->runId(), timeout: 60);
 *
 * An integration token (ogi_...) acts for one operator per request:
 *
 *     $platform = new Opsgate\Client($url, $integrationToken);
 *     $platform->onBehalfOf($user->opsgate_id)->verifyTenant($tenantId);
 *
 * Every start carries an Idempotency-Key (generated when not given);
 * 429 and 503 answers are retried after their Retry-After as
 * {@see RetryPolicy} says. An answer that is a problem throws
 * {@see ProblemException}; a start answered scope_busy (409) or blocked
 * (422) is not a problem but a {@see StartResult}.
 */
final class Client
{
    /** The header a start's idempotency key travels in. */
    public const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';
    /** The header naming the user an integration token acts for (contract section 13). */
    public const ON_BEHALF_OF_HEADER = 'Opsgate-On-Behalf-Of';
    /** The longest wait_ms opsgate honours. */
    public const MAX_WAIT_MS = 30_000;

    private readonly Endpoint $endpoint;

    /**
     * @param string $baseUrl e.g. https://opsgate.example (no /api/v1)
     * @param string $token a user's token, or an integration's (ogi_...) with $onBehalfOf
     * @param string|null $onBehalfOf with an integration token: the opsgate user id the requests act for
     * @param float $timeout seconds a request may take (a wait_ms comes on top)
     */
    public function __construct(
        string $baseUrl,
        #[\SensitiveParameter] string $token,
        private ?string $onBehalfOf = null,
        private readonly RetryPolicy $retry = new RetryPolicy(),
        Transport $transport = new StreamTransport(),
        private readonly float $timeout = 30.0,
    ) {
        $this->endpoint = new Endpoint($baseUrl, $token, $transport);
    }

    /**
     * The same client acting for another user: for an integration token,
     * one client serves every operator of the platform.
     */
    public function onBehalfOf(?string $userId): self
    {
        $copy = clone $this;
        $copy->onBehalfOf = $userId;
        return $copy;
    }

    // Starts (contract section 3). Each answers a StartResult.

    /** Tenant verification (provider.connection.check, capability tenant.verify). */
    public function verifyTenant(string $tenantId, ?string $connectionId = null, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/tenants/' . self::id($tenantId) . '/verify', self::connection($connectionId), $options);
    }

    /** Directory groups sync (entra_group_sync). */
    public function syncDirectoryGroups(string $tenantId, ?string $connectionId = null, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/tenants/' . self::id($tenantId) . '/directory/groups/sync', self::connection($connectionId), $options);
    }

    /** Role definitions sync (directory_role_definitions.sync). */
    public function syncRoleDefinitions(string $tenantId, ?string $connectionId = null, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/tenants/' . self::id($tenantId) . '/directory/role-definitions/sync', self::connection($connectionId), $options);
    }

    /**
     * Restore execute: destructive, so $confirm must be true (else 422
     * confirmation_required), and $acknowledgeWarnings where the preview warned.
     */
    public function executeRestore(
        string $tenantId,
        string $restoreRunId,
        bool $confirm,
        bool $acknowledgeWarnings = false,
        ?string $connectionId = null,
        ?StartOptions $options = null,
    ): StartResult {
        $body = self::connection($connectionId) + ['confirm' => $confirm];
        if ($acknowledgeWarnings) {
            $body['acknowledge_warnings'] = true;
        }
        return $this->start('/api/v1/tenants/' . self::id($tenantId) . '/restore-runs/' . self::id($restoreRunId) . '/execute', $body, $options);
    }

    /** Connection check (provider.connection.check). */
    public function checkConnection(string $connectionId, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/provider-connections/' . self::id($connectionId) . '/check', [], $options);
    }

    /** Inventory sync (inventory.sync). */
    public function syncInventory(string $connectionId, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/provider-connections/' . self::id($connectionId) . '/inventory-sync', [], $options);
    }

    /** Compliance snapshot (compliance.snapshot). */
    public function snapshotCompliance(string $connectionId, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/provider-connections/' . self::id($connectionId) . '/compliance-snapshot', [], $options);
    }

    /** Onboarding verification. */
    public function verifyOnboarding(string $sessionId, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/onboarding-sessions/' . self::id($sessionId) . '/verify', [], $options);
    }

    /**
     * Onboarding bootstrap: the first of $operations goes through the gate,
     * the rest stay pending on the session.
     *
     * @param list<string> $operations operation types
     */
    public function bootstrapOnboarding(string $sessionId, array $operations, ?StartOptions $options = null): StartResult
    {
        return $this->start('/api/v1/onboarding-sessions/' . self::id($sessionId) . '/bootstrap', ['operations' => array_values($operations)], $options);
    }

    /**
     * Starts a terminal run's operation again through the gate (a queued or
     * running one: ProblemException 409 run_active).
     */
    public function rerun(string $runId, ?StartOptions $options = null, bool $confirm = false, bool $acknowledgeWarnings = false): StartResult
    {
        $body = array_filter(['confirm' => $confirm, 'acknowledge_warnings' => $acknowledgeWarnings]);
        return $this->start('/api/v1/operations/' . self::id($runId) . '/rerun', $body, $options);
    }

    /**
     * Any start endpoint: POST $path with $body (plus the options' limits).
     *
     * @param array<string, mixed> $body
     * @throws ProblemException for a problem answer (401, 403, 404, 422 with a code, 429/503 past the retries)
     */
    public function start(string $path, array $body = [], ?StartOptions $options = null): StartResult
    {
        $options ??= new StartOptions();
        $key = $options->idempotencyKey ?? self::newIdempotencyKey();
        if (($limits = $options->limits()) !== null) {
            $body['limits'] = $limits;
        }
        if ($options->dryRun) {
            $path .= (str_contains($path, '?') ? '&' : '?') . 'dry_run=true';
        }
        $response = $this->exchange('POST', $path, $body === [] ? null : $body, [
            self::IDEMPOTENCY_KEY_HEADER => $key,
            'traceparent' => $options->traceparent,
            'tracestate' => $options->tracestate,
        ], repeatable: true);
        if ($response->isProblem() || !in_array($response->status, [200, 202, 409, 422], true)) {
            throw ProblemException::fromResponse($response);
        }
        return StartResult::fromResponse($response, $key);
    }

    // Reads.

    /**
     * Reads run $runId with its message, next steps and counts. With
     * $waitMs (up to 30000), a queued or running run is answered once it
     * ends or the wait runs out, whichever comes first.
     */
    public function operation(string $runId, int $waitMs = 0): Run
    {
        if ($waitMs < 0 || $waitMs > self::MAX_WAIT_MS) {
            throw new \InvalidArgumentException('wait_ms is 0..30000');
        }
        $path = '/api/v1/operations/' . self::id($runId) . ($waitMs > 0 ? '?wait_ms=' . $waitMs : '');
        return Run::fromArray($this->json('GET', $path, timeout: $this->timeout + $waitMs / 1000));
    }

    /**
     * Waits until run $runId has ended (or $timeout seconds have passed)
     * with long polls, and returns it as it is then: check
     * `$run->status->isTerminal()` for which.
     */
    public function waitForRun(string $runId, float $timeout = 60.0): Run
    {
        $deadline = microtime(true) + $timeout;
        while (true) {
            $left = (int) floor(($deadline - microtime(true)) * 1000);
            $run = $this->operation($runId, max(0, min(self::MAX_WAIT_MS, $left)));
            if ($run->status->isTerminal() || microtime(true) >= $deadline) {
                return $run;
            }
        }
    }

    /** Cancels a queued or running run (409 when it is not active). */
    public function cancel(string $runId): Run
    {
        return Run::fromArray($this->json('POST', '/api/v1/operations/' . self::id($runId) . '/cancel', repeatable: false));
    }

    /**
     * The run's event history, oldest first, as opsgate sends it (each with
     * type, data and metadata: actor, via, request id, ...).
     *
     * @return list<array<string, mixed>>
     */
    public function events(string $runId): array
    {
        return Json::list($this->json('GET', '/api/v1/operations/' . self::id($runId) . '/events'), 'items');
    }

    /**
     * The caller's tenants with its role and capabilities on each.
     *
     * @return list<array<string, mixed>>
     */
    public function tenants(): array
    {
        return Json::list($this->json('GET', '/api/v1/tenants'), 'items');
    }

    /** A random idempotency key (a UUID v4). */
    public static function newIdempotencyKey(): string
    {
        $b = random_bytes(16);
        $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
        $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);
        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
    }

    /**
     * @return array<string, mixed>
     */
    private function json(string $method, string $path, ?float $timeout = null, bool $repeatable = true): array
    {
        $response = $this->exchange($method, $path, null, [], $repeatable, $timeout);
        if ($response->isProblem() || $response->status < 200 || $response->status > 299) {
            throw ProblemException::fromResponse($response);
        }
        return $response->json();
    }

    /**
     * Sends a request, waiting and sending it again as the retry policy says.
     *
     * @param array<string, mixed>|null $body
     * @param array<string, string|null> $headers
     * @param bool $repeatable whether sending it twice is harmless (for retries after no answer)
     */
    private function exchange(string $method, string $path, ?array $body, array $headers, bool $repeatable, ?float $timeout = null): Response
    {
        $headers[self::ON_BEHALF_OF_HEADER] = $this->onBehalfOf;
        $headers = array_filter($headers, static fn (?string $v): bool => $v !== null && $v !== '');
        $backoff = $this->retry->defaultWait;
        for ($attempt = 1; ; $attempt++) {
            try {
                $response = $this->endpoint->send($method, $path, $body, $headers, $timeout ?? $this->timeout);
            } catch (TransportException $e) {
                if (!$repeatable || $attempt > $this->retry->maxRetries) {
                    throw $e;
                }
                $this->wait($attempt, $backoff, $e);
                $backoff *= 2;
                continue;
            }
            if ($response->status !== 429 && $response->status !== 503) {
                return $response;
            }
            $problem = ProblemException::fromResponse($response);
            $wait = $response->retryAfter() ?? $this->retry->defaultWait;
            if ($attempt > $this->retry->maxRetries || $wait > $this->retry->maxWait) {
                throw $problem;
            }
            $this->wait($attempt, $wait, $problem);
        }
    }

    private function wait(int $attempt, float $seconds, ProblemException|TransportException $why): void
    {
        if ($this->retry->onRetry !== null) {
            ($this->retry->onRetry)($attempt, $seconds, $why);
        }
        $this->retry->pause($seconds);
    }

    /** @return array<string, string> */
    private static function connection(?string $connectionId): array
    {
        return $connectionId === null || $connectionId === '' ? [] : ['provider_connection_id' => $connectionId];
    }

    private static function id(string $id): string
    {
        if ($id === '') {
            throw new \InvalidArgumentException('an id is required');
        }
        return rawurlencode($id);
    }
}
