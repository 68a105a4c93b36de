<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * The reasons of the catalog an executor may report a failed run with
 * (contract sections 6 and 9). Two of them also change the connection's
 * readiness: the next start on it is blocked instead of queued to fail
 * again.
 */
enum ExecutionReason: string
{
    /** The provider rejected the credentials: marks the connection's credentials invalid. */
    case CredentialsRejected = 'provider.credentials_rejected';
    /** Consent was found revoked: marks the connection's consent revoked. */
    case ConsentRevoked = 'provider.consent_revoked';
    /** The provider kept throttling past retries. */
    case Throttled = 'provider.throttled';
    /**
     * The provider could not be reached. Also what the runner reports for
     * an exception that names no reason: the catalog has no generic
     * "executor error" reason, and this one changes no readiness.
     */
    case Unavailable = 'provider.unavailable';
}
