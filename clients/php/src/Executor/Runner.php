<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Http\AbortedException;
use Opsgate\Http\TransportException;
use Opsgate\ProblemException;

/**
 * An opsgate executor: claims runs with a long poll, runs each with the
 * handler registered for its operation type while a forked heartbeat
 * process keeps its lease, and completes it with the lease's epoch. The
 * PHP twin of the Go executorclient.Runner.
 *
 *     $runner = new Runner(
 *         new ExecutorClient('https://opsgate.example', getenv('OPSGATE_EXECUTOR_TOKEN')),
 *         handlers: [
 *             'inventory.sync' => fn (Job $job) => ['devices' => $inventory->sync($job->connection()->id)],
 *             '*' => fn (Job $job) => throw RunFailed::unavailable('not implemented here'),
 *         ],
 *     );
 *     $runner->run(); // until SIGTERM/SIGINT; the run in hand is finished first
 *
 * Handlers. One callable per operation type, looked up by the run's type
 * as written (entra_group_sync), then its canonical type
 * (directory.groups.sync), then "*". It gets a {@see Job} and returns a
 * {@see Result}, an array (success with that summary) or null (success).
 * If it throws, the run ends failed: with the reason of a
 * {@see FailsWithReason} exception ({@see RunFailed}), otherwise with
 * $defaultFailure (provider.unavailable: the catalog has no generic
 * "executor error" reason), the message in the summary. A run of a type
 * without a handler fails the same way.
 *
 * The lease. While the handler runs, a forked child heartbeats (see
 * {@see Heartbeat} for why a process and not SIGALRM or ticks). When a
 * heartbeat is answered 409 lease_lost (an operator cancelled the run, it
 * ran past its finish_by, it was reaped), the child stops and
 * {@see Job::leaseLost()} turns true; whatever the handler then returns is
 * dropped: the run is not completed.
 *
 * Stopping. On SIGTERM or SIGINT (or {@see stop()}), the runner stops
 * claiming (a long poll in progress is abandoned at once), lets the
 * running handlers finish, completes their runs, and run() returns. While
 * a handler runs in this process the two signals are blocked, so that they
 * do not cut its sleep() or a system call short; they take effect when it
 * returns.
 *
 * Concurrency. PHP runs one handler at a time per process. With
 * $concurrency 1 (the default) handlers run in this process, so they can
 * use the application's state (a framework's container, its database
 * connection). With more, each claimed run is handled in a forked child
 * process: a handler must then open its own connections (a child must not
 * use a PDO connection its parent opened), and the child ends without
 * PHP's shutdown, so that it does not close its parent's resources.
 */
final class Runner
{
    private readonly \Closure $log;
    /** @var array<string, \Closure(Job): mixed> */
    private array $handlers = [];
    private bool $stopping = false;
    private float $backoff;
    /** @var array<int, string> forked worker pid => run id */
    private array $children = [];

    /**
     * @param array<string, callable(Job): mixed> $handlers operation type (or "*") => handler
     * @param int $concurrency how many runs are handled at once (above 1: in forked processes)
     * @param float $wait seconds a claim waits for work when none is queued (0..30)
     * @param list<string>|null $providers the providers this runner serves: a run claimed for
     *        another one (the executor's registration lists more) is failed at once rather than
     *        handed to handlers written for another provider; null: any
     * @param int|null $maxRuns stop after handing out this many runs (null: until stopped)
     * @param bool $handleSignals install SIGTERM/SIGINT handlers for the duration of run();
     *        false when the application handles signals and calls stop() itself
     * @param callable(string, string, array<string, mixed>): void|null $logger
     *        (level, message, context), e.g. a PSR-3 logger's log(...)
     * @param float $backoff first pause after a 5xx or a network error (doubling up to $maxBackoff)
     */
    public function __construct(
        private readonly ExecutorClient $client,
        array $handlers,
        private readonly int $concurrency = 1,
        private readonly float $wait = 20.0,
        private readonly ?array $providers = null,
        private readonly ?int $maxRuns = null,
        private readonly bool $handleSignals = true,
        ?callable $logger = null,
        private readonly ExecutionReason $defaultFailure = ExecutionReason::Unavailable,
        private readonly float $initialBackoff = 0.2,
        private readonly float $maxBackoff = 10.0,
    ) {
        foreach (['pcntl_fork', 'posix_kill'] as $function) {
            if (!function_exists($function)) {
                throw new \RuntimeException(sprintf('the executor runner needs %s() (the pcntl and posix extensions of PHP\'s CLI)', $function));
            }
        }
        if ($concurrency < 1 || $concurrency > 100) {
            throw new \InvalidArgumentException('concurrency is 1..100');
        }
        if ($wait < 0 || $wait > 30) {
            throw new \InvalidArgumentException('wait is 0..30 seconds');
        }
        foreach ($handlers as $type => $handler) {
            if (!is_string($type) || !is_callable($handler)) {
                throw new \InvalidArgumentException('handlers are operation type => callable');
            }
            $this->handlers[$type] = \Closure::fromCallable($handler);
        }
        $this->log = $logger !== null ? \Closure::fromCallable($logger) : static function (): void {
        };
        $this->backoff = $initialBackoff;
    }

