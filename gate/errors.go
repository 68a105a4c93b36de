package gate

import (
	"errors"
	"fmt"

	"github.com/opsgate/opsgate/domain"
)

var (
	// ErrNotFound: the resource does not exist, or the caller is not a
	// member of its tenant; the two are indistinguishable on purpose.
	ErrNotFound = errors.New("not found")
	// ErrConfirmationRequired: a destructive start lacked confirm=true.
	ErrConfirmationRequired = errors.New("confirmation required")
	// ErrWarningsNotAcknowledged: the restore run's preview warned and the
	// start did not acknowledge the warnings.
	ErrWarningsNotAcknowledged = errors.New("warnings not acknowledged")
	// ErrIdempotencyKeyReused: the key was used before with another body.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
	// ErrConflict: the request conflicts with existing state (a taken email).
	ErrConflict = errors.New("conflict")
	// ErrLeaseLost: the worker's lease on a run is gone (reaped, cancelled,
	// or taken over); nothing it reports may count.
	ErrLeaseLost = errors.New("run lease lost")
)

// ForbiddenError: the caller is a member of the tenant but lacks Capability.
type ForbiddenError struct {
	Capability domain.Capability
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("missing capability %s", e.Capability)
}

// ValidationError: a field of the request is unacceptable.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s", e.Field, e.Message)
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}
