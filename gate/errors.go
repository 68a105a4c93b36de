package gate

import "errors"

// Errors of the start path and of the run lifecycle; the API maps them
// to problems (api/problems.go). Authorization and validation errors are
// the domain's (domain.ErrNotFound, *domain.ForbiddenError,
// *domain.ValidationError).
var (
	// ErrConfirmationRequired means a destructive start lacked confirm=true.
	ErrConfirmationRequired = errors.New("confirmation required")
	// ErrWarningsNotAcknowledged means the restore run's preview warned and the
	// start did not acknowledge the warnings.
	ErrWarningsNotAcknowledged = errors.New("warnings not acknowledged")
	// ErrIdempotencyKeyReused means the key was used before with another body.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
	// ErrLeaseLost means the worker's lease on a run is gone (reaped, cancelled,
	// or taken over); nothing it reports may count.
	ErrLeaseLost = errors.New("run lease lost")
	// ErrOverloaded means more starts wait to be decided than the process
	// queues (Service.SetStartQueue); nothing was recorded, and the start
	// may be tried again in a moment.
	ErrOverloaded = errors.New("too many starts waiting to be decided")
)
