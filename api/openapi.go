package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// OpenAPIDocument is the OpenAPI 3 document of every route: written by
// hand and the one source of the two documents derived from it.
//
//   - PublishedDocument, served at /api/v1/openapi.json and the input of
//     generated clients: the source without the routes marked x-internal
//     (the console's pages, /metrics). Its answers are open to additions
//     (no additionalProperties: false on what only answers carry, change
//     types as x-extensible-enum), so that a client generated today keeps
//     working when a field or a type is added (contract section 16).
//   - StrictDocument, which the API suite checks every request and answer
//     of its tests against (internal/apptest/openapi.go): the source with
//     every object closed and every x-extensible-enum a closed enum, so
//     that an undocumented field or value fails a test.
//
//go:embed openapi.json
var OpenAPIDocument []byte

// PublishedDocument returns the document clients are given: src without
// the operations marked x-internal, and without the tags and components
// only they used.
func PublishedDocument(src []byte) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("published document: %w", err)
	}
	paths, _ := doc["paths"].(map[string]any)
	used := map[string]bool{}
	for path, item := range paths {
		ops, _ := item.(map[string]any)
		for method, op := range ops {
			if o, ok := op.(map[string]any); ok && o["x-internal"] == true {
				delete(ops, method)
				continue
			}
			if tags, ok := op.(map[string]any)["tags"].([]any); ok {
				for _, t := range tags {
					used[fmt.Sprint(t)] = true
				}
			}
		}
		if len(ops) == 0 {
			delete(paths, path)
		}
	}
	if tags, ok := doc["tags"].([]any); ok {
		kept := tags[:0]
		for _, t := range tags {
			if m, ok := t.(map[string]any); ok && used[fmt.Sprint(m["name"])] {
				kept = append(kept, t)
			}
		}
		doc["tags"] = kept
	}
	pruneComponents(doc)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("published document: %w", err)
	}
	return append(out, '\n'), nil
}

// pruneComponents removes the components nothing left refers to, until
// none is left to remove.
func pruneComponents(doc map[string]any) {
	components, _ := doc["components"].(map[string]any)
	for {
		refs := map[string]bool{}
		collectRefs(map[string]any{"paths": doc["paths"], "components": doc["components"]}, refs, "")
		removed := false
		for kind, group := range components {
			if kind == "securitySchemes" {
				continue // referred to by name, not by $ref
			}
			items, _ := group.(map[string]any)
			for name := range items {
				if !refs["#/components/"+kind+"/"+name] {
					delete(items, name)
					removed = true
				}
			}
		}
		if !removed {
			return
		}
	}
}

// collectRefs gathers the $refs under v, but a component's references to
// itself.
func collectRefs(v any, refs map[string]bool, self string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if r, ok := x.(string); ok && k == "$ref" && r != self {
				refs[r] = true
			}
			if k == "components" {
				for kind, group := range x.(map[string]any) {
					items, _ := group.(map[string]any)
					for name, item := range items {
						collectRefs(item, refs, "#/components/"+kind+"/"+name)
					}
				}
				continue
			}
			collectRefs(x, refs, self)
		}
	case []any:
		for _, x := range v {
			collectRefs(x, refs, self)
		}
	}
}

// StrictDocument returns src closed for checking exchanges: every object
// schema with properties and no additionalProperties refuses others, and
// every x-extensible-enum is an enum.
func StrictDocument(src []byte) ([]byte, error) {
	var doc any
	if err := json.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("strict document: %w", err)
	}
	closeSchemas(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("strict document: %w", err)
	}
	return out, nil
}

func closeSchemas(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"].(map[string]any); ok && v["type"] == "object" {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		if values, ok := v["x-extensible-enum"]; ok {
			v["enum"] = values
			delete(v, "x-extensible-enum")
		}
		for _, x := range v {
			closeSchemas(x)
		}
	case []any:
		for _, x := range v {
			closeSchemas(x)
		}
	}
}

// serveOpenAPI serves the published document.
func serveOpenAPI() echo.HandlerFunc {
	doc, err := PublishedDocument(OpenAPIDocument)
	if err != nil {
		panic(err) // the embedded source does not parse: TestPublishedDocument fails first
	}
	return func(c echo.Context) error {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, doc)
	}
}
