// Package restores holds restore drafts: what a restore would write back
// into a tenant, and its preview, whose warnings the destructive start
// must acknowledge. Executing a restore is a start like any other, decided
// by the gate.
package restores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
	"github.com/opsgate/opsgate/tenancy"
)

// Service records restore drafts and their previews.
type Service struct {
	// db is what the service reads with; store records its changes.
	db    *pgxpool.Pool
	store *eventstore.Store
	now   journal.Clock
}

// New returns the restores service over store.
func New(db *pgxpool.Pool, store *eventstore.Store, now journal.Clock) *Service {
	return &Service{db: db, store: store, now: now}
}

// RestoreRun is a drafted restore: what to restore and its preview.
type RestoreRun struct {
	ID          string          `json:"id"`
	TenantID    string          `json:"tenant_id"`
	Name        string          `json:"name"`
	Items       json.RawMessage `json:"items"`
	Previewed   bool            `json:"previewed"`
	Warnings    []string        `json:"warnings"`
	PreviewedAt *time.Time      `json:"previewed_at"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
}

// Create drafts a restore run. items must be a JSON array.
func (s *Service) Create(ctx context.Context, by domain.Actor, tenantID, name string, items json.RawMessage) (RestoreRun, error) {
	if err := tenancy.Required("name", name); err != nil {
		return RestoreRun{}, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(items, &list); err != nil || list == nil {
		return RestoreRun{}, domain.Invalid("items", "must be an array")
	}
	if err := audit.CheckCanonical(items); err != nil {
		// The history must be chainable (audit/record.go).
		return RestoreRun{}, domain.Invalid("items", "has no canonical JSON form (RFC 8785): %v", err)
	}
	now := s.now()
	r := RestoreRun{ID: journal.NewID(), TenantID: tenantID, Name: strings.TrimSpace(name), Items: items, CreatedBy: by.ID, CreatedAt: now}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := tenancy.AuthorizeIn(ctx, tx, by, tenantID, domain.CapRestoreExecute); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO restore_runs (id, tenant_id, name, items, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			r.ID, tenantID, r.Name, []byte(items), by.ID, now)
		if err != nil {
			return fmt.Errorf("insert restore run: %w", err)
		}
		return journal.Append(ctx, tx, domain.RestoreRunStream(r.ID), journal.Meta(by, tenantID, r.ID), domain.RestoreRunCreated{
			RestoreRunID: r.ID, TenantID: tenantID, Name: r.Name, Items: items, CreatedBy: by.ID, At: now,
		})
	})
	return r, err
}

// previewWarnings is what a preview finds: an item that is an object with
// "overwrite": true overwrites existing data, and an item with a
// "warning" string carries that warning.
func previewWarnings(items json.RawMessage) []string {
	var list []json.RawMessage
	_ = json.Unmarshal(items, &list)
	warnings := []string{}
	for i, raw := range list {
		var item struct {
			Name      string `json:"name"`
			Overwrite bool   `json:"overwrite"`
			Warning   string `json:"warning"`
		}
		if json.Unmarshal(raw, &item) != nil {
			continue
		}
		label := item.Name
		if label == "" {
			label = fmt.Sprintf("item %d", i+1)
		}
		if item.Overwrite {
			warnings = append(warnings, fmt.Sprintf("%s overwrites existing data in the tenant", label))
		}
		if item.Warning != "" {
			warnings = append(warnings, fmt.Sprintf("%s: %s", label, item.Warning))
		}
	}
	return warnings
}

// Preview previews a restore run and records its warnings.
func (s *Service) Preview(ctx context.Context, by domain.Actor, id string) (RestoreRun, error) {
	var out RestoreRun
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		r, err := Load(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by, r.TenantID, domain.CapRestoreExecute); err != nil {
			return err
		}
		if err := journal.Lock(ctx, tx, domain.RestoreRunStream(id)); err != nil {
			return err
		}
		now := s.now()
		warnings := previewWarnings(r.Items)
		w, _ := json.Marshal(warnings)
		if _, err := tx.Exec(ctx, `UPDATE restore_runs SET warnings = $2, previewed_at = $3 WHERE id = $1`, id, w, now); err != nil {
			return fmt.Errorf("record preview: %w", err)
		}
		if err := journal.Append(ctx, tx, domain.RestoreRunStream(id), journal.Meta(by, r.TenantID, id), domain.RestoreRunPreviewed{
			RestoreRunID: id, TenantID: r.TenantID, Warnings: warnings, PreviewedBy: by.ID, At: now,
		}); err != nil {
			return err
		}
		r.Previewed, r.Warnings, r.PreviewedAt = true, warnings, &now
		out = r
		return nil
	})
	return out, err
}

// Get returns a restore run the user may view.
func (s *Service) Get(ctx context.Context, who domain.Actor, id string) (RestoreRun, error) {
	r, err := Load(ctx, s.db, id)
	if err != nil {
		return RestoreRun{}, err
	}
	if err := tenancy.AuthorizeIn(ctx, s.db, who, r.TenantID, domain.CapOperationsView); err != nil {
		return RestoreRun{}, err
	}
	return r, nil
}

const selectRestoreRun = `SELECT id, tenant_id, name, items, warnings, previewed_at, created_by, created_at FROM restore_runs`

// Load returns restore run id as q sees it, domain.ErrNotFound if none.
func Load(ctx context.Context, q pg.Querier, id string) (RestoreRun, error) {
	rows, err := q.Query(ctx, selectRestoreRun+` WHERE id = $1`, id)
	if err != nil {
		return RestoreRun{}, fmt.Errorf("load restore run %s: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRestoreRun)
	if errors.Is(err, pgx.ErrNoRows) {
		return RestoreRun{}, domain.ErrNotFound
	}
	if err != nil {
		return RestoreRun{}, fmt.Errorf("load restore run %s: %w", id, err)
	}
	return r, nil
}

// Loaded is a restore run read in a batch: nil when there is none.
type Loaded struct{ R *RestoreRun }

// QueueLoad queues into b the read of restore run id.
func QueueLoad(b *pgx.Batch, id string) *Loaded {
	l := &Loaded{}
	b.Queue(selectRestoreRun+` WHERE id = $1`, id).Query(func(rows pgx.Rows) error {
		r, err := pgx.CollectExactlyOneRow(rows, scanRestoreRun)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("load restore run %s: %w", id, err)
		}
		l.R = &r
		return nil
	})
	return l
}

func scanRestoreRun(row pgx.CollectableRow) (RestoreRun, error) {
	var r RestoreRun
	var items, warnings []byte
	err := row.Scan(&r.ID, &r.TenantID, &r.Name, &items, &warnings, &r.PreviewedAt, &r.CreatedBy, &r.CreatedAt)
	if err != nil {
		return r, err
	}
	r.Items = items
	r.CreatedAt = r.CreatedAt.UTC()
	if r.PreviewedAt != nil {
		t := r.PreviewedAt.UTC()
		r.PreviewedAt = &t
	}
	if warnings != nil {
		r.Previewed = true
		err = json.Unmarshal(warnings, &r.Warnings)
	}
	return r, err
}

// List returns a tenant's restore runs the user may view, newest first.
func (s *Service) List(ctx context.Context, who domain.Actor, tenantID string) ([]RestoreRun, error) {
	if err := tenancy.AuthorizeIn(ctx, s.db, who, tenantID, domain.CapOperationsView); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, selectRestoreRun+` WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list restore runs of %s: %w", tenantID, err)
	}
	list, err := pgx.CollectRows(rows, scanRestoreRun)
	if err != nil {
		return nil, fmt.Errorf("list restore runs of %s: %w", tenantID, err)
	}
	return list, nil
}
