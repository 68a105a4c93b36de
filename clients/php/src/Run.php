<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * A run: what a start created or pointed to, or what
 * `GET /api/v1/operations/{id}` answers.
 *
 * The members under "detail" are filled only by the read of one run
 * ({@see Client::operation()}); in a StartResult or a Claim they are
 * null / empty. {@see $raw} keeps the whole object as sent, members this
 * version of the kit does not know included.
 */
final readonly class Run
{
    /**
     * @param list<NextStep> $nextSteps
     * @param array<string, mixed>|null $summary
     * @param array<string, mixed> $raw
     */
    public function __construct(
        public string $id,
        public string $tenantId,
        /** the type as written, legacy spellings included (entra_group_sync) */
        public string $type,
        /** the canonical dotted name (directory.groups.sync) */
        public string $canonicalType,
        public string $label,
        public RunStatus $status,
        /** the target (a restore run id), or null */
        public ?string $target,
        /** the connection pinned at the start; null when none could be resolved */
        public ?ConnectionRef $providerConnection,
        public string $initiatorId,
        public string $surface,
        public \DateTimeImmutable $createdAt,
        public ?\DateTimeImmutable $startedAt,
        public ?\DateTimeImmutable $finishedAt,
        /** why it was blocked or failed; null otherwise */
        public ?Reason $reason,
        public ?Deadlines $deadlines,
        public ?string $rerunOf,
        // detail
        public ?Message $message = null,
        public array $nextSteps = [],
        public ?int $dedupedCount = null,
        public ?int $scopeBusyCount = null,
        public ?array $summary = null,
        public ?Initiator $initiatedBy = null,
        public array $raw = [],
    ) {
    }

    /** @param array<string, mixed> $data */
    public static function fromArray(array $data): self
    {
        $status = RunStatus::tryFrom(Json::string($data, 'status'))
            ?? throw new UnexpectedResponseException(sprintf('unknown run status %s', $data['status']));
        $conn = Json::optionalObject($data, 'provider_connection');
        $reason = Json::optionalObject($data, 'reason');
        $deadlines = Json::optionalObject($data, 'deadlines');
        $message = Json::optionalObject($data, 'message');
        $initiator = Json::optionalObject($data, 'initiated_by');
        return new self(
            id: Json::string($data, 'id'),
            tenantId: Json::string($data, 'tenant_id'),
            type: Json::string($data, 'type'),
            canonicalType: Json::optionalString($data, 'canonical_type') ?? Json::string($data, 'type'),
            label: Json::optionalString($data, 'label') ?? '',
            status: $status,
            target: Json::optionalString($data, 'target'),
            providerConnection: $conn !== null ? ConnectionRef::fromArray($conn) : null,
            initiatorId: Json::optionalString($data, 'initiator_id') ?? '',
            surface: Json::optionalString($data, 'surface') ?? '',
            createdAt: Json::time($data, 'created_at'),
            startedAt: Json::optionalTime($data, 'started_at'),
            finishedAt: Json::optionalTime($data, 'finished_at'),
            reason: $reason !== null ? Reason::fromArray($reason) : null,
            deadlines: $deadlines !== null ? Deadlines::fromArray($deadlines) : null,
            rerunOf: Json::optionalString($data, 'rerun_of'),
            message: $message !== null ? Message::fromArray($message) : null,
            nextSteps: NextStep::listFrom(Json::list($data, 'next_steps')),
            dedupedCount: is_int($data['deduped_count'] ?? null) ? $data['deduped_count'] : null,
            scopeBusyCount: is_int($data['scope_busy_count'] ?? null) ? $data['scope_busy_count'] : null,
            summary: Json::optionalObject($data, 'summary'),
            initiatedBy: $initiator !== null ? Initiator::fromArray($initiator) : null,
            raw: $data,
        );
    }

    /** The API path of this run (`/api/v1/operations/{id}`). */
    public function path(): string
    {
        return '/api/v1/operations/' . rawurlencode($this->id);
    }
}
