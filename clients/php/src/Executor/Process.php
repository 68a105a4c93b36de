<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * Helpers for the processes the runner forks.
 *
 * @internal
 */
final class Process
{
    /**
     * Ends a forked child at once, the way C's _exit() would: no shutdown
     * functions, no destructors, no flushing of output buffers. A child
     * shares its parent's open resources (a PDO connection, a Monolog
     * stream, PHPUnit's output buffer); a normal exit would close or flush
     * them from the child and break them for the parent. SIGKILL is the
     * only way PHP has to skip all of that.
     */
    public static function vanish(): never
    {
        posix_kill(posix_getpid(), SIGKILL);
        exit(1); // not reached
    }

    /** Makes the calling (child) process deaf to the stop signals its parent handles. */
    public static function ignoreStopSignals(): void
    {
        pcntl_signal(SIGTERM, SIG_IGN);
        pcntl_signal(SIGINT, SIG_IGN);
        pcntl_sigprocmask(SIG_UNBLOCK, [SIGTERM, SIGINT]);
    }
}
