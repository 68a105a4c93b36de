package changes

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reader reads the change feed.
type Reader struct {
	db     *pgxpool.Pool
	recent *Recent
}

// NewReader returns a reader of the feed in db that answers from recent
// (nil: none) what it holds (Consumer keeps it).
func NewReader(db *pgxpool.Pool, recent *Recent) *Reader { return &Reader{db: db, recent: recent} }

// After returns up to limit changes of tenants after sequence number
// after, in commit order.
func (r *Reader) After(ctx context.Context, tenants []string, after int64, limit int) ([]Change, error) {
	if r.recent != nil {
		if list, ok := r.recent.after(tenants, after, limit); ok {
			return list, nil
		}
	}
	rows, err := r.db.Query(ctx, `SELECT seq, id, type, occurred_at, tenant_id, coalesce(run, 'null'), coalesce(connection, 'null'), initiator_id
		FROM changes WHERE tenant_id = ANY($1) AND seq > $2 ORDER BY seq LIMIT $3`, tenants, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read changes after %d: %w", after, err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Change, error) {
		var c Change
		var seq int64
		var run, conn []byte
		err := row.Scan(&seq, &c.ID, &c.Type, &c.OccurredAt, &c.TenantID, &run, &conn, &c.InitiatorID)
		c.Cursor, c.OccurredAt, c.Run, c.Connection = Cursor(seq), c.OccurredAt.UTC(), run, conn
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read changes after %d: %w", after, err)
	}
	if list == nil {
		list = []Change{}
	}
	return list, nil
}

// Latest returns the sequence number of the newest change (0 for none).
func (r *Reader) Latest(ctx context.Context) (int64, error) {
	var seq int64
	if err := r.db.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read the newest change: %w", err)
	}
	return seq, nil
}
