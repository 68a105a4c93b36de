<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * Typed reads of decoded JSON objects, for the models' fromArray()
 * constructors: a member the contract requires that is missing or of the
 * wrong type is an {@see UnexpectedResponseException}; unknown members
 * are ignored (opsgate may add fields within /api/v1).
 *
 * @internal
 */
final class Json
{
    /** @param array<string, mixed> $data */
    public static function string(array $data, string $key): string
    {
        $value = $data[$key] ?? null;
        if (!is_string($value)) {
            throw new UnexpectedResponseException(sprintf('expected a string "%s" in %s', $key, self::excerpt($data)));
        }
        return $value;
    }

    /** @param array<string, mixed> $data */
    public static function optionalString(array $data, string $key): ?string
    {
        $value = $data[$key] ?? null;
        return is_string($value) ? $value : null;
    }

    /** @param array<string, mixed> $data */
    public static function int(array $data, string $key): int
    {
        $value = $data[$key] ?? null;
        if (!is_int($value)) {
            throw new UnexpectedResponseException(sprintf('expected an integer "%s" in %s', $key, self::excerpt($data)));
        }
        return $value;
    }

    /** @param array<string, mixed> $data */
    public static function time(array $data, string $key): \DateTimeImmutable
    {
        $value = self::optionalTime($data, $key);
        if ($value === null) {
            throw new UnexpectedResponseException(sprintf('expected a date-time "%s" in %s', $key, self::excerpt($data)));
        }
        return $value;
    }

    /** @param array<string, mixed> $data */
    public static function optionalTime(array $data, string $key): ?\DateTimeImmutable
    {
        $value = $data[$key] ?? null;
        if (!is_string($value) || $value === '') {
            return null;
        }
        try {
            return new \DateTimeImmutable($value);
        } catch (\Exception $e) {
            throw new UnexpectedResponseException(sprintf('"%s" is not a date-time: %s', $key, $value), 0, $e);
        }
    }

    /**
     * @param array<string, mixed> $data
     * @return array<string, mixed>|null
     */
    public static function optionalObject(array $data, string $key): ?array
    {
        $value = $data[$key] ?? null;
        return is_array($value) ? $value : null;
    }

    /**
     * @param array<string, mixed> $data
     * @return list<array<string, mixed>>
     */
    public static function list(array $data, string $key): array
    {
        $value = $data[$key] ?? [];
        if (!is_array($value)) {
            throw new UnexpectedResponseException(sprintf('expected a list "%s" in %s', $key, self::excerpt($data)));
        }
        return array_values(array_filter($value, 'is_array'));
    }

    /** @param array<string, mixed> $data */
    private static function excerpt(array $data): string
    {
        return substr(json_encode($data, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) ?: '?', 0, 300);
    }
}
