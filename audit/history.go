package audit

import (
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/eventstore"
)

// ErrNotChained means a position names no event of the chain (none, one
// of another tenant, or one the chainer has not reached yet).
var ErrNotChained = errors.New("no chained event at that position")

// History reads the event history for auditors: the chains, and states
// folded from the events as of a moment.
type History struct {
	store *eventstore.Store
	pool  *pgxpool.Pool
}

// NewHistory returns the reader of store's history.
func NewHistory(store *eventstore.Store) *History { return &History{store: store, pool: store.Pool()} }
