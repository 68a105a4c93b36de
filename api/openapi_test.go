package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/internal/apptest"
)

// Every exchange of the API suite goes through the test kit, which checks
// it against the strict variant of the OpenAPI document (every route, every
// object closed) with kin-openapi's openapi3filter
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

// TestOpenAPIServedIsPublished: GET /api/v1/openapi.json answers the
// published document, as JSON: every operation named after its action
// and tagged by area, no console or metrics route, and the copy beside
// the generated Go client is the same document.
func TestOpenAPIServedIsPublished(t *testing.T) {
	t.Parallel()
	s := server(t)
	r := s.Call(t, "GET", "/api/v1/openapi.json", "", nil)
	r.ExpectStatus(t, 200)
	if mt := mediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("openapi.json served as %q", mt)
	}
	published, err := api.PublishedDocument(api.OpenAPIDocument)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, published) {
		t.Error("the served document is not the published one")
	}
	if beside, err := os.ReadFile("../clients/go/opsgate/openapi.json"); err != nil || !bytes.Equal(beside, published) {
		t.Errorf("clients/go/opsgate/openapi.json is not the published document (%v): run make generate", err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(published)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the published document: %v", err)
	}
	tags := map[string]bool{}
	for _, tag := range doc.Tags {
		tags[tag.Name] = true
	}
	ids := map[string]string{}
	action := regexp.MustCompile(`^[a-z]+[A-Z][A-Za-z]*$`)
	for path, item := range doc.Paths.Map() {
		if path == "/metrics" || strings.HasPrefix(path, "/console") {
			t.Errorf("published: %s is not a client's route", path)
		}
		for method, op := range item.Operations() {
			key := method + " " + path
			if !action.MatchString(op.OperationID) {
				t.Errorf("published: %s has operationId %q, want a verb and its object (getOperation)", key, op.OperationID)
			}
			if other, dup := ids[op.OperationID]; dup {
				t.Errorf("published: %s and %s share operationId %q", key, other, op.OperationID)
			}
			ids[op.OperationID] = key
			if len(op.Tags) != 1 || !tags[op.Tags[0]] {
				t.Errorf("published: %s has tags %v, want one of the document's", key, op.Tags)
			}
		}
	}
	if len(ids) < 60 {
		t.Errorf("published: only %d operations", len(ids))
	}
}

// TestOpenAPIVariants: the source marks exactly the console's and the
// metrics' routes internal; the published document leaves answers open to
// additions where the strict one closes them.
func TestOpenAPIVariants(t *testing.T) {
	t.Parallel()
	var source struct {
		Paths map[string]map[string]struct {
			Internal bool `json:"x-internal"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIDocument, &source); err != nil {
		t.Fatal(err)
	}
	for path, ops := range source.Paths {
		for method, op := range ops {
			if want := path == "/metrics" || path == "/console" || strings.HasPrefix(path, "/console/"); op.Internal != want {
				t.Errorf("%s %s: x-internal %v, want %v", method, path, op.Internal, want)
			}
		}
	}
	published, err := api.PublishedDocument(api.OpenAPIDocument)
	if err != nil {
		t.Fatal(err)
	}
	strict, _ := apptest.OpenAPI(t)
	open, err := openapi3.NewLoader().LoadFromData(published)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"StartResult", "Run", "Change", "Problem"} {
		if ap := open.Components.Schemas[name].Value.AdditionalProperties.Has; ap != nil && !*ap {
			t.Errorf("published %s refuses fields it does not know", name)
		}
		if ap := strict.Components.Schemas[name].Value.AdditionalProperties.Has; ap == nil || *ap {
			t.Errorf("strict %s accepts fields the document does not name", name)
		}
	}
	types := func(doc *openapi3.T) *openapi3.Schema {
		return doc.Components.Schemas["WebhookEndpoint"].Value.Properties["types"].Value.Items.Value
	}
	if len(types(open).Enum) != 0 || types(open).Extensions["x-extensible-enum"] == nil {
		t.Error("published: a webhook endpoint's change types are a closed enum")
	}
	if len(types(strict).Enum) < 9 {
		t.Error("strict: a webhook endpoint's change types are not a closed enum")
	}
	if ap := strict.Components.Schemas["NewConnection"].Value.AdditionalProperties.Has; ap == nil || *ap {
		t.Error("strict: a request's schema accepts unknown fields")
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
