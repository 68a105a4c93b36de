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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
// is present ("" for none) but via, which is present only for an event
// recorded through an integration.
type Metadata struct {
	Actor         string `json:"actor"`
	TenantID      string `json:"tenant_id"`
	CorrelationID string `json:"correlation_id"`
	CausationID   string `json:"causation_id"`
	RequestID     string `json:"request_id"`
	Via           string `json:"via,omitempty"`
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
	// tree is the tree hashes stored with the link (verification reads
	// them; an export does not carry them).
	tree []byte
}

// Sum returns the hash of l: hex SHA-256 of the canonical form of l
// without its hash. The envelope's members are written in their canonical
// order directly; only the event's data goes through the general RFC 8785
// transform (the chainer spends its time here: see
// BenchmarkLineSum). TestSumIsTheCanonicalForm holds it to the general
// transform of the whole line.
func (l Line) Sum() (string, error) {
	buf, err := l.appendCanonical(make([]byte, 0, 384+2*len(l.Data)))
	if err != nil {
		return "", fmt.Errorf("encode event %d: %w", l.Position, err)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

// maxExact is the largest integer a double, and so RFC 8785, holds
// exactly.
const maxExact = 1 << 53

// appendCanonical appends the RFC 8785 form of l without its hash: the
// members sorted by name, no white space, strings escaped as ECMAScript
// does.
func (l Line) appendCanonical(b []byte) ([]byte, error) {
	for _, n := range []int64{l.Seq, l.Position, l.Version, int64(l.SchemaVersion)} {
		if n > maxExact || n < -maxExact {
			return nil, fmt.Errorf("%d is out of the range of exact integers", n)
		}
	}
	data := []byte("null")
	if l.Data != nil {
		var err error
		if data, err = jcs.Transform(l.Data); err != nil {
			return nil, fmt.Errorf("canonical form of data: %w", err)
		}
	}
	b = append(b, `{"data":`...)
	b = append(b, data...)
	b = appendMember(b, "event_id", l.EventID)
	b = append(b, `,"metadata":{"actor":`...)
	b = appendString(b, l.Metadata.Actor)
	b = appendMember(b, "causation_id", l.Metadata.CausationID)
	b = appendMember(b, "correlation_id", l.Metadata.CorrelationID)
	b = appendMember(b, "request_id", l.Metadata.RequestID)
	b = appendMember(b, "tenant_id", l.Metadata.TenantID)
	if l.Metadata.Via != "" {
		b = appendMember(b, "via", l.Metadata.Via)
	}
	b = append(b, `},"position":`...)
	b = strconv.AppendInt(b, l.Position, 10)
	b = appendMember(b, "prev_hash", l.PrevHash)
	b = append(b, `,"recorded_at":"`...)
	b = l.RecordedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","schema_version":`...)
	b = strconv.AppendInt(b, int64(l.SchemaVersion), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, l.Seq, 10)
	b = appendMember(b, "stream", l.Stream)
	b = appendMember(b, "type", l.Type)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, l.Version, 10)
	return append(b, '}'), nil
}

// appendMember appends ,"name":"value" for a name that needs no escaping.
func appendMember(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendString appends s as an RFC 8785 string: only the quote, the
// backslash and control characters are escaped, with the short forms
// where JSON has them; bytes that are not UTF-8 become U+FFFD, as
// encoding/json makes them.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
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
