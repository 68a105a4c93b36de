<?php

declare(strict_types=1);

namespace Opsgate\Tests\Integration;

use Opsgate\Client;
use Opsgate\Outcome;
use Opsgate\ProblemException;
use Opsgate\RetryPolicy;
use Opsgate\RunStatus;
use Opsgate\StartOptions;
use Opsgate\Tone;

/**
 * Starts and reads through the client, against a real opsgate.
 */
final class StartsTest extends IntegrationTestCase
{
    public function testAcceptedThenDedupedThenReplayedThenScopeBusy(): void
    {
        $client = $this->operator();
        $conn = self::env('OPSGATE_CONN_DEDUPE');

        $first = $client->syncInventory($conn);
        self::assertSame(Outcome::Accepted, $first->outcome);
        self::assertSame(202, $first->httpStatus);
        self::assertNull($first->reason);
        self::assertSame(Tone::Success, $first->message->tone);
        self::assertNotSame('', $first->message->title);
        self::assertSame(RunStatus::Queued, $first->run?->status);
        self::assertSame('inventory.sync', $first->run?->canonicalType);
        self::assertSame($conn, $first->run?->providerConnection?->id, 'the connection is pinned into the run');
        self::assertSame(self::env('OPSGATE_OPERATOR_ID'), $first->run?->initiatorId);
        self::assertNotNull($first->run?->deadlines?->claimBy);

        // Another click on the same button: the same scope, the same run.
        $second = $client->syncInventory($conn);
        self::assertSame(Outcome::Deduped, $second->outcome);
        self::assertSame(200, $second->httpStatus);
        self::assertSame($first->runId(), $second->runId());
        self::assertNotNull($second->reason);
        self::assertNotSame([], $second->nextSteps);
        self::assertSame(Tone::Info, $second->message->tone);
        self::assertNotSame($first->idempotencyKey, $second->idempotencyKey, 'each start gets a key of its own');

        // The same request again (a retry, a double submit): the first answer.
        $replay = $client->syncInventory($conn, new StartOptions(idempotencyKey: $first->idempotencyKey));
        self::assertTrue($replay->replayed);
        self::assertSame(Outcome::Accepted, $replay->outcome);
        self::assertSame($first->runId(), $replay->runId());

        // Another operation on the same scope.
        $busy = $client->snapshotCompliance($conn);
        self::assertSame(Outcome::ScopeBusy, $busy->outcome);
        self::assertSame(409, $busy->httpStatus);
        self::assertSame($first->runId(), $busy->runId(), 'scope_busy points to the run holding the scope');
        self::assertSame(Tone::Warning, $busy->message->tone);
        self::assertNotSame([], $busy->nextSteps);

        $run = $client->operation((string) $first->runId());
        self::assertSame(RunStatus::Queued, $run->status);
        self::assertSame(1, $run->dedupedCount);
        self::assertSame(1, $run->scopeBusyCount);
        self::assertNotNull($run->message);

        // The same key with another body is refused as a problem.
        try {
            $client->syncInventory($conn, new StartOptions(idempotencyKey: $first->idempotencyKey, maxDurationSeconds: 60));
            self::fail('a reused key with another body was accepted');
        } catch (ProblemException $e) {
            self::assertSame(422, $e->status);
            self::assertSame('idempotency_key_reused', $e->problemCode);
            self::assertNotSame('', $e->detail);
        }
    }

    public function testABlockedStartSaysWhyAndWhatNext(): void
    {
        $result = $this->operator()->checkConnection(self::env('OPSGATE_CONN_BLOCKED'));
        self::assertSame(Outcome::Blocked, $result->outcome);
        self::assertSame(422, $result->httpStatus);
        self::assertSame('provider_connection.consent_missing', $result->reason?->code);
        self::assertSame('provider_consent', $result->reason?->class);
        self::assertNotSame('', $result->reason?->message);
        self::assertNotSame([], $result->nextSteps);
        foreach ($result->nextSteps as $step) {
            self::assertNotSame('', $step->label);
            self::assertNotSame('', $step->action);
        }
        self::assertSame(Tone::Danger, $result->message->tone);
        self::assertSame(RunStatus::Blocked, $result->run?->status, 'a blocked start leaves a durable record');
        self::assertSame('provider_connection.consent_missing', $result->run?->reason?->code);

        // A provider no executor runs: blocked before anything is queued.
        $none = $this->operator()->syncInventory(self::env('OPSGATE_CONN_NO_EXECUTOR'));
        self::assertSame(Outcome::Blocked, $none->outcome);
        self::assertSame('provider.no_executor', $none->reason?->code);
        self::assertSame('execution_unavailable', $none->reason?->class);
        self::assertNotSame([], $none->nextSteps);
    }

