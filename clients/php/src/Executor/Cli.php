<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\ProblemException;

/**
 * The command line of bin/opsgate-work.
 *
 * @internal
 */
final class Cli
{
    public const USAGE = <<<'TXT'
        usage: opsgate-work --provider=NAME [options]

        Claims the runs of an opsgate executor and runs them with PHP handlers.

          --provider=NAME     the provider this runner serves (env OPSGATE_PROVIDER); a run
                              claimed for another provider is failed, not run
          --url=URL           opsgate's base URL (env OPSGATE_URL)
          --token=TOKEN       the executor token, oge_... (env OPSGATE_EXECUTOR_TOKEN)
          --handlers=FILE     a PHP file returning ['operation.type' => callable(Job), '*' => ...]
                              (env OPSGATE_HANDLERS; default: the demo handlers in
                              examples/handlers.php, which succeed after a short pause)
          --concurrency=N     runs handled at once, 1..100 (default 1; above 1 in forked processes)
          --wait=SECONDS      how long a claim waits for work, 0..30 (default 20)
          --max-runs=N        exit after handing out N runs (default: run until stopped)
          --log-level=LEVEL   debug, info, warning or error (default info)

        SIGTERM or SIGINT stops claiming, lets the running handlers finish, completes
        their runs and exits 0. Exit 1: opsgate refused the executor (a revoked token);
        exit 2: bad usage.

        TXT;

    /**
     * @param list<string> $argv
     * @param array<string, string>|null $env default: the process's environment
     * @param resource|null $stdout
     * @param resource|null $stderr
     */
    public static function main(array $argv, ?array $env = null, $stdout = null, $stderr = null): int
    {
        $env ??= getenv();
        $stdout ??= STDOUT;
        $stderr ??= STDERR;
        try {
            $options = self::parse(array_slice($argv, 1));
        } catch (\InvalidArgumentException $e) {
            fwrite($stderr, 'opsgate-work: ' . $e->getMessage() . "\n\n" . self::USAGE);
            return 2;
        }
        if (isset($options['help'])) {
            fwrite($stdout, self::USAGE);
            return 0;
        }
        $provider = $options['provider'] ?? $env['OPSGATE_PROVIDER'] ?? '';
        $url = $options['url'] ?? $env['OPSGATE_URL'] ?? '';
        $token = $options['token'] ?? $env['OPSGATE_EXECUTOR_TOKEN'] ?? '';
        $handlersFile = $options['handlers'] ?? $env['OPSGATE_HANDLERS'] ?? dirname(__DIR__, 2) . '/examples/handlers.php';
        foreach (['--provider' => $provider, '--url (or OPSGATE_URL)' => $url, '--token (or OPSGATE_EXECUTOR_TOKEN)' => $token] as $name => $value) {
            if ($value === '') {
                fwrite($stderr, "opsgate-work: {$name} is required\n\n" . self::USAGE);
                return 2;
            }
        }
        try {
            $logger = new LogfmtLogger($options['log-level'] ?? 'info', $stderr);
            $handlers = self::loadHandlers($handlersFile);
            $runner = new Runner(
                new ExecutorClient($url, $token),
                $handlers,
                concurrency: self::int($options, 'concurrency', 1),
                wait: (float) self::number($options, 'wait', 20),
                providers: array_map('trim', explode(',', $provider)),
                maxRuns: isset($options['max-runs']) ? self::int($options, 'max-runs', 0) : null,
                logger: $logger,
            );
        } catch (\InvalidArgumentException | \RuntimeException $e) {
            fwrite($stderr, 'opsgate-work: ' . $e->getMessage() . "\n");
            return 2;
        }
        try {
            $runner->run();
        } catch (ProblemException $e) {
            fwrite($stderr, 'opsgate-work: ' . $e->getMessage() . "\n");
            return 1;
        }
        return 0;
    }

    /**
     * @param list<string> $args
     * @return array<string, string>
     */
    private static function parse(array $args): array
    {
        $known = ['provider', 'url', 'token', 'handlers', 'concurrency', 'wait', 'max-runs', 'log-level', 'help'];
        $options = [];
        for ($i = 0; $i < count($args); $i++) {
            $arg = $args[$i];
            if ($arg === '-h' || $arg === '--help') {
                $options['help'] = '1';
                continue;
            }
            if (!str_starts_with($arg, '--')) {
                throw new \InvalidArgumentException(sprintf('unexpected argument %s', $arg));
            }
            [$name, $value] = explode('=', substr($arg, 2), 2) + [1 => null];
            if (!in_array($name, $known, true)) {
                throw new \InvalidArgumentException(sprintf('unknown option --%s', $name));
            }
            if ($value === null) {
                $value = $args[++$i] ?? throw new \InvalidArgumentException(sprintf('--%s needs a value', $name));
            }
            $options[$name] = $value;
        }
        return $options;
    }

    /** @param array<string, string> $options */
    private static function int(array $options, string $name, int $default): int
    {
        $value = $options[$name] ?? (string) $default;
        if (!ctype_digit($value)) {
            throw new \InvalidArgumentException(sprintf('--%s must be a whole number', $name));
        }
        return (int) $value;
    }

    /** @param array<string, string> $options */
    private static function number(array $options, string $name, float $default): float
    {
        $value = $options[$name] ?? (string) $default;
        if (!is_numeric($value)) {
            throw new \InvalidArgumentException(sprintf('--%s must be a number', $name));
        }
        return (float) $value;
    }

    /** @return array<string, callable(Job): mixed> */
    private static function loadHandlers(string $file): array
    {
        if (!is_file($file)) {
            throw new \InvalidArgumentException(sprintf('no handlers file %s', $file));
        }
        $handlers = (static fn (string $path): mixed => require $path)($file);
        if (!is_array($handlers) || $handlers === []) {
            throw new \InvalidArgumentException(sprintf('%s must return a non-empty array of operation type => callable', $file));
        }
        return $handlers;
    }
}
