<?php

declare(strict_types=1);

namespace Opsgate\Webhooks;

/**
 * Verifies opsgate's webhook messages: Standard Webhooks 1.0
 * (https://www.standardwebhooks.com/), contract section 14.
 *
 * A message carries `webhook-id`, `webhook-timestamp` (unix seconds) and
 * `webhook-signature`: space-separated `v1,<base64>` entries, each an
 * HMAC-SHA256 over "<id>.<timestamp>.<body>" keyed with the decoded
 * bytes of a `whsec_<base64>` secret (one entry per secret during a
 * rotation). A message is accepted when its timestamp is within the
 * tolerance of the receiver's clock (5 minutes by default, against
 * replays) and any v1 entry matches under any configured secret,
 * compared in constant time (hash_equals).
 *
 *     $verifier = new Verifier([getenv('OPSGATE_WEBHOOK_SECRET')]);
 *     try {
 *         $message = $verifier->verify(file_get_contents('php://input'), getallheaders());
 *     } catch (VerificationException $e) {
 *         http_response_code(400);
 *         exit;
 *     }
 *     // $message['type'], $message['data']['run']['status'], ...; dedupe on the webhook-id
 *
 * Verify the raw body as received, before any JSON decoding or
 * re-encoding: a single changed byte (a trailing newline) breaks the
 * signature.
 */
final class Verifier
{
    /** The default tolerance, in seconds: the reference libraries'. */
    public const DEFAULT_TOLERANCE = 300;
    public const SECRET_PREFIX = 'whsec_';

    /** @var list<string> raw key bytes */
    private readonly array $keys;
    private readonly \Closure $clock;

