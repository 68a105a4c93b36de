<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * An exception a handler throws to end its run failed with a reason of
 * the catalog. Implement it on your own exception classes (a Graph client's
 * ThrottledException, say) or throw {@see RunFailed}.
 */
interface FailsWithReason extends \Throwable
{
    /** The catalog reason the run fails with. */
    public function reason(): ExecutionReason;

    /**
     * What to show on the run detail beside the reason (a JSON object of
     * at most 16 KiB); the exception's message is added as "error".
     *
     * @return array<string, mixed>
     */
    public function summary(): array;
}
