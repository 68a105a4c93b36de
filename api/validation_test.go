package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/internal/apptest"
)

// badCase is one bad request and the problem it must get.
type badCase struct {
	name         string
	method, path string
	token        string
	body         any
	headers      []apptest.Header
	status       int
	code         string
}

// TestBadInput: malformed, mistyped or unknown input is a 4xx problem
// with a stable code, never a 5xx, and records nothing.
func TestBadInput(t *testing.T) {
	f := newExclusiveFixture(t) // not parallel: checks that nothing at all is recorded
	restoreRun := f.newRestoreRun(t, `[{"name":"mailbox"}]`, true)
	f.start(t, contractSurfaces[0], startArgs{}).ExpectStart(t, "accepted")
	var session struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/tenants/"+f.tenantA+"/onboarding-sessions", f.owner.Token, nil, &session)
	bootstrap := "/api/v1/onboarding-sessions/" + session.ID + "/bootstrap"
	verify := "/api/v1/tenants/" + f.tenantA + "/verify"
	check := "/api/v1/provider-connections/" + f.connA + "/check"
	execute := "/api/v1/tenants/" + f.tenantA + "/restore-runs/" + restoreRun + "/execute"
	conns := "/api/v1/tenants/" + f.tenantA + "/provider-connections"
	connPath := "/api/v1/provider-connections/" + f.connA
	restores := "/api/v1/tenants/" + f.tenantA + "/restore-runs"
	own := f.owner.Token
	adm := apptest.AdminToken
	validConn := func(extra string) json.RawMessage {
		return json.RawMessage(`{"provider":"simulated","display_name":"X","consent":"granted","credentials":"valid"` + extra + `}`)
	}
	cases := []badCase{
		// Unknown fields.
		{"start unknown field", "POST", verify, own, `{"provider_connection":"x"}`, nil, 400, "unknown_field"},
		{"connection start with provider_connection_id", "POST", check, own, map[string]any{"provider_connection_id": f.connA}, nil, 400, "unknown_field"},
		{"non-restore start with confirm", "POST", verify, own, `{"confirm":true}`, nil, 400, "unknown_field"},
		{"restore unknown field", "POST", execute, own, `{"confirm":true,"force":true}`, nil, 400, "unknown_field"},
		{"connection unknown field", "POST", conns, own, validConn(`,"tenant_id":"x"`), nil, 400, "unknown_field"},
		{"simulation unknown field", "POST", conns, own, validConn(`,"simulation":{"latency_ms":1,"fail_with":null,"explode":true}`), nil, 400, "unknown_field"},
		{"patch unknown field", "PATCH", connPath, own, `{"is_default":true}`, nil, 400, "unknown_field"},
		{"patch simulation unknown field", "PATCH", connPath, own, `{"simulation":{"latency":1}}`, nil, 400, "unknown_field"},
		{"restore run unknown field", "POST", restores, own, `{"name":"x","items":[],"when":"now"}`, nil, 400, "unknown_field"},
		{"workspace unknown field", "POST", "/api/v1/admin/workspaces", adm, `{"name":"x","owner":"y"}`, nil, 400, "unknown_field"},
		{"membership unknown field", "POST", "/api/v1/admin/memberships", adm, `{"user_id":"` + f.owner.ID + `","tenant_id":"` + f.tenantB + `","role":"owner","admin":true}`, nil, 400, "unknown_field"},
		{"onboarding unknown field", "POST", "/api/v1/tenants/" + f.tenantA + "/onboarding-sessions", own, `{"connection":"x"}`, nil, 400, "unknown_field"},
		// Wrong types.
		{"start id as number", "POST", verify, own, `{"provider_connection_id":5}`, nil, 400, "invalid_field_type"},
		{"confirm as string", "POST", execute, own, `{"confirm":"yes"}`, nil, 400, "invalid_field_type"},
		{"is_default as string", "POST", conns, own, validConn(`,"is_default":"yes"`), nil, 400, "invalid_field_type"},
		{"latency as string", "POST", conns, own, validConn(`,"simulation":{"latency_ms":"slow","fail_with":null}`), nil, 400, "invalid_field_type"},
		{"latency overflow", "POST", conns, own, validConn(`,"simulation":{"latency_ms":1e99,"fail_with":null}`), nil, 400, "invalid_field_type"},
		{"patch enabled as string", "PATCH", connPath, own, `{"enabled":"no"}`, nil, 400, "invalid_field_type"},
		{"patch simulation as array", "PATCH", connPath, own, `{"simulation":[]}`, nil, 400, "malformed_json"},
		{"restore name as number", "POST", restores, own, `{"name":1,"items":[]}`, nil, 400, "invalid_field_type"},
		{"workspace name as object", "POST", "/api/v1/admin/workspaces", adm, `{"name":{}}`, nil, 400, "invalid_field_type"},
		{"role as number", "POST", "/api/v1/admin/memberships", adm, `{"user_id":"` + f.owner.ID + `","tenant_id":"` + f.tenantB + `","role":3}`, nil, 400, "invalid_field_type"},
		// Malformed JSON.
		{"start not an object", "POST", verify, own, `[]`, nil, 400, "malformed_json"},
		{"start null", "POST", verify, own, `null`, nil, 400, "malformed_json"},
		{"start truncated", "POST", verify, own, `{"provider_connection_id":`, nil, 400, "malformed_json"},
		{"start two objects", "POST", verify, own, `{} {}`, nil, 400, "malformed_json"},
		{"start trailing garbage", "POST", verify, own, `{}]`, nil, 400, "malformed_json"},
		{"connection empty body", "POST", conns, own, ``, nil, 400, "malformed_json"},
		{"restore run empty body", "POST", restores, own, ``, nil, 400, "malformed_json"},
		{"workspace not JSON", "POST", "/api/v1/admin/workspaces", adm, `name=x`, nil, 400, "malformed_json"},
		// Ids.
		{"start bad connection id", "POST", verify, own, `{"provider_connection_id":"not-a-ulid"}`, nil, 400, "invalid_id"},
		{"tenant path not a ULID", "POST", "/api/v1/tenants/nope/verify", own, `{}`, nil, 400, "invalid_id"},
		{"tenant path overflowing ULID", "POST", "/api/v1/tenants/8ZZZZZZZZZZZZZZZZZZZZZZZZZ/verify", own, `{}`, nil, 400, "invalid_id"},
		{"connection path not a ULID", "POST", "/api/v1/provider-connections/xyz/inventory-sync", own, nil, nil, 400, "invalid_id"},
		{"restore path not a ULID", "POST", "/api/v1/tenants/" + f.tenantA + "/restore-runs/xyz/execute", own, `{"confirm":true}`, nil, 400, "invalid_id"},
		{"run path not a ULID", "GET", "/api/v1/operations/xyz", own, nil, nil, 400, "invalid_id"},
		{"run events path not a ULID", "GET", "/api/v1/operations/U1234567890123456789012345/events", own, nil, nil, 400, "invalid_id"},
		{"cancel path not a ULID", "POST", "/api/v1/operations/xyz/cancel", own, nil, nil, 400, "invalid_id"},
		{"connection get not a ULID", "GET", "/api/v1/provider-connections/abc", own, nil, nil, 400, "invalid_id"},
		{"restore get not a ULID", "GET", "/api/v1/restore-runs/abc", own, nil, nil, 400, "invalid_id"},
		{"preview not a ULID", "POST", "/api/v1/restore-runs/abc/preview", own, nil, nil, 400, "invalid_id"},
		{"session not a ULID", "GET", "/api/v1/onboarding-sessions/abc", own, nil, nil, 400, "invalid_id"},
		{"membership bad user id", "POST", "/api/v1/admin/memberships", adm, `{"user_id":"x","tenant_id":"` + f.tenantB + `","role":"owner"}`, nil, 400, "invalid_id"},
		// Queries.
		{"unknown operation type", "GET", "/api/v1/operations?type=foo", own, nil, nil, 400, "unknown_operation_type"},
		{"unknown status", "GET", "/api/v1/operations?status=done", own, nil, nil, 400, "invalid_query"},
		{"limit zero", "GET", "/api/v1/operations?limit=0", own, nil, nil, 400, "invalid_query"},
		{"limit huge", "GET", "/api/v1/operations?limit=100000", own, nil, nil, 400, "invalid_query"},
		{"limit not a number", "GET", "/api/v1/operations?limit=ten", own, nil, nil, 400, "invalid_query"},
		{"tenant filter not a ULID", "GET", "/api/v1/operations?tenant_id=x", own, nil, nil, 400, "invalid_id"},
		{"cursor not a ULID", "GET", "/api/v1/operations?cursor=x", own, nil, nil, 400, "invalid_id"},
		{"audit without tenant", "GET", "/api/v1/audit/events", own, nil, nil, 400, "invalid_query"},
		{"audit negative after", "GET", "/api/v1/audit/events?tenant_id=" + f.tenantA + "&after=-1", own, nil, nil, 400, "invalid_query"},
		{"audit unknown after", "GET", "/api/v1/audit/events?tenant_id=" + f.tenantA + "&after=99999999", own, nil, nil, 400, "invalid_query"},
		{"notifications bad cursor", "GET", "/api/v1/me/notifications?cursor=x", own, nil, nil, 400, "invalid_id"},
		{"queue bad tenant", "GET", "/api/v1/queue?tenant_id=x", own, nil, nil, 400, "invalid_id"},
		// Headers.
		{"idempotency key too long", "POST", verify, own, `{}`, []apptest.Header{{Key: "Idempotency-Key", Value: strings.Repeat("k", 256)}}, 400, "invalid_idempotency_key"},
		// Well-formed but invalid values: 422, still nothing recorded.
		{"connection without provider", "POST", conns, own, `{"display_name":"X"}`, nil, 422, "validation_failed"},
		{"connection bad consent", "POST", conns, own, `{"provider":"simulated","display_name":"X","consent":"maybe"}`, nil, 422, "validation_failed"},
		{"simulation on a real provider", "POST", conns, own, `{"provider":"graph","display_name":"X","simulation":{"latency_ms":1,"fail_with":null}}`, nil, 422, "validation_failed"},
		{"simulation unknown reason", "POST", conns, own, validConn(`,"simulation":{"latency_ms":1,"fail_with":"nope"}`), nil, 422, "validation_failed"},
		{"patch bad credentials", "PATCH", connPath, own, `{"credentials":"great"}`, nil, 422, "validation_failed"},
		{"restore run items not an array", "POST", restores, own, `{"name":"x","items":{}}`, nil, 422, "validation_failed"},
		{"restore run without name", "POST", restores, own, `{"items":[]}`, nil, 422, "validation_failed"},
		{"workspace without name", "POST", "/api/v1/admin/workspaces", adm, `{}`, nil, 422, "validation_failed"},
		{"tenant of no workspace", "POST", "/api/v1/admin/tenants", adm, `{"workspace_id":"` + randomID() + `","name":"x"}`, nil, 422, "validation_failed"},
		{"user bad email", "POST", "/api/v1/admin/users", adm, `{"email":"nobody","name":"x"}`, nil, 422, "validation_failed"},
		{"membership bad role", "POST", "/api/v1/admin/memberships", adm, `{"user_id":"` + f.owner.ID + `","tenant_id":"` + f.tenantB + `","role":"king"}`, nil, 422, "validation_failed"},
		{"onboarding session on an unknown connection", "POST", "/api/v1/tenants/" + f.tenantA + "/onboarding-sessions", own, `{"provider_connection_id":"` + randomID() + `"}`, nil, 404, "not_found"},
		{"bootstrap unknown operation", "POST", bootstrap, own, `{"operations":["inventory.sync","nope"]}`, nil, 400, "unknown_operation_type"},
		{"bootstrap operations as string", "POST", bootstrap, own, `{"operations":"inventory.sync"}`, nil, 400, "invalid_field_type"},
		{"bootstrap unknown field", "POST", bootstrap, own, `{"operations":[],"all":true}`, nil, 400, "unknown_field"},
	}
	for _, c := range cases {
		f.unchanged(t, c.name, func() {
			r := f.Call(t, c.method, c.path, c.token, c.body, c.headers...)
			if r.Status != c.status {
				t.Errorf("%s: %s, want %d %s", c.name, r, c.status, c.code)
				return
			}
			if c.code != "" {
				r.ExpectProblem(t, c.status, c.code)
			}
		})
	}

	// Operation type filters accept the write-time and the canonical name.
	groups := f.newConnection(t, f.tenantA, own, conn{})
	f.waitRun(t, f.start(t, contractSurfaces[1], startArgs{conn: groups}).ExpectStart(t, "accepted").Run.ID)
	var legacy, canonical struct {
		Items []apptest.Run `json:"items"`
	}
	f.Must(t, 200, "GET", "/api/v1/operations?type=entra_group_sync", own, nil, &legacy)
	f.Must(t, 200, "GET", "/api/v1/operations?type=directory.groups.sync", own, nil, &canonical)
	if len(legacy.Items) == 0 || len(legacy.Items) != len(canonical.Items) {
		t.Errorf("type filter: %d runs by write-time type, %d by canonical name", len(legacy.Items), len(canonical.Items))
	}
}

