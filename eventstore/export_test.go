package eventstore

import (
	"context"
	"encoding/json"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Conveniences of the tests of this package; production code appends
// through Tx.Append with explicit metadata.

// Append appends payloads without metadata to stream in a transaction of
// its own, checking that the stream is at expectedVersion (AnyVersion
// skips the check).
func (s *Store) Append(ctx context.Context, stream string, expectedVersion int64, payloads ...Payload) ([]Event, error) {
	var out []Event
	err := s.InTx(ctx, func(ctx context.Context, tx *Tx) error {
		var err error
		out, err = tx.AppendPayloads(ctx, stream, expectedVersion, payloads...)
		return err
	})
	return out, err
}

// AppendPayloads appends payloads without metadata, checking that the
// stream is at expectedVersion (AnyVersion skips the check).
func (t *Tx) AppendPayloads(ctx context.Context, stream string, expectedVersion int64, payloads ...Payload) ([]Event, error) {
	return t.Append(ctx, stream, Records(Metadata{}, payloads...), ExpectVersion(expectedVersion))
}

// WithStreamLock runs fn in one transaction that first takes stream's lock.
func (s *Store) WithStreamLock(ctx context.Context, stream string, fn func(ctx context.Context, tx *Tx) error) error {
	return s.InTx(ctx, func(ctx context.Context, tx *Tx) error {
		if err := tx.Lock(ctx, stream); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
}

// ReadAll returns up to limit events of every tenant after the event at
// afterPosition, in the order of ReadTenant.
func (s *Store) ReadAll(ctx context.Context, afterPosition int64, limit int) ([]Event, error) {
	return s.readAll(ctx, "", afterPosition, limit)
}

// StreamVersion returns the version of stream's newest event, 0 for none.
func (t *Tx) StreamVersion(ctx context.Context, stream string) (int64, error) {
	return t.streamVersion(ctx, stream)
}

// MessageOf is the message a subscriber delivers for e.
func MessageOf(e Event) *message.Message {
	md, err := json.Marshal(e.Metadata)
	if err != nil {
		panic(err)
	}
	return messageOf(e, md)
}
