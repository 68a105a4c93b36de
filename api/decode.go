package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"
)

// readBody reads the (capped) request body.
func readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return nil, err
		}
		return nil, malformed("could not read the request body: %v", err)
	}
	return body, nil
}

// decodeStrict decodes a JSON object into dst, refusing unknown fields,
// wrong types, trailing data and anything but an object. An empty body
// decodes as {} when allowEmpty.
func decodeStrict(body []byte, dst any, allowEmpty bool) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		if allowEmpty {
			return nil
		}
		return malformed("the request body is empty; send a JSON object")
	}
	if trimmed[0] != '{' {
		return malformed("the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return describeDecodeError(err)
	}
	if dec.More() {
		return malformed("the request body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("the request body holds data after the JSON object")
	}
	return nil
}

func describeDecodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return &badRequest{code: "invalid_field_type", detail: fmt.Sprintf("%s must be %s, not %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value), code4: http.StatusBadRequest}
	case errors.As(err, &syntaxErr):
		return malformed("invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return &badRequest{code: "unknown_field", detail: strings.TrimPrefix(err.Error(), "json: ") + " is not accepted here"}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return malformed("the JSON body ends early")
	}
	return malformed("invalid JSON: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64", "int32", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return goKind
}

// pathID returns path parameter name, which must be a ULID.
func pathID(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if _, err := ulid.ParseStrict(v); err != nil {
		return "", invalidID(name)
	}
	return strings.ToUpper(v), nil
}

// optionalID validates an optional id field of a body or query.
func optionalID(name, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if _, err := ulid.ParseStrict(v); err != nil {
		return "", invalidID(name)
	}
	return strings.ToUpper(v), nil
}
