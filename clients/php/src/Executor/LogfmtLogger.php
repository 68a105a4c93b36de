<?php

declare(strict_types=1);

namespace Opsgate\Executor;

/**
 * A logger for the runner that writes logfmt lines
 * (`time=... level=info msg="run completed" run_id=...`) to a stream,
 * STDERR by default: what a supervisor or a container runtime collects.
 */
final class LogfmtLogger
{
    private const LEVELS = ['debug' => 0, 'info' => 1, 'notice' => 2, 'warning' => 3, 'error' => 4, 'critical' => 5, 'alert' => 6, 'emergency' => 7];

    /** @var resource */
    private $stream;

    /** @param resource|null $stream */
    public function __construct(private readonly string $minLevel = 'info', $stream = null)
    {
        if (!isset(self::LEVELS[$minLevel])) {
            throw new \InvalidArgumentException(sprintf('unknown log level %s (%s)', $minLevel, implode(', ', array_keys(self::LEVELS))));
        }
        $this->stream = $stream ?? STDERR;
    }

    /** @param array<string, mixed> $context */
    public function __invoke(string $level, string $message, array $context = []): void
    {
        if ((self::LEVELS[$level] ?? 1) < self::LEVELS[$this->minLevel]) {
            return;
        }
        $line = 'time=' . (new \DateTimeImmutable())->format('Y-m-d\TH:i:s.vP') . ' level=' . $level . ' msg=' . self::value($message) . ' pid=' . getmypid();
        foreach ($context as $key => $value) {
            if ($value === null) {
                continue;
            }
            $line .= ' ' . $key . '=' . self::value(is_scalar($value) ? (is_bool($value) ? ($value ? 'true' : 'false') : (string) $value) : (json_encode($value) ?: '?'));
        }
        fwrite($this->stream, $line . "\n");
    }

    private static function value(string $value): string
    {
        if ($value !== '' && preg_match('/^[^\s"=]+$/', $value) === 1) {
            return $value;
        }
        return '"' . addcslashes($value, "\"\\\n\r") . '"';
    }
}