    public function testAnIntegrationStartsOnBehalfOfTheOperator(): void
    {
        $operatorId = self::env('OPSGATE_OPERATOR_ID');
        $platform = new Client(self::env('OPSGATE_URL'), self::env('OPSGATE_INTEGRATION_TOKEN'));

        try {
            $platform->syncInventory(self::env('OPSGATE_CONN_ON_BEHALF'));
            self::fail('an integration was let through without naming a user');
        } catch (ProblemException $e) {
            self::assertSame(400, $e->status);
            self::assertSame('on_behalf_of_required', $e->problemCode);
        }

        $result = $platform->onBehalfOf($operatorId)->syncInventory(self::env('OPSGATE_CONN_ON_BEHALF'));
        self::assertSame(Outcome::Accepted, $result->outcome);
        self::assertSame($operatorId, $result->run?->initiatorId, 'the operator is the initiator');

        $events = $this->operator()->events((string) $result->runId());
        self::assertNotSame([], $events);
        $accepted = $events[0];
        self::assertSame($operatorId, $accepted['metadata']['actor'] ?? null, 'the event\'s actor is the operator');
        self::assertSame('integration:' . self::env('OPSGATE_INTEGRATION_ID'), $accepted['metadata']['via'] ?? null);

        $run = $platform->onBehalfOf($operatorId)->operation((string) $result->runId());
        self::assertSame($operatorId, $run->initiatedBy?->userId);
        self::assertSame(self::env('OPSGATE_INTEGRATION_ID'), $run->initiatedBy?->viaIntegrationId);
        self::assertStringContainsString('via Platform', (string) $run->initiatedBy?->label);
    }

    public function testRetryAfterIsHonouredOnA429(): void
    {
        // The rate-limited process allows this token 1 request a second.
        $retries = [];
        $client = new Client(self::env('OPSGATE_RATE_LIMITED_URL'), self::env('OPSGATE_RATE_USER_TOKEN'), retry: new RetryPolicy(
            maxRetries: 3,
            maxWait: 5.0,
            onRetry: static function (int $attempt, float $wait, \Throwable $why) use (&$retries): void {
                $retries[] = [$attempt, $wait, $why instanceof ProblemException ? $why->status . ' ' . $why->problemCode : $why->getMessage()];
            },
        ));
        $conn = self::env('OPSGATE_CONN_RATE');

        $first = $client->syncInventory($conn);
        self::assertSame(Outcome::Accepted, $first->outcome);
        self::assertSame([], $retries);

        $began = microtime(true);
        $second = $client->syncInventory($conn); // over the rate: 429, Retry-After 1, then through
        self::assertSame(Outcome::Deduped, $second->outcome);
        self::assertSame($first->runId(), $second->runId());
        self::assertNotSame([], $retries, 'the start was refused 429 first');
        self::assertSame([1, 1.0, '429 rate_limited'], $retries[0]);
        self::assertGreaterThanOrEqual(0.95, microtime(true) - $began, 'the client waited what Retry-After said');

        // A client that will not wait that long gets the problem at once
        // (within a few requests: one may find the bucket refilled).
        $impatient = new Client(self::env('OPSGATE_RATE_LIMITED_URL'), self::env('OPSGATE_RATE_USER_TOKEN'), retry: new RetryPolicy(maxWait: 0.5));
        $refused = null;
        for ($i = 0; $i < 3 && $refused === null; $i++) {
            try {
                $impatient->syncInventory($conn);
            } catch (ProblemException $e) {
                $refused = $e;
            }
        }
        self::assertNotNull($refused, 'starts over the rate limit were not refused');
        self::assertSame(429, $refused->status);
        self::assertSame('rate_limited', $refused->problemCode);
        self::assertGreaterThanOrEqual(1.0, $refused->retryAfter);
    }
}
