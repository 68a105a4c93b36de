<?php

declare(strict_types=1);

namespace Opsgate\Tests\Unit;

use Opsgate\Webhooks\VerificationException;
use Opsgate\Webhooks\VerificationFailure;
use Opsgate\Webhooks\Verifier;
use PHPUnit\Framework\TestCase;

/**
 * The webhook verifier against the Standard Webhooks reference vectors
 * (the known answers of github.com/standard-webhooks/standard-webhooks,
 * libraries v1.3.0, as webhooks/signing/signing_test.go in this repository
 * records them) and the same edge cases as the Go verifier.
 */
final class VerifierTest extends TestCase
{
    private const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    private const ID = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
    private const TIMESTAMP = 1614265330;
    private const BODY = '{"test": 2432232314}';
    private const SIGNATURE = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
    /** A wrong signature used throughout the reference tests. */
    private const WRONG = 'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=';

    /** @return iterable<string, array{string, string, int, string, string}> */
    public static function referenceVectors(): iterable
    {
        // libraries/go/webhook_test.go TestWebhookSign; also the JavaScript,
        // Python, Java, PHP, Ruby and C# tests.
        yield 'go/javascript/python TestWebhookSign' => [self::SECRET, self::ID, self::TIMESTAMP, self::BODY, self::SIGNATURE];
        // libraries/rust/src/lib.rs test_sign.
        yield 'rust test_sign' => [
            'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
            'msg_27UH4WbU6Z5A5EzD8u03UvzRbpk',
            1649367553,
            '{"email":"test@example.com","username":"test_user"}',
            'v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=',
        ];
        // libraries/javascript/src/webhook.test.ts: a body of every byte
        // value, not valid UTF-8, signed byte for byte.
        yield 'javascript binary payload' => [self::SECRET, self::ID, self::TIMESTAMP, implode('', array_map('chr', range(0, 255))), 'v1,sEcZ042G8Crqgxbybb3y0eDxQR3TcfYsk11I1XULhSI='];
    }

    /** @dataProvider referenceVectors */
    public function testReferenceVectors(string $secret, string $id, int $timestamp, string $body, string $signature): void
    {
        self::assertSame($signature, Verifier::sign($secret, $id, $timestamp, $body));
        $verifier = new Verifier($secret, clock: static fn (): int => $timestamp);
        $verifier->verifySignature($id, (string) $timestamp, $signature, $body);
        $this->addToAssertionCount(1);
    }

    public function testVerifyReturnsThePayload(): void
    {
        $payload = $this->verifier()->verify(self::BODY, $this->headers());
        self::assertSame(['test' => 2432232314], $payload);
    }

    public function testHeadersInAnyCaseAndAsLists(): void
    {
        $headers = ['Webhook-Id' => [self::ID], 'WEBHOOK-TIMESTAMP' => [(string) self::TIMESTAMP], 'webhook-signature' => [self::SIGNATURE]];
        self::assertSame(['test' => 2432232314], $this->verifier()->verify(self::BODY, $headers));
        $svix = ['svix-id' => self::ID, 'svix-timestamp' => (string) self::TIMESTAMP, 'svix-signature' => self::SIGNATURE];
        self::assertSame(['test' => 2432232314], $this->verifier()->verify(self::BODY, $svix));
    }

    /** @return iterable<string, array{string, string, int, string}> */
    public static function tampered(): iterable
    {
        yield 'body' => [self::ID, (string) self::TIMESTAMP, 0, '{"test": 2432232315}'];
        yield 'body with a trailing newline' => [self::ID, (string) self::TIMESTAMP, 0, self::BODY . "\n"];
        yield 'empty body' => [self::ID, (string) self::TIMESTAMP, 0, ''];
        yield 'id' => [self::ID . 'x', (string) self::TIMESTAMP, 0, self::BODY];
        yield 'timestamp' => [self::ID, (string) (self::TIMESTAMP + 1), 1, self::BODY];
    }

    /** @dataProvider tampered */
    public function testTamperedMessagesAreRejected(string $id, string $timestamp, int $clockOffset, string $body): void
    {
        $this->expectFailure(VerificationFailure::Signature, fn () => $this->verifier(self::TIMESTAMP + $clockOffset)->verifySignature($id, $timestamp, self::SIGNATURE, $body));
    }

    /** @return iterable<string, array{int, int, ?VerificationFailure}> */
    public static function tolerance(): iterable
    {
        yield 'same second' => [0, 0, null];
        yield 'late by exactly the tolerance' => [300, 0, null];
        yield 'early by exactly the tolerance' => [-300, 0, null];
        yield 'too old' => [301, 0, VerificationFailure::Timestamp];
        yield 'too new' => [-301, 0, VerificationFailure::Timestamp];
        yield 'zero tolerance means the default' => [240, -1, null];
        yield 'tight tolerance, ok' => [10, 10, null];
        yield 'tight tolerance, too old' => [11, 10, VerificationFailure::Timestamp];
        yield 'tight tolerance, too new' => [-11, 10, VerificationFailure::Timestamp];
        yield 'a day late' => [86400, 0, VerificationFailure::Timestamp];
    }

    /** @dataProvider tolerance */
    public function testTolerance(int $offset, int $tolerance, ?VerificationFailure $want): void
    {
        $verifier = new Verifier(self::SECRET, $tolerance === 0 ? Verifier::DEFAULT_TOLERANCE : max(0, $tolerance), static fn (): int => self::TIMESTAMP + $offset);
        $verify = fn () => $verifier->verifySignature(self::ID, (string) self::TIMESTAMP, self::SIGNATURE, self::BODY);
        if ($want === null) {
            $verify();
            $this->addToAssertionCount(1);
            return;
        }
        $this->expectFailure($want, $verify);
    }

