<?php

declare(strict_types=1);

namespace Opsgate\Executor;

use Opsgate\Http\TransportException;
use Opsgate\ProblemException;

/**
 * The heartbeat of one claimed run: a forked child process that extends
 * the lease every heartbeat_interval_ms while the handler works in the
 * parent, and tells the parent over a socket pair what happened.
 *
 * Why a forked child and not SIGALRM or ticks in the handler's process:
 * a handler spends its time in blocking C calls (a curl request to Graph,
 * a PDO query, sleep()). Tick functions never run inside such a call, so a
 * 60 s request would starve a 30 s lease. A SIGALRM handler with
 * pcntl_async_signals() also runs only when the engine gets control back;
 * and worse, the signal interrupts the handler's sleep()/usleep() (they
 * return early) and makes its system calls fail with EINTR, and the
 * heartbeat's own HTTP request would run re-entrantly in the middle of the
 * handler's code. A child process is independent of whatever the handler
 * does: it beats on time during any blocking call, it never touches the
 * handler's state, and the parent stops it with one signal. It only needs
 * pcntl_fork() (the CLI has it; php-fpm does not, which is why the runner
 * is a CLI program).
 *
 * The child
 * - ignores SIGTERM/SIGINT (a Ctrl-C to the process group must not stop
 *   the beats of a run whose handler is still finishing),
 * - stops when it gets 409 lease_lost (cancelled, reaped, timed out):
 *   it reports "lost" and exits; other errors are logged and the next
 *   beat tries again,
 * - exits when its parent is gone (so a killed runner leaves no orphan
 *   holding a lease for work nobody does),
 * - is stopped by the parent with SIGKILL once the run is completed,
 * - ends without running PHP's shutdown ({@see Process::vanish()}).
 *
 * @internal
 */
final class Heartbeat
{
    private int $beats = 0;
    private bool $lost = false;
    private string $lostDetail = '';
    private bool $running = true;
    private string $buffer = '';
    private \DateTimeImmutable $expiresAt;

    /** @param resource $pipe */
    private function __construct(
        private readonly int $pid,
        private $pipe,
        Lease $lease,
    ) {
        $this->expiresAt = $lease->expiresAt;
    }

    /**
     * Forks the heartbeat of $claim.
     *
     * @param \Closure(string, string, array<string, mixed>): void $log
     */
    public static function start(ExecutorClient $client, Claim $claim, \Closure $log): self
    {
        $pair = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        if ($pair === false) {
            throw new \RuntimeException('cannot create the heartbeat pipe');
        }
        [$parentEnd, $childEnd] = $pair;
        $parent = posix_getpid();
        $pid = pcntl_fork();
        if ($pid === -1) {
            throw new \RuntimeException('cannot fork the heartbeat process: ' . pcntl_strerror(pcntl_get_last_error()));
        }
        if ($pid === 0) {
            fclose($parentEnd);
            self::beat($client, $claim, $childEnd, $parent, $log);
        }
        fclose($childEnd);
        stream_set_blocking($parentEnd, false);
        return new self($pid, $parentEnd, $claim->lease);
    }

    /**
     * The child's loop; never returns.
     *
     * @param resource $pipe
     * @param \Closure(string, string, array<string, mixed>): void $log
     */
    private static function beat(ExecutorClient $client, Claim $claim, $pipe, int $parent, \Closure $log): never
    {
        Process::ignoreStopSignals();
        $every = max(0.05, $claim->lease->heartbeatIntervalMs / 1000);
        $runId = $claim->run->id;
        $epoch = $claim->lease->epoch;
        $next = microtime(true) + $every;
        while (true) {
            while (($left = $next - microtime(true)) > 0) {
                usleep((int) (min($left, 0.5) * 1_000_000));
                if (posix_getppid() !== $parent) {
                    Process::vanish(); // the runner is gone: let the lease lapse
                }
            }
            $next += $every;
            if ($next < microtime(true)) {
                $next = microtime(true) + $every; // a slow beat: do not try to catch up
            }
            try {
                $expires = $client->heartbeat($runId, $epoch);
                $line = 'beat ' . $expires->format(\DateTimeInterface::RFC3339_EXTENDED);
            } catch (ProblemException $e) {
                if ($e->isLeaseLost()) {
                    @fwrite($pipe, 'lost ' . str_replace("\n", ' ', $e->detail) . "\n");
                    Process::vanish();
                }
                $log('warning', 'heartbeat refused; trying again at the next beat', ['run_id' => $runId, 'status' => $e->status, 'code' => $e->problemCode, 'error' => $e->detail]);
                continue;
            } catch (TransportException $e) {
                $log('warning', 'heartbeat failed; trying again at the next beat', ['run_id' => $runId, 'error' => $e->getMessage()]);
                continue;
            } catch (\Throwable $e) {
                $log('error', 'heartbeat failed', ['run_id' => $runId, 'error' => $e->getMessage()]);
                continue;
            }
            if (@fwrite($pipe, $line . "\n") === false) {
                Process::vanish(); // the parent closed its end
            }
        }
    }

    /** Reads what the child reported since the last look. */
    public function poll(): void
    {
        if (!is_resource($this->pipe)) {
            return;
        }
        while (($chunk = @fread($this->pipe, 8192)) !== false && $chunk !== '') {
            $this->buffer .= $chunk;
        }
        while (($eol = strpos($this->buffer, "\n")) !== false) {
            $line = substr($this->buffer, 0, $eol);
            $this->buffer = substr($this->buffer, $eol + 1);
            [$kind, $rest] = explode(' ', $line, 2) + [1 => ''];
            if ($kind === 'beat') {
                $this->beats++;
                try {
                    $this->expiresAt = new \DateTimeImmutable($rest);
                } catch (\Exception) {
                }
            } elseif ($kind === 'lost') {
                $this->lost = true;
                $this->lostDetail = $rest;
            }
        }
        if ($this->running && pcntl_waitpid($this->pid, $status, WNOHANG) === $this->pid) {
            $this->running = false;
        }
    }

    /** Stops the child (if it still runs), waits for it and reads its last words. */
    public function stop(): void
    {
        if ($this->running) {
            posix_kill($this->pid, SIGKILL);
            while (pcntl_waitpid($this->pid, $status) === -1 && pcntl_get_last_error() === PCNTL_EINTR) {
            }
            $this->running = false;
        }
        $this->poll();
        if (is_resource($this->pipe)) {
            fclose($this->pipe);
        }
    }

    /** Whether a heartbeat was answered 409 lease_lost. */
    public function lost(): bool
    {
        $this->poll();
        return $this->lost;
    }

    /** What opsgate said when it refused the lease (cancelled, timed out, ...). */
    public function lostDetail(): string
    {
        return $this->lostDetail;
    }

    /** The number of heartbeats opsgate accepted. */
    public function beats(): int
    {
        $this->poll();
        return $this->beats;
    }

    /** The lease's expiry as of the last accepted heartbeat. */
    public function expiresAt(): \DateTimeImmutable
    {
        $this->poll();
        return $this->expiresAt;
    }

    /** Whether the heartbeat process still runs. */
    public function running(): bool
    {
        $this->poll();
        return $this->running;
    }
}
