// Package eventstore is opsgate's append-only event log on PostgreSQL and
// the feed that reads it.
//
// Writing. Store.InTx runs a READ COMMITTED transaction (a Tx). A writer
// takes the transaction locks of the streams it changes first (Tx.Lock, or
// QueueLocks to lock several streams, or to try them without waiting, in
// the round trip that reads what they guard), then appends: Tx.Append adds
// records to one stream after its current version, Tx.DeferAppendStreams
// adds records to many streams at once, each after a version the caller
// read under the lock, in one statement held back for the next round trip. Every record carries explicit
// Metadata (actor, request, tenant, correlation). Statements whose answer
// nobody waits for (Tx.Defer) travel with the transaction's next round
// trip. The events table refuses UPDATE, DELETE and TRUNCATE itself.
//
// Reading. An event is readable exactly when its append commits: there is
// no second copy, no outbox. Readers order events by (transaction id,
// position) and read only below the oldest transaction of this database
// still in flight (opsgate_horizon), so an event whose transaction commits
// late is delivered late, never skipped. ReadTenant, History and ReadUpTo
// read in that order; ReadStream and ReadCorrelated read one aggregate's
// events.
//
// The feed. A Feed is one watermill-sql subscription over the events
// table itself (a schema adapter describes it, an offsets adapter keeps
// each Consumer's checkpoint in feed_checkpoints). It reads and decodes
// each event once for every consumer of the process and moves their
// checkpoints in the transaction that carries their statements, so a
// consumer that writes through that transaction applies each event
// exactly once; other consumers must be idempotent, as a batch may be
// delivered again. A Notifier wakes idle feeds and long polls a few
// milliseconds after a burst of commits, in this process and others
// (LISTEN/NOTIFY); polling remains the fallback.
//
// Payloads are Go types registered in a Registry under a stable event type
// name and schema version; older schema versions are upcast on read. The
// store knows nothing of starts, runs or tenants beyond the metadata it is
// given; which topics announce which events is the caller's Route.
package eventstore
