<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * How opsgate answered a start (contract section 2). Every start ends in
 * exactly one of them; the HTTP status follows from it.
 */
enum Outcome: string
{
    /** A new run was queued with the connection pinned into it (202). */
    case Accepted = 'accepted';
    /** An equivalent run is already queued or running: the answer points to it (200). */
    case Deduped = 'deduped';
    /** Another operation holds the scope: the answer points to it (409). */
    case ScopeBusy = 'scope_busy';
    /** A prerequisite is missing: a blocked run records why, nothing is queued (422). */
    case Blocked = 'blocked';

    /** The HTTP status opsgate answers this outcome with. */
    public function httpStatus(): int
    {
        return match ($this) {
            self::Accepted => 202,
            self::Deduped => 200,
            self::ScopeBusy => 409,
            self::Blocked => 422,
        };
    }
}