    /**
     * Claims and handles runs until stopped (or $maxRuns were handed out),
     * then lets the runs in hand finish and reports them.
     *
     * @return int the number of runs handed to handlers
     * @throws ProblemException when opsgate refuses the claims for good (401: a revoked token)
     */
    public function run(): int
    {
        $this->stopping = false;
        $restore = $this->handleSignals ? $this->installSignalHandlers() : null;
        ($this->log)('info', 'runner started', ['concurrency' => $this->concurrency, 'wait_s' => $this->wait]);
        try {
            $handed = $this->concurrency === 1 ? $this->loopInline() : $this->loopForked();
        } finally {
            while ($this->children !== []) {
                $this->reap(true);
            }
            if ($restore !== null) {
                $restore();
            }
        }
        ($this->log)('info', 'runner stopped', ['runs' => $handed]);
        return $handed;
    }

    /**
     * Stops claiming; run() returns once the runs in hand are completed.
     * Safe to call from a signal handler or from a handler.
     */
    public function stop(): void
    {
        $this->stopping = true;
    }

    private function loopInline(): int
    {
        $handed = 0;
        while (!$this->stopping && ($this->maxRuns === null || $handed < $this->maxRuns)) {
            foreach ($this->claim(1) as $claim) {
                $handed++;
                $this->withStopSignalsDeferred(fn () => $this->handle($claim));
            }
        }
        return $handed;
    }

    private function loopForked(): int
    {
        $handed = 0;
        while (!$this->stopping && ($this->maxRuns === null || $handed < $this->maxRuns)) {
            $this->reap(false);
            $free = $this->concurrency - count($this->children);
            if ($this->maxRuns !== null) {
                $free = min($free, $this->maxRuns - $handed);
            }
            if ($free <= 0) {
                $this->reap(true); // a signal interrupts the wait
                continue;
            }
            foreach ($this->claim($free) as $claim) {
                $handed++;
                $this->spawn($claim);
            }
        }
        return $handed;
    }

    /** Handles $claim in a forked worker process. */
    private function spawn(Claim $claim): void
    {
        $pid = pcntl_fork();
        if ($pid === -1) {
            ($this->log)('error', 'cannot fork a worker; handling the run here', ['run_id' => $claim->run->id]);
            $this->handle($claim);
            return;
        }
        if ($pid === 0) {
            Process::ignoreStopSignals();
            $this->children = [];
            try {
                $this->handle($claim);
            } catch (\Throwable $e) {
                ($this->log)('error', 'handling the run failed', ['run_id' => $claim->run->id, 'error' => $e->getMessage()]);
            } finally {
                Process::vanish();
            }
        }
        $this->children[$pid] = $claim->run->id;
    }

    private function reap(bool $block): void
    {
        $pid = pcntl_waitpid(-1, $status, $block ? 0 : WNOHANG);
        if ($pid > 0) {
            unset($this->children[$pid]);
        } elseif ($pid === -1 && pcntl_get_last_error() === PCNTL_ECHILD) {
            $this->children = []; // reaped elsewhere
        }
    }

    /**
     * One claim call with the runner's backoff: an empty list after an
     * error worth retrying, or when told to stop during the long poll.
     *
     * @return list<Claim>
     */
    private function claim(int $max): array
    {
        try {
            $claims = $this->client->claim($max, $this->wait, fn (): bool => $this->stopping);
            $this->backoff = $this->initialBackoff;
            return $claims;
        } catch (AbortedException) {
            return [];
        } catch (ProblemException $e) {
            if (!$e->isTemporary()) {
                ($this->log)('error', 'claims refused', ['status' => $e->status, 'code' => $e->problemCode, 'error' => $e->detail]);
                throw $e;
            }
            $pause = max($this->backoff, $e->retryAfter ?? 0.0);
            ($this->log)('warning', 'claiming failed; backing off', ['status' => $e->status, 'code' => $e->problemCode, 'backoff_s' => $pause]);
        } catch (TransportException $e) {
            $pause = $this->backoff;
            ($this->log)('warning', 'claiming failed; backing off', ['error' => $e->getMessage(), 'backoff_s' => $pause]);
        }
        $this->pause($pause);
        $this->backoff = min(2 * $this->backoff, $this->maxBackoff);
        return [];
    }

