// Package pg holds what every package of opsgate shares about PostgreSQL:
// the Querier they read and write through, whatever holds the connection.
package pg

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier runs statements: a pool (*pgxpool.Pool), a transaction (pgx.Tx),
// or the event store's transaction (*eventstore.Tx), whose reads see what
// it locked and wrote. Functions that read or write a table take one, so
// that the caller decides the transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}
