<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * opsgate (or something in front of it) answered with a body the kit
 * cannot read: not JSON, or JSON missing a member the contract requires.
 */
final class UnexpectedResponseException extends \RuntimeException implements OpsgateException
{
}