    /**
     * Runs one claim: the handler under a heartbeat, then the completion,
     * retried while the lease holds.
     */
    private function handle(Claim $claim): void
    {
        $context = ['run_id' => $claim->run->id, 'epoch' => $claim->lease->epoch, 'type' => $claim->run->type];
        ($this->log)('info', 'run claimed', $context);
        $heartbeat = Heartbeat::start($this->client, $claim, $this->log);
        try {
            $result = $this->execute($claim, new Job($claim, $heartbeat), $context);
            if ($result === null || $heartbeat->lost()) {
                ($this->log)('warning', 'lease lost; result dropped', $context + ['detail' => $heartbeat->lostDetail()]);
                return;
            }
            $this->complete($claim, $result, $heartbeat, $context);
        } finally {
            $heartbeat->stop();
        }
    }

    /**
     * The handler's result, or null when it threw LeaseLostException.
     *
     * @param array<string, mixed> $context
     */
    private function execute(Claim $claim, Job $job, array $context): ?Result
    {
        $provider = $claim->connection->provider;
        if ($this->providers !== null && !in_array($provider, $this->providers, true)) {
            ($this->log)('error', 'claimed a run of a provider this runner does not serve; failing it', $context + ['provider' => $provider]);
            return Result::failed($this->defaultFailure, ['error' => sprintf('claimed by a runner for %s, not %s: register one executor per provider', implode(', ', $this->providers), $provider)]);
        }
        $handler = $this->handlers[$claim->run->type] ?? $this->handlers[$claim->run->canonicalType] ?? $this->handlers['*'] ?? null;
        if ($handler === null) {
            ($this->log)('error', 'no handler for the run\'s type; failing it', $context);
            return Result::failed($this->defaultFailure, ['error' => sprintf('no handler for operation type %s', $claim->run->type)]);
        }
        try {
            return Result::from($handler($job));
        } catch (LeaseLostException) {
            return null;
        } catch (\Throwable $e) {
            ($this->log)('warning', 'handler failed', $context + ['error' => $e->getMessage(), 'exception' => $e::class]);
            return Result::fromThrowable($e, $this->defaultFailure);
        }
    }

    /** @param array<string, mixed> $context */
    private function complete(Claim $claim, Result $result, Heartbeat $heartbeat, array $context): void
    {
        $backoff = $this->initialBackoff;
        while (true) {
            try {
                $this->client->complete($claim->run->id, $claim->lease->epoch, $result);
                ($this->log)('info', 'run completed', $context + ['status' => $result->succeeded ? 'succeeded' : 'failed', 'reason' => $result->reason?->value]);
                return;
            } catch (ProblemException $e) {
                if ($e->isLeaseLost() || !$e->isTemporary()) {
                    ($this->log)('warning', 'completion refused', $context + ['status' => $e->status, 'code' => $e->problemCode, 'error' => $e->detail]);
                    return;
                }
                $error = $e->getMessage();
            } catch (TransportException $e) {
                $error = $e->getMessage();
            }
            ($this->log)('warning', 'completing failed; trying again while the lease holds', $context + ['error' => $error]);
            usleep((int) ($backoff * 1_000_000));
            $backoff = min(2 * $backoff, $this->maxBackoff);
            if ($heartbeat->lost()) {
                ($this->log)('warning', 'lease lost while completing; result dropped', $context);
                return;
            }
        }
    }

    /**
     * Runs $fn with SIGTERM and SIGINT blocked (when the runner handles
     * them): a stop asked meanwhile waits until the handler has returned
     * and its run is completed, instead of interrupting its sleep() or a
     * system call.
     */
    private function withStopSignalsDeferred(\Closure $fn): void
    {
        if (!$this->handleSignals) {
            $fn();
            return;
        }
        pcntl_sigprocmask(SIG_BLOCK, [SIGTERM, SIGINT], $previous);
        try {
            $fn();
        } finally {
            pcntl_sigprocmask(SIG_SETMASK, $previous);
            pcntl_signal_dispatch();
        }
    }

    /** @return \Closure(): void restores the previous handlers */
    private function installSignalHandlers(): \Closure
    {
        $async = pcntl_async_signals(true);
        $previous = [];
        foreach ([SIGTERM => 'SIGTERM', SIGINT => 'SIGINT'] as $signal => $name) {
            $previous[$signal] = pcntl_signal_get_handler($signal);
            // restart_syscalls false: a blocking wait (waitpid, select) returns at once.
            pcntl_signal($signal, function () use ($name): void {
                if (!$this->stopping) {
                    ($this->log)('info', "{$name}: stopping after the runs in hand", []);
                }
                $this->stop();
            }, false);
        }
        return static function () use ($previous, $async): void {
            foreach ($previous as $signal => $handler) {
                pcntl_signal($signal, $handler);
            }
            pcntl_async_signals($async);
        };
    }

    /** Sleeps $seconds, or less when told to stop. */
    private function pause(float $seconds): void
    {
        $until = microtime(true) + $seconds;
        while (!$this->stopping && ($left = $until - microtime(true)) > 0) {
            usleep((int) (min($left, 0.1) * 1_000_000));
        }
    }
}
