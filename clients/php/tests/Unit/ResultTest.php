<?php

declare(strict_types=1);

namespace Opsgate\Tests\Unit;

use Opsgate\Executor\ExecutionReason;
use Opsgate\Executor\Result;
use Opsgate\Executor\RunFailed;
use PHPUnit\Framework\TestCase;

/**
 * What a handler's return value or exception turns into.
 */
final class ResultTest extends TestCase
{
    public function testReturnValues(): void
    {
        self::assertSame(['status' => 'succeeded'], Result::from(null)->toArray());
        self::assertSame(['status' => 'succeeded'], Result::from([])->toArray());
        self::assertEquals(['status' => 'succeeded', 'summary' => (object) ['groups' => 3]], Result::from(['groups' => 3])->toArray());
        $checked = Result::succeeded(['checked' => true], ['consent' => 'granted', 'credentials' => 'valid']);
        self::assertSame(['consent' => 'granted', 'credentials' => 'valid'], $checked->toArray()['observations']);
        $this->expectException(\TypeError::class);
        Result::from('done');
    }

    public function testAnExceptionCarryingAReason(): void
    {
        $result = Result::fromThrowable(RunFailed::throttled('Graph kept answering 429', ['retries' => 5]));
        self::assertFalse($result->succeeded);
        self::assertSame(ExecutionReason::Throttled, $result->reason);
        self::assertSame(['retries' => 5, 'error' => 'Graph kept answering 429', 'exception' => RunFailed::class], $result->summary);
        self::assertSame('provider.throttled', $result->toArray()['reason_code']);
    }

    public function testAnyOtherExceptionFailsWithTheDefaultReason(): void
    {
        $result = Result::fromThrowable(new \LogicException(str_repeat('x', 5000)));
        self::assertSame(ExecutionReason::Unavailable, $result->reason);
        self::assertSame(\LogicException::class, $result->summary['exception'] ?? null);
        self::assertLessThan(2100, strlen((string) ($result->summary['error'] ?? '')));
        self::assertSame(ExecutionReason::CredentialsRejected, Result::fromThrowable(new \RuntimeException(), ExecutionReason::CredentialsRejected)->reason);
    }

    public function testAnOversizedSummaryIsReplaced(): void
    {
        $body = Result::succeeded(['blob' => str_repeat('x', 20_000)])->toArray();
        self::assertArrayHasKey('summary_dropped', $body['summary']);
    }
}
