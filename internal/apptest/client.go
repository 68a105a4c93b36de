package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Reply is an HTTP answer of the application.
type Reply struct {
	Method, Path string
	Status       int
	Header       http.Header
	Body         []byte
}

// String is the exchange and its answer, for failure messages.
func (r Reply) String() string {
	return fmt.Sprintf("%s %s -> %d %s", r.Method, r.Path, r.Status, r.Body)
}

// Decode decodes the body into dst.
func (r Reply) Decode(t testing.TB, dst any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, dst); err != nil {
		t.Fatalf("%s: decode: %v", r, err)
	}
}

// Object decodes the body as a JSON object.
func (r Reply) Object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s: body is not a JSON object: %v", r, err)
	}
	return m
}

// Problem is an application/problem+json body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// ExpectProblem checks r is a problem with status and code.
func (r Reply) ExpectProblem(t testing.TB, status int, code string) Problem {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want status %d (%s)", r, status, code)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s: content type %q, want application/problem+json", r, ct)
	}
	var p Problem
	r.Decode(t, &p)
	if p.Code != code || p.Status != status || p.Title == "" || p.Detail == "" || p.Type == "" {
		t.Fatalf("%s: want problem code %q status %d with type, title and detail", r, code, status)
	}
	return p
}

// ExpectStatus checks r's status.
func (r Reply) ExpectStatus(t testing.TB, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want status %d", r, status)
	}
}

// Header is an extra request header.
type Header struct{ Key, Value string }

// Send sends a request to the application's API and returns the answer.
// body is nil (none), []byte or string (sent as is), io.Reader (sent
// chunked) or anything else (sent as JSON). Every exchange is checked
// against the OpenAPI document the application serves (openapi.go): an
// answer whose route, status or body it does not describe fails the test,
// and so does a request it refuses that the server accepted.
func (a *App) Send(t testing.TB, method, path, token string, body any, headers ...Header) Reply {
	t.Helper()
	var raw []byte
	chunked := false
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	case io.Reader:
		var err error
		if raw, err = io.ReadAll(b); err != nil {
			t.Fatalf("read body: %v", err)
		}
		chunked = true
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatalf("encode body: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Body = io.NopCloser(bytes.NewReader(raw))
		req.ContentLength = int64(len(raw))
		if chunked {
			req.ContentLength = -1 // no length: sent chunked
		}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		req.Header.Set(h.Key, h.Value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := Reply{Method: method, Path: path, Status: resp.StatusCode, Header: resp.Header, Body: got}
	checkOpenAPI(t, req, raw, r)
	return r
}

// Call is Send for answers that must not be 5xx: a server error fails the
// test, with what the application logged about the request.
func (a *App) Call(t testing.TB, method, path, token string, body any, headers ...Header) Reply {
	t.Helper()
	r := a.Send(t, method, path, token, body, headers...)
	if r.Status >= 500 {
		t.Errorf("%s: server error; its log:\n%s", r, a.Logs.With(r.Header.Get("X-Request-Id")))
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s: no X-Request-Id", r)
	}
	return r
}

// Must calls and requires status; it decodes the answer into dst (nil:
// not at all).
func (a *App) Must(t testing.TB, status int, method, path, token string, body, dst any) Reply {
	t.Helper()
	r := a.Call(t, method, path, token, body)
	if r.Status != status {
		t.Fatalf("%s: want %d", r, status)
	}
	if dst != nil {
		r.Decode(t, dst)
	}
	return r
}

// AuditTrail reads the audit trail of tenantID over the API as token, page
// by page, once it lists every event of the tenant the store holds: the
// trail lists only events below the oldest transaction in flight anywhere
// in the cluster (so that paging never skips one), and tests of other
// packages share the cluster, so it may lag for a moment.
func (a *App) AuditTrail(t testing.TB, tenantID, token string) []AuditEvent {
	t.Helper()
	var events []AuditEvent
	WaitFor(t, 30*time.Second, "the audit trail of tenant "+tenantID+" to list every stored event", func() bool {
		stored := a.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, tenantID)
		events = nil
		for after := ""; ; {
			var page struct {
				Items     []AuditEvent `json:"items"`
				NextAfter *int64       `json:"next_after"`
			}
			a.Must(t, 200, "GET", "/api/v1/audit/events?limit=200&tenant_id="+tenantID+after, token, nil, &page)
			events = append(events, page.Items...)
			if page.NextAfter == nil {
				return len(events) == stored
			}
			after = "&after=" + strconv.FormatInt(*page.NextAfter, 10)
		}
	})
	return events
}
