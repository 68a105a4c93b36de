<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\OpsgateException;

/**
 * The run's lease is gone (cancelled by an operator, reaped, timed out):
 * thrown by {@see Job::ensureLease()} so that a handler stops where it
 * stands. The runner drops whatever the handler would have reported.
 */
final class LeaseLostException extends \RuntimeException implements OpsgateException
{
}
