package api

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// OpenAPIDocument is the OpenAPI 3 document of every endpoint: written by
// hand, the source of truth, and kept true by the API suite, which sends
// every request and answer of its tests through a validator of it
// (openapi_test.go).
//
//go:embed openapi.json
var OpenAPIDocument []byte

func serveOpenAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, OpenAPIDocument)
}
