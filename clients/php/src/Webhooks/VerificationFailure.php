<?php

declare(strict_types=1);

namespace Opsgate\Webhooks;

/**
 * Why a webhook message was rejected.
 */
enum VerificationFailure: string
{
    /** A webhook-id, webhook-timestamp or webhook-signature header is missing or malformed. */
    case Headers = 'headers';
    /** The timestamp is further from the receiver's clock than the tolerance (a replay?). */
    case Timestamp = 'timestamp';
    /** No v1 signature matches under any secret. */
    case Signature = 'signature';
    /** A configured secret is empty or not base64: the receiver's configuration is wrong. */
    case Secret = 'secret';
    /** The signature holds but the body is not a JSON object. */
    case Payload = 'payload';
}
