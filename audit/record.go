// Package audit keeps the event history tamper-evident and answers its
// auditors: a hash chain over each tenant's events (chain.go), its
// verification against the database or an export (verify.go), the
// streamed export, and the history read back as of a moment or as the
// explanation of a decision (history.go, explain.go).
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/opsgate/opsgate/eventstore"
)

// ZeroHash is the prev_hash of the first event of a chain.
var ZeroHash = strings.Repeat("0", 64)

// Record is an event as auditors read it.
type Record struct {
	Position      int64           `json:"position"`
	EventID       string          `json:"event_id"`
	Stream        string          `json:"stream"`
	Version       int64           `json:"version"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Data          json.RawMessage `json:"data"`
	Metadata      Metadata        `json:"metadata"`
}

// Metadata says who caused an event and in answer to what; every member
// is present ("" for none).
type Metadata struct {
	Actor         string `json:"actor"`
	TenantID      string `json:"tenant_id"`
	CorrelationID string `json:"correlation_id"`
	CausationID   string `json:"causation_id"`
	RequestID     string `json:"request_id"`
}

// RecordOf returns e as auditors read it.
func RecordOf(e eventstore.Event) Record {
	return Record{
		Position: e.Position, EventID: e.ID, Stream: e.StreamID, Version: e.StreamVersion, Type: e.Type,
		SchemaVersion: e.SchemaVersion, RecordedAt: e.RecordedAt.UTC(), Data: e.Data, Metadata: Metadata(e.Metadata),
	}
}

// Line is an event of a chain as an export carries it: one line of
// NDJSON. Its hash is SHA-256 over the RFC 8785 canonical form of the line
// without its hash member (see README.md, "The audit chain"); prev_hash is
// the hash of the chain's event before (ZeroHash for seq 1).
type Line struct {
	Seq int64 `json:"seq"`
	Record
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash,omitempty"`
}

// Sum returns the hash of l: hex SHA-256 of the canonical form of l
// without its hash.
func (l Line) Sum() (string, error) {
	l.Hash = ""
	raw, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode event %d: %w", l.Position, err)
	}
	return sumCanonical(raw)
}

// sumCanonical returns hex SHA-256 of the RFC 8785 form of the JSON raw.
func sumCanonical(raw []byte) (string, error) {
	canonical, err := jcs.Transform(raw)
	if err != nil {
		return "", fmt.Errorf("canonical form: %w", err)
	}
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:]), nil
}

// CheckCanonical returns an error when raw has no RFC 8785 canonical form
// (a duplicate member name, a number out of the range of a double): such
// JSON cannot be chained, so it is refused where it enters.
func CheckCanonical(raw json.RawMessage) error {
	_, err := jcs.Transform(raw)
	return err
}

func hexHash(b []byte) string { return hex.EncodeToString(b) }
