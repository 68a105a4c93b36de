// Package eventstore is opsgate's append-only event store on PostgreSQL.
//
// Events are appended to streams with optimistic concurrency (Append) or
// under a per-stream transaction lock (WithStreamLock), which serialises many
// writers to one hot stream in the database's lock queue instead of in retry
// loops. The events table refuses UPDATE, DELETE and TRUNCATE itself.
//
// Every appended event is also published through watermill-sql in the same
// transaction (a transactional outbox): a rolled-back append publishes
// nothing, a committed one reaches every consumer group. Subscribers read in
// (transaction id, offset) order below the oldest transaction still in flight,
// so an event whose transaction commits late is delivered late, never skipped.
//
// Delivery is at least once. A consumer may see an event again after a crash
// or a redelivery and must be idempotent: keep a checkpoint in the same
// transaction as the effect, or make the effect an upsert.
//
// Payloads are Go types registered in a Registry under a stable event type
// name and schema version; older schema versions are upcast on read.
//
// The store knows nothing about starts, runs or tenants beyond the metadata
// it is given; which topics carry which events is the caller's Route.
package eventstore
