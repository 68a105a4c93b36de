// Package journal is how the write-side services record a change: the
// state row and the event that records it go to the database in one
// transaction, the event carrying who asked and in answer to what. It sits
// below every service (tenancy, connections, restores, the gate,
// onboarding), so that none of them needs another's internals to record.
package journal

import (
	"context"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// Clock returns the time a change is recorded at.
type Clock func() time.Time

// SystemClock is the wall clock in UTC at microsecond precision (what
// PostgreSQL keeps), so that a time read back equals the one recorded.
func SystemClock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// NewID returns a new ULID.
func NewID() string { return ulid.Make().String() }

// Meta is the metadata of the events of a change that by asked for, on
// tenantID ("" for none), correlated with correlationID (the run, the
// connection, the session... it concerns).
func Meta(by domain.Actor, tenantID, correlationID string) eventstore.Metadata {
	return eventstore.Metadata{Actor: by.ID, RequestID: by.RequestID, CausationID: by.CausedBy,
		TenantID: tenantID, CorrelationID: correlationID, Via: by.Via}
}

// Append appends events to stream with md, after whatever the stream holds.
func Append(ctx context.Context, tx *eventstore.Tx, stream domain.StreamID, md eventstore.Metadata, events ...domain.Event) error {
	payloads := make([]eventstore.Payload, len(events))
	for i, e := range events {
		payloads[i] = e
	}
	if _, err := tx.Append(ctx, stream.String(), eventstore.Records(md, payloads...)); err != nil {
		return fmt.Errorf("record %s on %s: %w", events[0].EventType(), stream, err)
	}
	return nil
}

// Lock takes stream's transaction lock: changes to what it records are
// serialised from here to the commit.
func Lock(ctx context.Context, tx *eventstore.Tx, stream domain.StreamID) error {
	return tx.Lock(ctx, stream.String())
}
