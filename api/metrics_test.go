package api_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

var (
	ulidLike    = regexp.MustCompile(`[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}`)
	metricLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
	metricLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func parseMetrics(t *testing.T, text string) []sample {
	t.Helper()
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsable metrics line %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range metricLabel.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

// TestMetrics: request counts by route pattern (never raw ids), start
// outcomes by type, queue depth and projector lag.
func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	inv := contractSurfaces[5]
	c := f.newConnection(t, f.tenantA, f.owner.Token, conn{})
	run := f.start(t, inv, startArgs{conn: c}).ExpectStart(t, "accepted").Run.ID
	f.start(t, inv, startArgs{conn: c}).ExpectStart(t, "deduped")
	f.waitRun(t, run)
	f.Must(t, 200, "GET", "/api/v1/operations/"+run, f.owner.Token, nil, nil)
	f.Call(t, "GET", "/api/v1/operations/"+randomID(), f.owner.Token, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/no-such-thing/"+randomID(), f.owner.Token, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/nowhere/"+randomID(), "", nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "DELETE", "/api/v1/operations/"+randomID(), f.owner.Token, nil)

	r := f.Call(t, "GET", "/metrics", "", nil)
	r.ExpectStatus(t, 200)
	samples := parseMetrics(t, string(r.Body))

	routes := map[string]bool{"unmatched": true}
	for _, rt := range echoOf(f.App).Routes() {
		routes[rt.Path] = true
	}
	has := func(name string, labels map[string]string) bool {
		for _, s := range samples {
			if s.name != name {
				continue
			}
			ok := true
			for k, v := range labels {
				if s.labels[k] != v {
					ok = false
				}
			}
			if ok && s.value > 0 || ok && (name == "opsgate_queue_depth" || name == "opsgate_projector_lag_seconds") {
				return true
			}
		}
		return false
	}
	for _, s := range samples {
		for k, v := range s.labels {
			if ulidLike.MatchString(v) {
				t.Errorf("%s has a raw id in label %s=%q", s.name, k, v)
			}
		}
		if strings.HasPrefix(s.name, "opsgate_http_request") {
			if route := s.labels["route"]; !routes[route] {
				t.Errorf("%s: route label %q is no route pattern", s.name, route)
			}
		}
	}
	for _, want := range []struct {
		name   string
		labels map[string]string
	}{
		{"opsgate_http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/operations/:runId", "status": "200"}},
		{"opsgate_http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/operations/:runId", "status": "404"}},
		{"opsgate_http_requests_total", map[string]string{"method": "POST", "route": "/api/v1/provider-connections/:connectionId/inventory-sync", "status": "202"}},
		{"opsgate_http_request_duration_seconds_count", map[string]string{"method": "POST", "route": "/api/v1/provider-connections/:connectionId/inventory-sync"}},
		{"opsgate_starts_total", map[string]string{"outcome": "accepted", "type": "inventory.sync"}},
		{"opsgate_starts_total", map[string]string{"outcome": "deduped", "type": "inventory.sync"}},
		{"opsgate_queue_depth", map[string]string{"status": "queued"}},
		{"opsgate_queue_depth", map[string]string{"status": "running"}},
		{"opsgate_projector_lag_seconds", map[string]string{"projector": "operations"}},
		{"opsgate_projector_lag_seconds", map[string]string{"projector": "queue"}},
		{"opsgate_projector_lag_seconds", map[string]string{"projector": "notifications"}},
	} {
		if !has(want.name, want.labels) {
			t.Errorf("metrics lack %s%v", want.name, want.labels)
		}
	}
	if r.Header.Get(echo.HeaderXRequestID) == "" {
		t.Errorf("/metrics answered without X-Request-Id")
	}
}
