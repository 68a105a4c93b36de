<?php

declare(strict_types=1);

namespace Opsgate\Tests\Unit;

use Opsgate\Client;
use Opsgate\Http\TransportException;
use Opsgate\Outcome;
use Opsgate\ProblemException;
use Opsgate\RetryPolicy;
use Opsgate\RunStatus;
use Opsgate\StartOptions;
use Opsgate\Tests\Support\FakeTransport;
use Opsgate\Tone;
use PHPUnit\Framework\TestCase;

/**
 * The client's requests and its handling of answers, against a scripted
 * transport (the integration tests do the same against a real opsgate).
 */
final class ClientTest extends TestCase
{
    /** @var list<float> */
    private array $slept = [];
    /** @var list<array{int, float, string}> */
    private array $retries = [];

    public function testAStartCarriesAGeneratedIdempotencyKeyAndReadsTheResult(): void
    {
        $transport = new FakeTransport([FakeTransport::json(202, FakeTransport::accepted())]);
        $result = $this->client($transport)->syncInventory('01J0000000000000000000000C');

        $request = $transport->sent[0];
        self::assertSame('POST', $request->method);
        self::assertSame('https://opsgate.test/api/v1/provider-connections/01J0000000000000000000000C/inventory-sync', $request->url);
        self::assertSame('Bearer ogu_token', $request->header('Authorization'));
        self::assertMatchesRegularExpression('/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/', (string) $request->header('Idempotency-Key'));
        self::assertSame($request->header('Idempotency-Key'), $result->idempotencyKey);
        self::assertNull($request->body, 'a start without options sends no body');
        self::assertNull($request->header('Opsgate-On-Behalf-Of'));

        self::assertSame(Outcome::Accepted, $result->outcome);
        self::assertSame(202, $result->httpStatus);
        self::assertSame(RunStatus::Queued, $result->run?->status);
        self::assertSame('graph', $result->run?->providerConnection?->provider);
        self::assertSame('2026-03-01 10:00:00.123456', $result->run?->createdAt->format('Y-m-d H:i:s.u'));
        self::assertSame(Tone::Success, $result->message->tone);
        self::assertNull($result->reason);
    }

    public function testOptionsTravelAsHeadersAndBody(): void
    {
        $transport = new FakeTransport([FakeTransport::json(202, FakeTransport::accepted())]);
        $traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
        $this->client($transport)->onBehalfOf('01J0000000000000000000000U')->verifyTenant('01J0000000000000000000000T', '01J0000000000000000000000C', new StartOptions(
            idempotencyKey: 'click-42',
            traceparent: $traceparent,
            tracestate: 'vendor=1',
            maxDurationSeconds: 60,
            dryRun: true,
        ));
        $request = $transport->sent[0];
        self::assertSame('https://opsgate.test/api/v1/tenants/01J0000000000000000000000T/verify?dry_run=true', $request->url);
        self::assertSame('click-42', $request->header('idempotency-key'));
        self::assertSame($traceparent, $request->header('traceparent'));
        self::assertSame('vendor=1', $request->header('tracestate'));
        self::assertSame('01J0000000000000000000000U', $request->header('Opsgate-On-Behalf-Of'));
        self::assertSame('application/json', $request->header('content-type'));
        self::assertSame(['provider_connection_id' => '01J0000000000000000000000C', 'limits' => ['max_duration_s' => 60]], json_decode((string) $request->body, true));
    }

    public function testScopeBusyAndBlockedAreResultsNotProblems(): void
    {
        $busy = ['outcome' => 'scope_busy', 'run' => FakeTransport::run(status: 'running'), 'reason' => ['code' => 'scope.busy', 'class' => 'scope_busy', 'message' => 'busy'],
            'next_steps' => [['label' => 'Open the running operation', 'action' => 'open_run', 'href' => '/api/v1/operations/01J00000000000000000000000']],
            'message' => ['title' => 'Inventory sync not started', 'body' => 'Another operation runs', 'tone' => 'warning']];
        $transport = new FakeTransport([FakeTransport::json(409, $busy)]);
        $result = $this->client($transport)->syncInventory('01J0000000000000000000000C');
        self::assertSame(Outcome::ScopeBusy, $result->outcome);
        self::assertSame(409, $result->httpStatus);
        self::assertSame('open_run', $result->nextSteps[0]->action);
        self::assertSame(Tone::Warning, $result->message->tone);
    }

    public function testAProblemThrowsWithItsCode(): void
    {
        $transport = new FakeTransport([FakeTransport::problem(422, 'idempotency_key_reused')]);
        try {
            $this->client($transport)->syncInventory('01J0000000000000000000000C', new StartOptions(idempotencyKey: 'k'));
            self::fail('no exception');
        } catch (ProblemException $e) {
            self::assertSame(422, $e->status);
            self::assertSame('idempotency_key_reused', $e->problemCode);
            self::assertSame('detail of idempotency_key_reused', $e->detail);
            self::assertTrue($e->is('idempotency_key_reused'));
            self::assertFalse($e->isTemporary());
        }
        self::assertCount(1, $transport->sent, 'a refusal is not retried');
    }

