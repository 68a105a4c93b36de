<?php

declare(strict_types=1);

namespace Opsgate\Http;

/**
 * HTTP/1.1 over PHP's own socket streams (`stream_socket_client`, `tcp://`
 * or `tls://`): no curl, no extension beyond openssl for https.
 *
 * Why not `file_get_contents()` with an http stream context: it cannot be
 * interrupted. A runner waiting in a 20 s long poll for work must stop at
 * once when told to (SIGTERM from a supervisor that SIGKILLs after 10 s),
 * so this transport reads the answer in short `stream_select()` slices and
 * checks the request's abort callback between them. Each request opens
 * its own connection (`Connection: close`): nothing is shared between a
 * process and the children the executor runner forks.
 *
 * TLS peers are verified by default; pass `['cafile' => ...]` or other
 * `ssl` context options to adjust.
 */
final class StreamTransport implements Transport
{
    /**
     * @param float $connectTimeout seconds to establish the connection (and TLS)
     * @param array<string, mixed> $sslOptions extra options of the `ssl` stream context
     * @param float $pollSlice seconds between two looks at the abort callback
     */
    public function __construct(
        private readonly float $connectTimeout = 10.0,
        private readonly array $sslOptions = [],
        private readonly float $pollSlice = 0.2,
    ) {
    }

    public function send(Request $request): Response
    {
        $deadline = microtime(true) + $request->timeout;
        $url = parse_url($request->url);
        if ($url === false || !isset($url['scheme'], $url['host'])) {
            throw new \InvalidArgumentException(sprintf('not an absolute URL: %s', $request->url));
        }
        $scheme = strtolower($url['scheme']);
        if ($scheme !== 'http' && $scheme !== 'https') {
            throw new \InvalidArgumentException(sprintf('unsupported URL scheme %s (http or https)', $scheme));
        }
        $host = $url['host'];
        $port = $url['port'] ?? ($scheme === 'https' ? 443 : 80);
        $target = ($url['path'] ?? '') === '' ? '/' : $url['path'];
        if (isset($url['query'])) {
            $target .= '?' . $url['query'];
        }
        $hostHeader = $host . (isset($url['port']) ? ':' . $url['port'] : '');

        $context = stream_context_create(['ssl' => $this->sslOptions + [
            'verify_peer' => true,
            'verify_peer_name' => true,
            'peer_name' => trim($host, '[]'),
            'SNI_enabled' => true,
        ]]);
        $remote = ($scheme === 'https' ? 'tls://' : 'tcp://') . $host . ':' . $port;
        $errno = 0;
        $errstr = '';
        $socket = @stream_socket_client(
            $remote,
            $errno,
            $errstr,
            max(0.001, min($this->connectTimeout, $deadline - microtime(true))),
            STREAM_CLIENT_CONNECT,
            $context,
        );
        if ($socket === false) {
            throw new TransportException(sprintf('%s %s: cannot connect to %s: %s (%d)', $request->method, $request->url, $remote, $errstr ?: 'unknown error', $errno));
        }
        try {
            $this->write($socket, $request, $target, $hostHeader, $deadline);
            $raw = $this->read($socket, $request, $deadline);
        } finally {
            fclose($socket);
        }
        return $this->parse($raw, $request);
    }

