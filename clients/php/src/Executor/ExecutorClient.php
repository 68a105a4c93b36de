<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Http\Endpoint;
use Opsgate\Http\Response;
use Opsgate\Http\StreamTransport;
use Opsgate\Http\Transport;
use Opsgate\Json;
use Opsgate\ProblemException;
use Opsgate\Run;

/**
 * The three executor endpoints (contract section 9), with an executor
 * token (oge_...). {@see Runner} is the whole loop built on it; use this
 * class directly only to build a loop of your own.
 */
final class ExecutorClient
{
    private readonly Endpoint $endpoint;

    public function __construct(
        string $baseUrl,
        #[\SensitiveParameter] string $token,
        Transport $transport = new StreamTransport(),
        private readonly float $timeout = 30.0,
    ) {
        $this->endpoint = new Endpoint($baseUrl, $token, $transport);
    }

    /**
     * Claims up to $max runs, waiting up to $wait seconds for one when none
     * is queued (a long poll; an empty list after the wait).
     *
     * @param \Closure(): bool|null $abort checked while waiting: true abandons the poll
     *        ({@see \Opsgate\Http\AbortedException})
     * @return list<Claim>
     */
    public function claim(int $max = 1, float $wait = 0.0, ?\Closure $abort = null): array
    {
        $waitMs = (int) round($wait * 1000);
        $response = $this->endpoint->send(
            'POST',
            '/api/v1/executor/claims',
            ['max' => $max, 'wait_ms' => $waitMs],
            timeout: $this->timeout + $waitMs / 1000,
            abort: $abort,
        );
        return array_map(Claim::fromArray(...), Json::list($this->ok($response), 'items'));
    }

    /**
     * Extends the lease of $runId at $epoch; returns its new expiry.
     *
     * @throws ProblemException 409 lease_lost when the run was cancelled, reaped, timed out or completed
     */
    public function heartbeat(string $runId, int $epoch): \DateTimeImmutable
    {
        $response = $this->endpoint->send('POST', '/api/v1/executor/runs/' . rawurlencode($runId) . '/heartbeat', ['epoch' => $epoch], timeout: $this->timeout);
        return Json::time($this->ok($response), 'expires_at');
    }

    /**
     * Reports how $runId ended. Repeating the same completion is safe: it is
     * answered again and recorded once.
     *
     * @throws ProblemException 409 lease_lost for a stale epoch, 422 for a reason outside the catalog
     */
    public function complete(string $runId, int $epoch, Result $result): Run
    {
        $response = $this->endpoint->send('POST', '/api/v1/executor/runs/' . rawurlencode($runId) . '/complete', ['epoch' => $epoch] + $result->toArray(), timeout: $this->timeout);
        return Run::fromArray($this->ok($response));
    }

    /** @return array<string, mixed> */
    private function ok(Response $response): array
    {
        if ($response->isProblem() || $response->status < 200 || $response->status > 299) {
            throw ProblemException::fromResponse($response);
        }
        return $response->json();
    }
}