    public function testRetryAfterIsHonouredOn503And429WithTheSameKey(): void
    {
        $transport = new FakeTransport([
            FakeTransport::problem(503, 'database_unavailable', ['Retry-After' => '2']),
            FakeTransport::problem(429, 'rate_limited', ['Retry-After' => '1']),
            FakeTransport::json(202, FakeTransport::accepted()),
        ]);
        $result = $this->client($transport)->syncInventory('01J0000000000000000000000C');
        self::assertSame(Outcome::Accepted, $result->outcome);
        self::assertSame([2.0, 1.0], $this->slept);
        self::assertSame([[1, 2.0, 'database_unavailable'], [2, 1.0, 'rate_limited']], $this->retries);
        self::assertCount(3, $transport->sent);
        $keys = array_unique(array_map(static fn ($r) => $r->header('Idempotency-Key'), $transport->sent));
        self::assertCount(1, $keys, 'every attempt carries the same Idempotency-Key');
    }

    public function testARetryAfterLongerThanTheMaxWaitIsNotWaitedFor(): void
    {
        $transport = new FakeTransport([FakeTransport::problem(429, 'rate_limited', ['Retry-After' => '120'])]);
        try {
            $this->client($transport, maxWait: 10)->syncInventory('01J0000000000000000000000C');
            self::fail('no exception');
        } catch (ProblemException $e) {
            self::assertSame(429, $e->status);
            self::assertSame(120.0, $e->retryAfter);
        }
        self::assertSame([], $this->slept);
    }

    public function testRetriesAreBounded(): void
    {
        $transport = new FakeTransport(array_fill(0, 3, FakeTransport::problem(503, 'overloaded', ['Retry-After' => '1'])));
        $this->expectException(ProblemException::class);
        try {
            $this->client($transport, maxRetries: 2)->syncInventory('01J0000000000000000000000C');
        } finally {
            self::assertCount(3, $transport->sent);
            self::assertSame([1.0, 1.0], $this->slept);
        }
    }

    public function testRetryAfterAsAnHttpDate(): void
    {
        $at = gmdate('D, d M Y H:i:s \G\M\T', time() + 3);
        $transport = new FakeTransport([FakeTransport::problem(503, 'overloaded', ['Retry-After' => $at]), FakeTransport::json(202, FakeTransport::accepted())]);
        $this->client($transport)->syncInventory('01J0000000000000000000000C');
        self::assertCount(1, $this->slept);
        self::assertGreaterThanOrEqual(2.0, $this->slept[0]);
        self::assertLessThanOrEqual(3.0, $this->slept[0]);
    }

    public function testNetworkErrorsAreRetriedOnlyWhereRepeatingIsHarmless(): void
    {
        $transport = new FakeTransport([new TransportException('refused'), FakeTransport::json(202, FakeTransport::accepted())]);
        $this->client($transport)->syncInventory('01J0000000000000000000000C');
        self::assertCount(2, $transport->sent);
        self::assertSame($transport->sent[0]->header('Idempotency-Key'), $transport->sent[1]->header('Idempotency-Key'));

        $transport = new FakeTransport([new TransportException('reset')]);
        $this->expectException(TransportException::class);
        $this->client($transport)->cancel('01J00000000000000000000000');
    }

    public function testReadsWaitForTheRun(): void
    {
        $detail = FakeTransport::run(status: 'succeeded') + [
            'message' => ['title' => 'Inventory sync succeeded', 'body' => '', 'tone' => 'success'],
            'next_steps' => [], 'deduped_count' => 2, 'scope_busy_count' => 0, 'summary' => ['devices' => 3],
            'initiated_by' => ['user_id' => 'u1', 'name' => 'Ada', 'via' => ['id' => 'i1', 'name' => 'Platform'], 'label' => 'Ada via Platform'],
        ];
        $transport = new FakeTransport([FakeTransport::json(200, FakeTransport::run(status: 'running')), FakeTransport::json(200, $detail)]);
        $run = $this->client($transport)->waitForRun('01J00000000000000000000000', timeout: 45);
        self::assertSame(RunStatus::Succeeded, $run->status);
        self::assertSame(2, $run->dedupedCount);
        self::assertSame(['devices' => 3], $run->summary);
        self::assertSame('Ada via Platform', $run->initiatedBy?->label);
        self::assertSame('i1', $run->initiatedBy?->viaIntegrationId);
        self::assertMatchesRegularExpression('#/api/v1/operations/01J00000000000000000000000\?wait_ms=(30000|[12]\d{4})$#', $transport->sent[0]->url);
        self::assertGreaterThan(30.0, $transport->sent[0]->timeout, 'the timeout covers the wait');
    }

    public function testAnAnswerThatIsNotAProblemStillThrows(): void
    {
        $transport = new FakeTransport([new \Opsgate\Http\Response(502, ['content-type' => 'text/html'], '<html>Bad gateway</html>')]);
        try {
            $this->client($transport)->operation('01J00000000000000000000000');
            self::fail('no exception');
        } catch (ProblemException $e) {
            self::assertSame('http_502', $e->problemCode);
        }
    }

    private function client(FakeTransport $transport, float $maxWait = 30.0, int $maxRetries = 3): Client
    {
        return new Client('https://opsgate.test/', 'ogu_token', retry: new RetryPolicy(
            maxRetries: $maxRetries,
            maxWait: $maxWait,
            sleep: function (float $s): void {
                $this->slept[] = $s;
            },
            onRetry: function (int $attempt, float $wait, \Throwable $why): void {
                $this->retries[] = [$attempt, $wait, $why instanceof ProblemException ? $why->problemCode : $why->getMessage()];
            },
        ), transport: $transport);
    }
}
