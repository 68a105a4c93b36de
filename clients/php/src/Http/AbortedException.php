<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * The request was abandoned because its abort check said so (a runner
 * told to stop while it waited in a long poll).
 */
final class AbortedException extends TransportException
{
}
