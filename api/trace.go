package api

import (
	"net/http"
	"strings"

	"github.com/opsgate/opsgate/domain"
)

// traceContextOf returns the W3C trace context of req (traceparent and
// tracestate), or nil when it has none or a malformed traceparent: a bad
// header starts no error, the start simply has no trace to continue
// (contract section 16).
func traceContextOf(req *http.Request) *domain.TraceContext {
	parent := strings.TrimSpace(req.Header.Get("traceparent"))
	if !validTraceparent(parent) {
		return nil
	}
	tc := &domain.TraceContext{Traceparent: strings.ToLower(parent)}
	if state := strings.TrimSpace(req.Header.Get("tracestate")); len(state) <= 512 {
		tc.Tracestate = state
	}
	return tc
}

// validTraceparent checks the W3C format version-traceid-parentid-flags:
// 2, 32, 16 and 2 hex digits, a version other than ff, and ids not all
// zero (a later version may append fields after a dash).
func validTraceparent(v string) bool {
	parts := strings.Split(v, "-")
	if len(parts) < 4 || (parts[0] == "00" && len(parts) != 4) {
		return false
	}
	for i, n := range []int{2, 32, 16, 2} {
		if len(parts[i]) != n || strings.Trim(strings.ToLower(parts[i]), "0123456789abcdef") != "" {
			return false
		}
	}
	return strings.ToLower(parts[0]) != "ff" && strings.Trim(parts[1], "0") != "" && strings.Trim(parts[2], "0") != ""
}
