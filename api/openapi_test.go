package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// apiDoc is the served OpenAPI document; every answer the tests receive
// through testServer.call is checked against it: its status must be
// documented for the route, with the answer's content type, and the body
// must match the documented schema.
type apiDoc struct {
	raw     map[string]any
	schemas map[string]any
	paths   []docPath
}

type docPath struct {
	template string
	re       *regexp.Regexp
	item     map[string]any
}

var (
	docParam    = regexp.MustCompile(`\{[A-Za-z]+\}`)
	quotedParam = regexp.MustCompile(`\\\{[A-Za-z]+\\\}`)
)

// loadDoc fetches GET /api/v1/openapi.json from s.
func loadDoc(s *testServer) (*apiDoc, error) {
	resp, err := s.client.Get(s.URL + "/api/v1/openapi.json")
	if err != nil {
		return nil, fmt.Errorf("get openapi.json: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get openapi.json: %d %s %v", resp.StatusCode, raw, err)
	}
	if mt := mediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, fmt.Errorf("openapi.json served as %q", mt)
	}
	v, err := decodeNumbers(raw)
	if err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	doc := &apiDoc{raw: v.(map[string]any)}
	comps, _ := doc.raw["components"].(map[string]any)
	doc.schemas, _ = comps["schemas"].(map[string]any)
	paths, _ := doc.raw["paths"].(map[string]any)
	for p, item := range paths {
		// QuoteMeta escapes the braces of {param}.
		re := regexp.MustCompile("^" + quotedParam.ReplaceAllString(regexp.QuoteMeta(p), "[^/]+") + "$")
		doc.paths = append(doc.paths, docPath{template: p, re: re, item: item.(map[string]any)})
	}
	return doc, nil
}

func decodeNumbers(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

// operation returns the documented operation of method on a concrete path.
func (d *apiDoc) operation(method, path string) (string, map[string]any) {
	path, _, _ = strings.Cut(path, "?")
	for _, p := range d.paths {
		if p.re.MatchString(path) {
			op, _ := p.item[strings.ToLower(method)].(map[string]any)
			return p.template, op
		}
	}
	return "", nil
}

// check validates one answer against the document. Answers to paths or
// methods that are not routes at all are not checked.
func (d *apiDoc) check(t *testing.T, r reply) {
	t.Helper()
	for _, msg := range d.problems(r) {
		t.Errorf("openapi: %s %s -> %d: %s\nbody: %s", r.Method, r.Path, r.Status, msg, truncate(r.Body))
	}
}

func truncate(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "..."
	}
	return string(b)
}

func (d *apiDoc) problems(r reply) []string {
	if d == nil {
		return nil
	}
	template, op := d.operation(r.Method, r.Path)
	if op == nil {
		return nil
	}
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[fmt.Sprint(r.Status)].(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("status %d is not documented for %s %s", r.Status, r.Method, template)}
	}
	content, _ := resp["content"].(map[string]any)
	mt := mediaType(r.Header.Get("Content-Type"))
	media, ok := content[mt].(map[string]any)
	if !ok {
		var documented []string
		for k := range content {
			documented = append(documented, k)
		}
		sort.Strings(documented)
		return []string{fmt.Sprintf("content type %q is not documented for status %d of %s %s (documented: %v)", mt, r.Status, r.Method, template, documented)}
	}
	if mt != "application/json" && mt != "application/problem+json" {
		return nil
	}
	v, err := decodeNumbers(r.Body)
	if err != nil {
		return []string{fmt.Sprintf("body is not JSON: %v", err)}
	}
	return d.validate(media["schema"], v, "body")
}

// validate checks v against schema: $ref into components.schemas, type
// (object, array, string, integer, boolean, number), nullable, enum,
// required, properties (undocumented properties are reported too), items
// and the date-time format.
func (d *apiDoc) validate(schemaAny any, v any, at string) []string {
	schema, ok := schemaAny.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: schema is %T, not an object", at, schemaAny)}
	}
	if ref, ok := schema["$ref"].(string); ok {
		name, found := strings.CutPrefix(ref, "#/components/schemas/")
		target, exists := d.schemas[name]
		if !found || !exists {
			return []string{fmt.Sprintf("%s: unresolvable $ref %q", at, ref)}
		}
		return d.validate(target, v, at)
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		alts, ok := schema[key].([]any)
		if !ok {
			continue
		}
		var all []string
		for _, alt := range alts {
			errs := d.validate(alt, v, at)
			if len(errs) == 0 {
				return nil
			}
			all = append(all, errs...)
		}
		return append([]string{fmt.Sprintf("%s: matches none of %s", at, key)}, all...)
	}
	typ, _ := schema["type"].(string)
	if v == nil {
		if schema["nullable"] == true || typ == "" {
			return nil
		}
		return []string{fmt.Sprintf("%s: null, but the schema is not nullable", at)}
	}
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if reflect.DeepEqual(e, v) {
				found = true
			}
		}
		if !found {
			return []string{fmt.Sprintf("%s: %v is not one of %v", at, v, enum)}
		}
	}
	var errs []string
	switch typ {
	case "":
		return nil
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %T, want object", at, v)}
		}
		if req, ok := schema["required"].([]any); ok {
			for _, k := range req {
				if _, ok := obj[k.(string)]; !ok {
					errs = append(errs, fmt.Sprintf("%s: required property %q missing", at, k))
				}
			}
		}
		props, hasProps := schema["properties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := props[k]
			if !ok {
				if hasProps && len(props) > 0 {
					errs = append(errs, fmt.Sprintf("%s: property %q is not documented", at, k))
				}
				continue
			}
			errs = append(errs, d.validate(ps, obj[k], at+"."+k)...)
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %T, want array", at, v)}
		}
		if items, ok := schema["items"]; ok {
			for i, e := range arr {
				errs = append(errs, d.validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case "string":
		s, ok := v.(string)
		if !ok {
			return []string{fmt.Sprintf("%s: %T, want string", at, v)}
		}
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not a date-time", at, s))
			}
		}
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return []string{fmt.Sprintf("%s: %T, want integer", at, v)}
		}
		if _, err := n.Int64(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %s is not an integer", at, n))
		}
	case "number":
		if _, ok := v.(json.Number); !ok {
			return []string{fmt.Sprintf("%s: %T, want number", at, v)}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return []string{fmt.Sprintf("%s: %T, want boolean", at, v)}
		}
	default:
		errs = append(errs, fmt.Sprintf("%s: unknown schema type %q", at, typ))
	}
	return errs
}