    /**
     * @param string|list<string> $secrets the endpoint's secret(s), `whsec_...` (the prefix is
     *        optional); give the new and the old one while rotating
     * @param int $tolerance seconds the timestamp may be off, either way (0 or less: the default)
     * @param \Closure(): int|null $clock the receiver's unix time (tests); default time()
     * @throws VerificationException (Secret) for an empty or malformed secret
     */
    public function __construct(#[\SensitiveParameter] string|array $secrets, private readonly int $tolerance = self::DEFAULT_TOLERANCE, ?\Closure $clock = null)
    {
        $secrets = is_array($secrets) ? array_values($secrets) : [$secrets];
        if ($secrets === []) {
            throw new VerificationException(VerificationFailure::Secret, 'no webhook secret to verify against');
        }
        $this->keys = array_map(self::decodeSecret(...), $secrets);
        $this->clock = $clock ?? static fn (): int => time();
    }

    /**
     * Verifies a message and returns its payload: `{type, timestamp, data}`.
     *
     * @param string $body the raw request body
     * @param array<string, string|list<string>> $headers the request headers, any case
     *        (getallheaders(), PSR-7's getHeaders(), Symfony's $request->headers->all())
     * @return array<string, mixed>
     * @throws VerificationException
     */
    public function verify(string $body, array $headers): array
    {
        [$id, $timestamp, $signatures] = self::readHeaders($headers);
        $this->verifySignature($id, $timestamp, $signatures, $body);
        $payload = json_decode($body, true);
        if (!is_array($payload)) {
            throw new VerificationException(VerificationFailure::Payload, sprintf('webhook %s: the body is not a JSON object', $id));
        }
        return $payload;
    }

    /**
     * Verifies the three header values against the body, without decoding it.
     *
     * @throws VerificationException
     */
    public function verifySignature(string $id, string $timestamp, string $signatureHeader, string $body): void
    {
        if ($id === '' || $timestamp === '' || $signatureHeader === '') {
            throw new VerificationException(VerificationFailure::Headers, 'the webhook-id, webhook-timestamp and webhook-signature headers are required');
        }
        // A plain decimal number of seconds: no sign, fraction, exponent or leading zero.
        if (preg_match('/^(0|[1-9][0-9]{0,17})$/', $timestamp) !== 1) {
            throw new VerificationException(VerificationFailure::Headers, sprintf('webhook-timestamp %s is not a decimal unix timestamp', $timestamp));
        }
        $skew = ($this->clock)() - (int) $timestamp;
        $tolerance = $this->tolerance > 0 ? $this->tolerance : self::DEFAULT_TOLERANCE;
        if (abs($skew) > $tolerance) {
            throw new VerificationException(VerificationFailure::Timestamp, sprintf('webhook %s: its timestamp is %d s from now, more than %d s', $id, abs($skew), $tolerance));
        }
        $candidates = [];
        foreach (preg_split('/\s+/', trim($signatureHeader)) ?: [] as $entry) {
            [$version, $encoded] = explode(',', $entry, 2) + [1 => ''];
            if ($version !== 'v1') {
                continue; // another scheme (v1a: asymmetric) or junk
            }
            $raw = base64_decode($encoded, true);
            // Only the canonical spelling of 32 bytes: padding and padding bits included.
            if ($raw === false || strlen($raw) !== 32 || base64_encode($raw) !== $encoded) {
                continue;
            }
            $candidates[] = $raw;
        }
        $signed = $id . '.' . $timestamp . '.' . $body;
        $match = false;
        foreach ($this->keys as $key) {
            $want = hash_hmac('sha256', $signed, $key, true);
            foreach ($candidates as $candidate) {
                // No early return: the time taken does not tell which entry matched.
                $match = hash_equals($want, $candidate) || $match;
            }
        }
        if (!$match) {
            throw new VerificationException(VerificationFailure::Signature, sprintf('webhook %s: no matching signature (%d v1 signatures, %d secrets)', $id, count($candidates), count($this->keys)));
        }
    }

    /**
     * The signature header value of a message (what a sender sends): for
     * tests of a receiver, and to check the verifier against the
     * reference vectors.
     */
    public static function sign(#[\SensitiveParameter] string $secret, string $id, int $timestamp, string $body): string
    {
        return 'v1,' . base64_encode(hash_hmac('sha256', $id . '.' . $timestamp . '.' . $body, self::decodeSecret($secret), true));
    }

    /**
     * The key bytes of a `whsec_<base64>` secret (prefix optional).
     *
     * @throws VerificationException (Secret)
     */
    public static function decodeSecret(#[\SensitiveParameter] string $secret): string
    {
        $encoded = str_starts_with($secret, self::SECRET_PREFIX) ? substr($secret, strlen(self::SECRET_PREFIX)) : $secret;
        $key = preg_match('#^[A-Za-z0-9+/]*={0,2}$#', $encoded) === 1 && strlen($encoded) % 4 === 0 ? base64_decode($encoded, true) : false;
        if ($key === false || $key === '') {
            throw new VerificationException(VerificationFailure::Secret, 'a webhook secret is "whsec_" and the standard base64 of its key');
        }
        return $key;
    }

    /**
     * The id, timestamp and signature header values; the `svix-` names
     * (the scheme's origin) are read when no `webhook-` one is present, never mixed.
     *
     * @param array<string, string|list<string>> $headers
     * @return array{string, string, string}
     */
    private static function readHeaders(array $headers): array
    {
        $lower = [];
        foreach ($headers as $name => $value) {
            $value = is_array($value) ? implode(' ', array_map('strval', $value)) : (string) $value;
            $lower[strtolower(str_replace('_', '-', (string) $name))] = trim($value);
        }
        $prefix = 'webhook-';
        if (($lower['webhook-id'] ?? '') === '' && ($lower['webhook-timestamp'] ?? '') === '' && ($lower['webhook-signature'] ?? '') === ''
            && (($lower['svix-id'] ?? '') !== '' || ($lower['svix-timestamp'] ?? '') !== '' || ($lower['svix-signature'] ?? '') !== '')) {
            $prefix = 'svix-';
        }
        $values = [$lower[$prefix . 'id'] ?? '', $lower[$prefix . 'timestamp'] ?? '', $lower[$prefix . 'signature'] ?? ''];
        foreach (['id', 'timestamp', 'signature'] as $i => $name) {
            if ($values[$i] === '') {
                throw new VerificationException(VerificationFailure::Headers, sprintf('the %s%s header is missing', $prefix, $name));
            }
        }
        return $values;
    }
}
