<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * Every exception the kit throws implements this interface, so that a
 * caller can catch "anything opsgate" in one clause.
 */
interface OpsgateException extends \Throwable
{
}