    /** @return iterable<string, array{array<string, string>}> */
    public static function badHeaders(): iterable
    {
        $ts = (string) self::TIMESTAMP;
        yield 'none' => [[]];
        yield 'missing id' => [['webhook-timestamp' => $ts, 'webhook-signature' => self::SIGNATURE]];
        yield 'missing timestamp' => [['webhook-id' => self::ID, 'webhook-signature' => self::SIGNATURE]];
        yield 'missing signature' => [['webhook-id' => self::ID, 'webhook-timestamp' => $ts]];
        yield 'families are not mixed' => [['webhook-id' => self::ID, 'svix-timestamp' => $ts, 'svix-signature' => self::SIGNATURE]];
        foreach (['abc', $ts . '.5', '+' . $ts, '0' . $ts, '1e9', '99999999999999999999'] as $bad) {
            yield 'timestamp ' . $bad => [['webhook-id' => self::ID, 'webhook-timestamp' => $bad, 'webhook-signature' => self::SIGNATURE]];
        }
    }

    /**
     * @dataProvider badHeaders
     * @param array<string, string> $headers
     */
    public function testBadHeaders(array $headers): void
    {
        $this->expectFailure(VerificationFailure::Headers, fn () => $this->verifier()->verify(self::BODY, $headers));
    }

    /** @return iterable<string, array{string, bool}> */
    public static function signatureLists(): iterable
    {
        $encoded = substr(self::SIGNATURE, 3);
        yield 'good among wrong ones' => [self::WRONG . ' v2,' . $encoded . ' ' . self::SIGNATURE . ' ' . self::WRONG, true];
        yield 'junk entries are skipped' => [',,, v1,not,base64  v1a ' . self::SIGNATURE, true];
        yield 'asymmetric v1a entry is skipped' => ['v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== ' . self::SIGNATURE, true];
        yield 'only wrong' => [self::WRONG, false];
        yield 'right value under v1a' => ['v1a,' . $encoded, false];
        yield 'right value under v2' => ['v2,' . $encoded, false];
        yield 'right value without version' => [$encoded, false];
        yield 'empty v1' => ['v1,', false];
        yield 'truncated' => [substr(self::SIGNATURE, 0, -4), false];
        yield 'unpadded' => [rtrim(self::SIGNATURE, '='), false];
        // The last character carries two padding bits: no second spelling.
        yield 'non-canonical padding bits' => [substr(self::SIGNATURE, 0, -2) . 'F=', false];
        yield 'uppercase version' => ['V1,' . $encoded, false];
    }

    /** @dataProvider signatureLists */
    public function testSignatureLists(string $header, bool $accepted): void
    {
        $verify = fn () => $this->verifier()->verifySignature(self::ID, (string) self::TIMESTAMP, $header, self::BODY);
        if ($accepted) {
            $verify();
            $this->addToAssertionCount(1);
            return;
        }
        $this->expectFailure(VerificationFailure::Signature, $verify);
    }

    public function testRotation(): void
    {
        $old = 'whsec_' . base64_encode(random_bytes(32));
        $new = 'whsec_' . base64_encode(random_bytes(32));
        $other = 'whsec_' . base64_encode(random_bytes(32));
        $header = Verifier::sign($new, 'msg_rotation', self::TIMESTAMP, self::BODY) . ' ' . Verifier::sign($old, 'msg_rotation', self::TIMESTAMP, self::BODY);
        $clock = static fn (): int => self::TIMESTAMP;
        foreach ([[$old], [$new], [$other, $old], [substr($new, 6)]] as $secrets) {
            (new Verifier($secrets, clock: $clock))->verifySignature('msg_rotation', (string) self::TIMESTAMP, $header, self::BODY);
        }
        $this->addToAssertionCount(4);
        $this->expectFailure(VerificationFailure::Signature, fn () => (new Verifier($other, clock: $clock))->verifySignature('msg_rotation', (string) self::TIMESTAMP, $header, self::BODY));
    }

    /** @return iterable<string, array{list<string>}> */
    public static function badSecrets(): iterable
    {
        yield 'none' => [[]];
        yield 'empty' => [['']];
        yield 'prefix only' => [['whsec_']];
        yield 'not base64' => [['whsec_%%%']];
        yield 'bad length' => [['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS']];
        yield 'one bad among good' => [['whsec_%%%', self::SECRET]];
    }

    /**
     * @dataProvider badSecrets
     * @param list<string> $secrets
     */
    public function testBadSecrets(array $secrets): void
    {
        $this->expectFailure(VerificationFailure::Secret, fn () => new Verifier($secrets));
    }

    public function testAPayloadThatIsNotJsonIsRejectedAfterItsSignatureHolds(): void
    {
        $body = 'not json';
        $headers = ['webhook-id' => self::ID, 'webhook-timestamp' => (string) self::TIMESTAMP, 'webhook-signature' => Verifier::sign(self::SECRET, self::ID, self::TIMESTAMP, $body)];
        $this->expectFailure(VerificationFailure::Payload, fn () => $this->verifier()->verify($body, $headers));
    }

    private function verifier(int $now = self::TIMESTAMP): Verifier
    {
        return new Verifier(self::SECRET, clock: static fn (): int => $now);
    }

    /** @return array<string, string> */
    private function headers(): array
    {
        return ['webhook-id' => self::ID, 'webhook-timestamp' => (string) self::TIMESTAMP, 'webhook-signature' => self::SIGNATURE];
    }

    private function expectFailure(VerificationFailure $want, \Closure $fn): void
    {
        try {
            $fn();
        } catch (VerificationException $e) {
            self::assertSame($want, $e->failure, $e->getMessage());
            return;
        }
        self::fail(sprintf('accepted; want a %s failure', $want->value));
    }
}
