package api_test

import (
	"encoding/json"
	"mime"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/internal/apptest"
)

// Every exchange of the API suite goes through the test kit, which checks
// it against the served OpenAPI document with kin-openapi's openapi3filter
// (internal/apptest/openapi.go): an undocumented route, status or body
// fails the test, and so does a request the document refuses that the
// server accepted. The tests here check the document itself.

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

// registeredRoutes returns the routes of e by "METHOD /openapi/{path}".
func registeredRoutes(e *echo.Echo) map[string]*echo.Route {
	out := map[string]*echo.Route{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound || r.Path == "/*" {
			continue
		}
		// A wildcard route serves files: the document names the file.
		out[r.Method+" "+openAPIPath(strings.Replace(r.Path, "/*", "/{file}", 1))] = r
	}
	return out
}

var echoParam = regexp.MustCompile(`:([A-Za-z]+)`)

func openAPIPath(p string) string { return echoParam.ReplaceAllString(p, "{$1}") }

// TestOpenAPIServedAsWritten: GET /api/v1/openapi.json answers the
// embedded document, as JSON.
func TestOpenAPIServedAsWritten(t *testing.T) {
	t.Parallel()
	s := server(t)
	r := s.Call(t, "GET", "/api/v1/openapi.json", "", nil)
	r.ExpectStatus(t, 200)
	if mt := mediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("openapi.json served as %q", mt)
	}
	var served map[string]any
	r.Decode(t, &served)
	if v, _ := served["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Errorf("openapi version %q", v)
	}
}

// TestOpenAPICoversRoutes: the document is valid OpenAPI, every registered
// route is documented and every documented operation is a route, and
// problems are documented as application/problem+json.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	s := server(t)
	doc, _ := apptest.OpenAPI(t) // loaded and validated (path parameters declared, $refs resolved)
	registered := registeredRoutes(echoOf(s))
	documented := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented[method+" "+path] = op
		}
	}
	for key := range registered {
		if _, ok := documented[key]; !ok {
			t.Errorf("route %s is not documented", key)
		}
	}
	for key, op := range documented {
		if _, ok := registered[key]; !ok {
			t.Errorf("documented %s is not a route", key)
		}
		if op.Responses.Len() == 0 {
			t.Errorf("%s documents no responses", key)
		}
		for status, resp := range op.Responses.Map() {
			for mt, media := range resp.Value.Content {
				if media.Schema != nil && media.Schema.Ref == "#/components/schemas/Problem" && mt != "application/problem+json" {
					t.Errorf("%s %s: Problem documented as %s", key, status, mt)
				}
			}
		}
	}
	if len(registered) < 30 {
		t.Errorf("only %d routes registered; the route listing looks wrong", len(registered))
	}
}

// TestSchemaValidatorRejects makes sure the validation the other tests
// rely on is not vacuous: the document's StartResult refuses what a
// StartResult must not be.
func TestSchemaValidatorRejects(t *testing.T) {
	t.Parallel()
	doc, _ := apptest.OpenAPI(t)
	schema := doc.Components.Schemas["StartResult"].Value
	start := `{"outcome":"accepted","run":{"id":"x","tenant_id":"t","type":"a","canonical_type":"a","label":"A","status":"queued",
		"target":null,"provider_connection":null,"initiator_id":"u","surface":"s","created_at":"2024-01-01T00:00:00Z",
		"started_at":null,"finished_at":null,"reason":null,"deadlines":null,"rerun_of":null,"links":{"self":"/api/v1/operations/x"}},
		"reason":null,"next_steps":[],"message":{"title":"t","body":"b","tone":"success"}}`
	decode := func() map[string]any {
		var v map[string]any
		if err := json.Unmarshal([]byte(start), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := schema.VisitJSON(decode()); err != nil {
		t.Fatalf("valid StartResult rejected: %v", err)
	}
	for name, mutate := range map[string]func(m map[string]any){
		"missing outcome":   func(m map[string]any) { delete(m, "outcome") },
		"bad outcome":       func(m map[string]any) { m["outcome"] = "maybe" },
		"null message":      func(m map[string]any) { m["message"] = nil },
		"bad tone":          func(m map[string]any) { m["message"].(map[string]any)["tone"] = "loud" },
		"run without links": func(m map[string]any) { delete(m["run"].(map[string]any), "links") },
		"number as string":  func(m map[string]any) { m["run"].(map[string]any)["id"] = 1.0 },
		"bad date":          func(m map[string]any) { m["run"].(map[string]any)["created_at"] = "yesterday" },
		"extra property":    func(m map[string]any) { m["surprise"] = true },
		"steps not array":   func(m map[string]any) { m["next_steps"] = map[string]any{} },
	} {
		v := decode()
		mutate(v)
		if err := schema.VisitJSON(v); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