    /** @param resource $socket */
    private function write($socket, Request $request, string $target, string $host, float $deadline): void
    {
        $headers = ['Host' => $host, 'Connection' => 'close'];
        foreach ($request->headers as $name => $value) {
            if (preg_match('/[\r\n]/', $name . $value) === 1) {
                throw new \InvalidArgumentException(sprintf('header %s has a line break', $name));
            }
            $headers[$name] = $value;
        }
        if ($request->body !== null) {
            $headers['Content-Length'] = (string) strlen($request->body);
        }
        $out = sprintf("%s %s HTTP/1.1\r\n", $request->method, $target);
        foreach ($headers as $name => $value) {
            $out .= $name . ': ' . $value . "\r\n";
        }
        $out .= "\r\n" . ($request->body ?? '');

        stream_set_blocking($socket, true);
        while ($out !== '') {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new TransportException(sprintf('%s %s: timed out sending the request', $request->method, $request->url));
            }
            stream_set_timeout($socket, (int) ceil($left));
            $n = @fwrite($socket, $out);
            if ($n === false || $n === 0) {
                throw new TransportException(sprintf('%s %s: the connection broke while sending', $request->method, $request->url));
            }
            $out = substr($out, $n);
        }
    }

    /** @param resource $socket */
    private function read($socket, Request $request, float $deadline): string
    {
        stream_set_blocking($socket, false);
        $raw = '';
        while (true) {
            // Read first, select after: a TLS stream may hold decrypted
            // bytes that stream_select() does not see.
            $chunk = @fread($socket, 65536);
            if ($chunk === false) {
                throw new TransportException(sprintf('%s %s: the connection broke while reading', $request->method, $request->url));
            }
            if ($chunk !== '') {
                $raw .= $chunk;
                if ($this->complete($raw)) {
                    return $raw;
                }
                continue;
            }
            if (feof($socket)) {
                return $raw;
            }
            if ($request->abort !== null && ($request->abort)()) {
                throw new AbortedException(sprintf('%s %s: abandoned', $request->method, $request->url));
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new TransportException(sprintf('%s %s: no answer within %.1f s', $request->method, $request->url, $request->timeout));
            }
            $slice = min($this->pollSlice, $left);
            $read = [$socket];
            $write = $except = null;
            // A signal interrupts the select (false, with a warning): the
            // loop then looks at the abort callback at once.
            @stream_select($read, $write, $except, (int) $slice, (int) (fmod($slice, 1.0) * 1_000_000));
        }
    }

    /** Whether $raw holds a whole answer with a Content-Length (others end at EOF). */
    private function complete(string $raw): bool
    {
        $end = strpos($raw, "\r\n\r\n");
        if ($end === false) {
            return false;
        }
        $head = substr($raw, 0, $end);
        if (preg_match('#^HTTP/\S+\s+1\d\d#', $head) === 1
            || preg_match('/^transfer-encoding:.*chunked/im', $head) === 1
            || preg_match('/^content-length:\s*(\d+)\s*$/im', $head, $m) !== 1) {
            return false;
        }
        return strlen($raw) - $end - 4 >= (int) $m[1];
    }

    private function parse(string $raw, Request $request): Response
    {
        while (true) {
            $end = strpos($raw, "\r\n\r\n");
            if ($end === false) {
                throw new TransportException(sprintf('%s %s: the answer ended before its headers did', $request->method, $request->url));
            }
            $lines = explode("\r\n", substr($raw, 0, $end));
            $body = substr($raw, $end + 4);
            if (preg_match('#^HTTP/\d(?:\.\d)?\s+(\d{3})#', $lines[0], $m) !== 1) {
                throw new TransportException(sprintf('%s %s: not an HTTP answer: %s', $request->method, $request->url, substr($lines[0], 0, 100)));
            }
            $status = (int) $m[1];
            if ($status >= 100 && $status < 200) {
                $raw = $body; // an interim answer (100 Continue, 103 Early Hints)
                continue;
            }
            break;
        }
        $headers = [];
        foreach (array_slice($lines, 1) as $line) {
            $pair = explode(':', $line, 2);
            if (count($pair) !== 2) {
                continue;
            }
            $name = strtolower(trim($pair[0]));
            $value = trim($pair[1]);
            $headers[$name] = isset($headers[$name]) ? $headers[$name] . ', ' . $value : $value;
        }
        if (str_contains(strtolower($headers['transfer-encoding'] ?? ''), 'chunked')) {
            $body = $this->dechunk($body, $request);
        } elseif (isset($headers['content-length'])) {
            $length = (int) $headers['content-length'];
            if (strlen($body) < $length) {
                throw new TransportException(sprintf('%s %s: the answer ended after %d of %d bytes', $request->method, $request->url, strlen($body), $length));
            }
            $body = substr($body, 0, $length);
        }
        return new Response($status, $headers, $body);
    }

    private function dechunk(string $body, Request $request): string
    {
        $out = '';
        $at = 0;
        while (true) {
            $eol = strpos($body, "\r\n", $at);
            if ($eol === false) {
                throw new TransportException(sprintf('%s %s: a chunked answer was cut short', $request->method, $request->url));
            }
            $size = hexdec(trim(explode(';', substr($body, $at, $eol - $at), 2)[0]));
            if (!is_int($size)) {
                throw new TransportException(sprintf('%s %s: a chunk is too large', $request->method, $request->url));
            }
            $at = $eol + 2;
            if ($size === 0) {
                return $out;
            }
            if (strlen($body) < $at + $size) {
                throw new TransportException(sprintf('%s %s: a chunked answer was cut short', $request->method, $request->url));
            }
            $out .= substr($body, $at, $size);
            $at += $size + 2;
        }
    }
}
