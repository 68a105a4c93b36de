<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * A run's status. Only queued and running hold the run's protected scope.
 */
enum RunStatus: string
{
    case Blocked = 'blocked';
    case Queued = 'queued';
    case Running = 'running';
    case Succeeded = 'succeeded';
    case Failed = 'failed';
    case Cancelled = 'cancelled';

    /** Whether the run has ended (or never began): it will not change any more. */
    public function isTerminal(): bool
    {
        return !$this->isActive();
    }

    /** Whether the run is queued or running, holding its scope. */
    public function isActive(): bool
    {
        return $this === self::Queued || $this === self::Running;
    }
}
