package apptest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/opsgate/opsgate/api"
)

// The strict variant of the OpenAPI document (api.StrictDocument), loaded
// and checked once per test binary.
var openAPI struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// OpenAPI returns the strict variant of the OpenAPI document, every route
// the application serves included, validated as a document, and its
// router.
func OpenAPI(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	openAPI.once.Do(func() {
		strict, err := api.StrictDocument(api.OpenAPIDocument)
		if err != nil {
			openAPI.err = err
			return
		}
		doc, err := openapi3.NewLoader().LoadFromData(strict)
		if err != nil {
			openAPI.err = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			openAPI.err = err
			return
		}
		openAPI.doc = doc
		openAPI.router, openAPI.err = gorillamux.NewRouter(doc)
	})
	if openAPI.err != nil {
		t.Fatalf("the OpenAPI document: %v", openAPI.err)
	}
	return openAPI.doc, openAPI.router
}

// checkOpenAPI checks one exchange against the OpenAPI document: the
// route must be described (unless the server answered that there is no
// such route), the answer's status and body must be, and a request the
// document refuses must not have been accepted.
func checkOpenAPI(t testing.TB, req *http.Request, body []byte, r Reply) {
	t.Helper()
	_, router := OpenAPI(t)
	req = req.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := router.FindRoute(req)
	if err != nil {
		if r.Status == http.StatusNotFound || r.Status == http.StatusMethodNotAllowed {
			return // a route that exists in neither
		}
		t.Errorf("openapi: %s: the document describes no such route (%v)", r, err)
		return
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && r.Status < 400 {
		t.Errorf("openapi: %s: the server accepted a request the document refuses: %v", r, err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.Status, Header: r.Header,
		Body: io.NopCloser(bytes.NewReader(r.Body)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("openapi: %s: the document does not describe this answer: %v", r, err)
	}
}