// TestBodyTooLarge: bodies over 1 MiB get 413, with and without a
// Content-Length, and record nothing.
func TestBodyTooLarge(t *testing.T) {
	f := newExclusiveFixture(t) // not parallel: checks that nothing at all is recorded
	restoreRun := f.newRestoreRun(t, `[{"name":"mailbox"}]`, true)
	// A JSON object just over the limit: the decoder would accept it whole.
	big := func() []byte {
		pad := strings.Repeat("a", api.MaxBodyBytes)
		return []byte(`{"provider_connection_id":"` + pad + `"}`)
	}
	paths := []struct{ method, path, token string }{
		{"POST", "/api/v1/tenants/" + f.tenantA + "/verify", f.owner.Token},
		{"POST", "/api/v1/provider-connections/" + f.connA + "/inventory-sync", f.owner.Token},
		{"POST", "/api/v1/tenants/" + f.tenantA + "/restore-runs/" + restoreRun + "/execute", f.owner.Token},
		{"POST", "/api/v1/tenants/" + f.tenantA + "/provider-connections", f.owner.Token},
		{"PATCH", "/api/v1/provider-connections/" + f.connA, f.owner.Token},
		{"POST", "/api/v1/tenants/" + f.tenantA + "/restore-runs", f.owner.Token},
		{"POST", "/api/v1/restore-runs/" + restoreRun + "/preview", f.owner.Token},
		{"POST", "/api/v1/admin/workspaces", apptest.AdminToken},
	}
	for _, p := range paths {
		f.unchanged(t, "413 with Content-Length on "+p.path, func() {
			f.Call(t, p.method, p.path, p.token, big()).ExpectProblem(t, 413, "payload_too_large")
		})
		f.unchanged(t, "413 chunked on "+p.path, func() {
			// An io.Reader body is sent chunked, without Content-Length.
			r := f.Call(t, p.method, p.path, p.token, io.MultiReader(bytes.NewReader(big())))
			r.ExpectProblem(t, 413, "payload_too_large")
		})
	}
	// Exactly at the limit is still read (and then judged on its content).
	atLimit := append([]byte(`{"provider_connection_id":"`), bytes.Repeat([]byte("a"), api.MaxBodyBytes-29)...)
	atLimit = append(atLimit, '"', '}')
	if len(atLimit) != api.MaxBodyBytes {
		t.Fatalf("at-limit body is %d bytes", len(atLimit))
	}
	f.Call(t, "POST", paths[0].path, f.owner.Token, atLimit).ExpectProblem(t, 400, "invalid_id")
}

