package domain

import (
	"errors"
	"fmt"
)

// Errors every write-side service shares; the API maps them to problems in
// one place (api/problems.go).
var (
	// ErrNotFound means the resource does not exist, or the caller is not a
	// member of its tenant; the two are indistinguishable on purpose.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the request conflicts with existing state (a taken email).
	ErrConflict = errors.New("conflict")
)

// ForbiddenError means the caller is a member of the tenant but lacks Capability.
type ForbiddenError struct {
	Capability Capability
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("missing capability %s", e.Capability)
}

// ValidationError means a field of the request is unacceptable.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s", e.Field, e.Message)
}

// Invalid returns a *ValidationError of field.
func Invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}
