<?php

/**
 * The demo handlers of bin/opsgate-work (its default --handlers): every
 * operation type succeeds after a short pause (OPSGATE_DEMO_SECONDS,
 * default 1), reporting what it was given. A real handlers file has the
 * same shape: operation type (as written, or canonical, or "*") =>
 * callable(Job): Result|array|null.
 *
 *     return [
 *         'inventory.sync' => [new App\Opsgate\InventorySync($graph), 'handle'],
 *         'provider.connection.check' => function (Job $job): Result {
 *             $ok = $graph->canSignIn($job->connection()->id);
 *             return $ok
 *                 ? Result::succeeded(['checked' => true], observations: ['consent' => 'granted', 'credentials' => 'valid'])
 *                 : throw RunFailed::credentialsRejected('Graph refused the app registration');
 *         },
 *     ];
 */

declare(strict_types=1);

use Opsgate\Executor\Job;

return [
    '*' => static function (Job $job): array {
        $seconds = (float) (getenv('OPSGATE_DEMO_SECONDS') ?: 1);
        $until = microtime(true) + $seconds;
        while (microtime(true) < $until) {
            $job->ensureLease(); // stop early if the run was cancelled
            usleep(100_000);
        }
        return [
            'demo' => true,
            'type' => $job->run()->canonicalType,
            'connection' => $job->connection()->displayName,
            'heartbeats' => $job->heartbeats(),
        ];
    },
];
