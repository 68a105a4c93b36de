<?php

declare(strict_types=1);

namespace Opsgate\Webhooks;

use Opsgate\OpsgateException;

/**
 * A webhook message that must not be trusted; answer it 4xx (400, or 401
 * for a bad signature) and do not act on it.
 */
final class VerificationException extends \RuntimeException implements OpsgateException
{
    public function __construct(public readonly VerificationFailure $failure, string $message)
    {
        parent::__construct($message);
    }
}
