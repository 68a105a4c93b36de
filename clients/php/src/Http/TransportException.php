<?php

declare(strict_types=1);

namespace Opsgate\Http;

use Opsgate\OpsgateException;

/**
 * The request got no HTTP answer: the connection was refused or broke,
 * TLS failed, or the answer did not arrive in time.
 */
class TransportException extends \RuntimeException implements OpsgateException
{
}
