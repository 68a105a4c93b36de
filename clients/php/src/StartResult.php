<?php

declare(strict_types=1);

namespace Opsgate;

use Opsgate\Http\Response;

/**
 * opsgate's answer to a start (contract section 5): the outcome, the run
 * it created or points to, why not (reason), what to do next, and the
 * presenter's message. Within ten seconds an operator knows: accepted? if
 * not, why? what next?
 *
 *     $result = $client->syncInventory($connectionId);
 *     match ($result->outcome) {
 *         Outcome::Accepted, Outcome::Deduped => $this->track($result->runId()),
 *         Outcome::ScopeBusy, Outcome::Blocked => $this->flash($result->message, $result->nextSteps),
 *     };
 */
final readonly class StartResult
{
    /**
     * @param list<NextStep> $nextSteps
     * @param array<string, mixed> $raw the answer as sent
     */
    public function __construct(
        public Outcome $outcome,
        /** the new run (accepted), the equivalent active one (deduped), the one holding the scope (scope_busy) or the blocked record (blocked); null only in a dry run's accepted/blocked answer */
        public ?Run $run,
        /** why not; null only for accepted */
        public ?Reason $reason,
        public array $nextSteps,
        public Message $message,
        /** the HTTP status: 202, 200, 409 or 422 */
        public int $httpStatus,
        /** the Idempotency-Key the start was sent with (generated when the caller gave none) */
        public string $idempotencyKey,
        /** whether opsgate replayed the answer of an earlier start with the same key */
        public bool $replayed = false,
        /** whether this was a dry run: nothing was recorded */
        public bool $dryRun = false,
        public array $raw = [],
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data, int $httpStatus, string $idempotencyKey, bool $replayed = false): self
    {
        $outcome = Outcome::tryFrom(Json::string($data, 'outcome'))
            ?? throw new UnexpectedResponseException(sprintf('unknown outcome %s', $data['outcome']));
        $run = Json::optionalObject($data, 'run');
        $reason = Json::optionalObject($data, 'reason');
        $message = Json::optionalObject($data, 'message')
            ?? throw new UnexpectedResponseException('a StartResult without a message');
        return new self(
            outcome: $outcome,
            run: $run !== null ? Run::fromArray($run) : null,
            reason: $reason !== null ? Reason::fromArray($reason) : null,
            nextSteps: NextStep::listFrom(Json::list($data, 'next_steps')),
            message: Message::fromArray($message),
            httpStatus: $httpStatus,
            idempotencyKey: $idempotencyKey,
            replayed: $replayed,
            dryRun: ($data['dry_run'] ?? false) === true,
            raw: $data,
        );
    }

    /** @internal */
    public static function fromResponse(Response $response, string $idempotencyKey): self
    {
        return self::fromArray(
            $response->json(),
            $response->status,
            $idempotencyKey,
            strcasecmp($response->header('idempotent-replayed') ?? '', 'true') === 0,
        );
    }

    /** The id of the run the answer is about, or null (a dry run's accepted/blocked answer). */
    public function runId(): ?string
    {
        return $this->run?->id;
    }

    /** Whether a new run was queued. */
    public function isAccepted(): bool
    {
        return $this->outcome === Outcome::Accepted;
    }
}
