package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Event is one stored event.
type Event struct {
	// Position is unique across the store. Positions are assigned at insert
	// time, so they are not dense and not strictly in commit order; use
	// ReadAll or a subscription to read in commit order.
	Position      int64           `json:"position"`
	StreamID      string          `json:"stream_id"`
	StreamVersion int64           `json:"stream_version"`
	ID            string          `json:"event_id"`
	Type          string          `json:"event_type"`
	SchemaVersion int             `json:"schema_version"`
	Data          json.RawMessage `json:"data"`
	Metadata      Metadata        `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
	// TxID is the PostgreSQL transaction id of the append; (TxID, Position)
	// is the order in which readers see events.
	TxID uint64 `json:"tx_id"`
}

// Metadata says who caused an event and in answer to what.
type Metadata struct {
	Actor         string `json:"actor,omitempty"`
	TenantID      string `json:"tenant_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	CausationID   string `json:"causation_id,omitempty"`
	RequestID     string `json:"request_id,omitempty"`
	// Via is the integration the actor's request came through, if any.
	Via string `json:"via,omitempty"`
}

// Expected stream versions with a special meaning.
const (
	// AnyVersion skips the optimistic concurrency check.
	AnyVersion int64 = -1
	// NoStream expects the stream not to exist yet.
	NoStream int64 = 0
)

var (
	// ErrVersionConflict is matched by every *VersionConflictError.
	ErrVersionConflict = errors.New("stream version conflict")
	// ErrUnknownEventType means a payload type was never registered.
	ErrUnknownEventType = errors.New("unknown event type")
	// ErrUnknownPosition means ReadAll was given a position no event has.
	ErrUnknownPosition = errors.New("unknown event position")
)

// VersionConflictError reports an append whose expected version did not
// match the stream.
type VersionConflictError struct {
	Stream   string
	Expected int64
	Actual   int64
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("stream %s: expected version %d, found %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrVersionConflict) true.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }
