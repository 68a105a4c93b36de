package eventstore_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// ticketOpened and ticketClosed are an aggregate's events: each has a
// stable type name, never derived from the Go type's name.
type ticketOpened struct {
	Title string `json:"title"`
}

type ticketClosed struct {
	Resolution string `json:"resolution"`
}

func (ticketOpened) EventType() string { return "example.ticket_opened" }
func (ticketClosed) EventType() string { return "example.ticket_closed" }

// Example appends two events to a stream under its lock, in one
// transaction, and reads them back in version order.
func Example() {
	ctx := context.Background()
	pool, done := examplePool(ctx)
	defer done()

	registry := eventstore.NewRegistry()
	registry.Register(ticketOpened{})
	registry.Register(ticketClosed{})
	store := eventstore.New(pool, registry, func(string) []string { return nil })

	err := store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		// Writers of a stream take its lock before their first write.
		if err := tx.Lock(ctx, "ticket-42"); err != nil {
			return err
		}
		md := eventstore.Metadata{Actor: "user-ana", CorrelationID: "ticket-42"}
		_, err := tx.Append(ctx, "ticket-42", eventstore.Records(md, ticketOpened{Title: "VPN down"}, ticketClosed{Resolution: "rebooted"}))
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	events, err := store.ReadStream(ctx, "ticket-42", 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range events {
		payload, err := registry.Decode(e)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%d %s by %s: %+v\n", e.StreamVersion, e.Type, e.Metadata.Actor, payload)
	}
	// Output:
	// 1 example.ticket_opened by user-ana: {Title:VPN down}
	// 2 example.ticket_closed by user-ana: {Resolution:rebooted}
}

// examplePool opens a pool on a fresh database of DATABASE_URL's server,
// and returns it with the function that drops the database.
func examplePool(ctx context.Context) (*pgxpool.Pool, func()) {
	url, drop, err := pgtest.Create(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		panic(err)
	}
	return pool, func() {
		pool.Close()
		_ = drop()
	}
}
