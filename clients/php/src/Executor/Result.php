<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * How a run ended, as a handler reports it. A handler may also return an
 * array (a success with that summary) or nothing (a success), or throw
 * (a failure: {@see FailsWithReason}).
 */
final readonly class Result
{
    /** The largest summary opsgate keeps (16 KiB of JSON). */
    public const MAX_SUMMARY_BYTES = 16 * 1024;

    /**
     * @param array<string, mixed>|null $summary a JSON object shown on the run detail
     * @param array{consent?: 'granted'|'revoked', credentials?: 'valid'|'invalid'}|null $observations
     *        what the run found out about its connection's readiness
     */
    private function __construct(
        public bool $succeeded,
        public ?ExecutionReason $reason,
        public ?array $summary,
        public ?array $observations,
    ) {
    }

    /**
     * @param array<string, mixed> $summary
     * @param array{consent?: 'granted'|'revoked', credentials?: 'valid'|'invalid'}|null $observations
     */
    public static function succeeded(array $summary = [], ?array $observations = null): self
    {
        return new self(true, null, $summary === [] ? null : $summary, $observations);
    }

    /**
     * @param array<string, mixed> $summary
     * @param array{consent?: 'granted'|'revoked', credentials?: 'valid'|'invalid'}|null $observations
     */
    public static function failed(ExecutionReason $reason, array $summary = [], ?array $observations = null): self
    {
        return new self(false, $reason, $summary === [] ? null : $summary, $observations);
    }

    /**
     * The failure a thrown exception stands for: its own reason if it
     * carries one, else $default; its message goes into the summary.
     */
    public static function fromThrowable(\Throwable $e, ExecutionReason $default = ExecutionReason::Unavailable): self
    {
        $message = $e->getMessage();
        if (strlen($message) > 2000) {
            $message = substr($message, 0, 2000) . '…';
        }
        $summary = ['error' => $message, 'exception' => $e::class];
        if ($e instanceof FailsWithReason) {
            return self::failed($e->reason(), $e->summary() + $summary);
        }
        return self::failed($default, $summary);
    }

    /**
     * Reads what a handler returned.
     *
     * @throws \TypeError for anything else
     */
    public static function from(mixed $returned): self
    {
        return match (true) {
            $returned instanceof self => $returned,
            $returned === null => self::succeeded(),
            is_array($returned) => self::succeeded($returned),
            default => throw new \TypeError(sprintf('a handler returns a %s, an array or null, not %s', self::class, get_debug_type($returned))),
        };
    }

    /**
     * The completion body without the epoch. A summary over 16 KiB would be
     * refused (and the run left to be reaped), so it is replaced by a note.
     *
     * @return array<string, mixed>
     */
    public function toArray(): array
    {
        $body = ['status' => $this->succeeded ? 'succeeded' : 'failed'];
        if ($this->reason !== null) {
            $body['reason_code'] = $this->reason->value;
        }
        if ($this->summary !== null) {
            $summary = (object) $this->summary;
            $json = json_encode($summary, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE);
            if ($json === false || strlen($json) > self::MAX_SUMMARY_BYTES) {
                $summary = ['summary_dropped' => sprintf('the summary was not a JSON object of at most %d bytes', self::MAX_SUMMARY_BYTES)];
            }
            $body['summary'] = $summary;
        }
        if ($this->observations !== null && $this->observations !== []) {
            $body['observations'] = $this->observations;
        }
        return $body;
    }
}