// registeredRoutes lists the application's routes as "METHOD /openapi/{path}",
// without echo's internal not-found routes.
func registeredRoutes(e *echo.Echo) map[string]*echo.Route {
	out := map[string]*echo.Route{}
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound || r.Path == "/*" || strings.HasSuffix(r.Path, "/*") {
			continue
		}
		out[r.Method+" "+openAPIPath(r.Path)] = r
	}
	return out
}

var echoParam = regexp.MustCompile(`:([A-Za-z]+)`)

func openAPIPath(p string) string { return echoParam.ReplaceAllString(p, "{$1}") }

// TestOpenAPICoversRoutes: every registered route is documented, every
// documented operation is a route, path parameters are declared, every
// $ref resolves, and problems are documented as application/problem+json.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	s := server(t)
	doc := s.doc
	if v, _ := doc.raw["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Errorf("openapi version %q", v)
	}
	registered := registeredRoutes(s.Echo)
	documented := map[string]map[string]any{}
	for _, p := range doc.paths {
		for method, op := range p.item {
			documented[strings.ToUpper(method)+" "+p.template] = op.(map[string]any)
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
		path := strings.SplitN(key, " ", 2)[1]
		declared := map[string]bool{}
		params, _ := op["parameters"].([]any)
		for _, p := range params {
			pm := p.(map[string]any)
			if pm["in"] == "path" {
				declared[pm["name"].(string)] = true
			}
		}
		for _, m := range docParam.FindAllString(path, -1) {
			if !declared[strings.Trim(m, "{}")] {
				t.Errorf("%s: path parameter %s is not declared", key, m)
			}
		}
		responses, _ := op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s documents no responses", key)
		}
		for status, resp := range responses {
			content, _ := resp.(map[string]any)["content"].(map[string]any)
			for mt, media := range content {
				ref, _ := media.(map[string]any)["schema"].(map[string]any)["$ref"].(string)
				if ref == "#/components/schemas/Problem" && mt != "application/problem+json" {
					t.Errorf("%s %s: Problem documented as %s", key, status, mt)
				}
			}
		}
	}
	// Every $ref in the document resolves.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				name, found := strings.CutPrefix(ref, "#/components/schemas/")
				if _, exists := doc.schemas[name]; !found || !exists {
					t.Errorf("%s: unresolvable $ref %q", at, ref)
				}
			}
			for k, e := range x {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(doc.raw, "#")
	if len(registered) < 30 {
		t.Errorf("only %d routes registered; the route listing looks wrong", len(registered))
	}
}

// TestSchemaValidatorRejects makes sure the validator the other tests rely
// on is not vacuous.
func TestSchemaValidatorRejects(t *testing.T) {
	t.Parallel()
	s := server(t)
	start := `{"outcome":"accepted","run":{"id":"x","tenant_id":"t","type":"a","canonical_type":"a","label":"A","status":"queued",
		"target":null,"provider_connection":null,"initiator_id":"u","surface":"s","created_at":"2024-01-01T00:00:00Z",
		"started_at":null,"finished_at":null,"reason":null,"links":{"self":"/api/v1/operations/x"}},
		"reason":null,"next_steps":[],"message":{"title":"t","body":"b","tone":"success"}}`
	ref := map[string]any{"$ref": "#/components/schemas/StartResult"}
	valid, _ := decodeNumbers([]byte(start))
	if errs := s.doc.validate(ref, valid, "body"); len(errs) > 0 {
		t.Fatalf("valid StartResult rejected: %v", errs)
	}
	for name, mutate := range map[string]func(m map[string]any){
		"missing outcome":   func(m map[string]any) { delete(m, "outcome") },
		"bad outcome":       func(m map[string]any) { m["outcome"] = "maybe" },
		"null message":      func(m map[string]any) { m["message"] = nil },
		"bad tone":          func(m map[string]any) { m["message"].(map[string]any)["tone"] = "loud" },
		"run without links": func(m map[string]any) { delete(m["run"].(map[string]any), "links") },
		"number as string":  func(m map[string]any) { m["run"].(map[string]any)["id"] = json.Number("1") },
		"bad date":          func(m map[string]any) { m["run"].(map[string]any)["created_at"] = "yesterday" },
		"extra property":    func(m map[string]any) { m["surprise"] = true },
		"steps not array":   func(m map[string]any) { m["next_steps"] = map[string]any{} },
	} {
		v, _ := decodeNumbers([]byte(start))
		mutate(v.(map[string]any))
		if errs := s.doc.validate(ref, v, "body"); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
}