// TestPanicIsProblem: a panic in a handler is a 500 problem with a
// request id, logged, and the server keeps serving.
func TestPanicIsProblem(t *testing.T) {
	t.Parallel()
	logs := &apptest.Logs{}
	e := api.NewEcho(api.Config{
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Ready:  api.Health{},
		Routes: func(e *echo.Echo) {
			e.GET("/boom", func(echo.Context) error { panic("kaboom") })
			e.POST("/boom-after-read", func(c echo.Context) error {
				_, _ = io.ReadAll(c.Request().Body)
				var runs []string
				return errors.New(runs[len(runs)]) // index out of range: a runtime error panic
			})
		},
	})
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	for _, tc := range []struct{ method, path, reqID string }{
		{"GET", "/boom", ""},
		{"GET", "/boom", "client-chosen-id"},
		{"POST", "/boom-after-read", ""},
	} {
		req, _ := http.NewRequest(tc.method, hs.URL+tc.path, strings.NewReader(`{}`))
		if tc.reqID != "" {
			req.Header.Set(echo.HeaderXRequestID, tc.reqID)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := apptest.Reply{Method: tc.method, Path: tc.path, Status: resp.StatusCode, Header: resp.Header, Body: body}
		p := r.ExpectProblem(t, 500, "internal")
		id := resp.Header.Get(echo.HeaderXRequestID)
		if id == "" || (tc.reqID != "" && id != tc.reqID) {
			t.Errorf("%s: X-Request-Id %q (sent %q)", tc.path, id, tc.reqID)
		}
		if !strings.Contains(p.Detail, id) {
			t.Errorf("%s: detail %q does not quote the request id %s", tc.path, p.Detail, id)
		}
		if strings.Contains(string(body), "kaboom") || strings.Contains(string(body), "nil map") {
			t.Errorf("%s: the panic value leaks into the answer: %s", tc.path, body)
		}
		if !strings.Contains(logs.String(), "request_id="+id) || !strings.Contains(logs.String(), "panic") {
			t.Errorf("%s: the panic was not logged with its request id:\n%s", tc.path, logs.String())
		}
	}
	// Still serving.
	resp, err := hs.Client().Get(hs.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after panics: %v %v", resp, err)
	}
	resp.Body.Close()
}
