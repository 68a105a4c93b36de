package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
)

// otlpSink is a collector-less OTLP/HTTP endpoint on loopback: it accepts
// every export and keeps only counts, so that -tracing measures what
// making and exporting spans costs opsgate, not a collector.
type otlpSink struct {
	exports, bytes atomic.Int64
}

// startOTLPSink serves the sink and points the servers this bench starts
// at it (they inherit its environment).
func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("OTLP sink: %w", err)
	}
	s := &otlpSink{}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			s.exports.Add(1)
			s.bytes.Add(n)
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK)
		}))
	}()
	if err := os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String()); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *otlpSink) summary() string {
	return fmt.Sprintf("spans exported to a local OTLP sink: %d exports, %d KiB", s.exports.Load(), s.bytes.Load()>>10)
}
