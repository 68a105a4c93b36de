<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * Sends one HTTP request and returns its answer, whatever its status.
 * The kit ships {@see StreamTransport} (no extension needed); tests and
 * applications may plug in their own (a recording double, a PSR-18
 * adapter).
 */
interface Transport
{
    /**
     * @throws TransportException when no answer arrives (refused, broken, timed out)
     * @throws AbortedException when the request's abort check said stop
     */
    public function send(Request $request): Response;
}
