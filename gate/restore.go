package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

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

// CreateRestoreRun drafts a restore run. items must be a JSON array.
func (s *Service) CreateRestoreRun(ctx context.Context, actorID, tenantID, name string, items json.RawMessage) (RestoreRun, error) {
	if err := required("name", name); err != nil {
		return RestoreRun{}, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(items, &list); err != nil || list == nil {
		return RestoreRun{}, invalid("items", "must be an array")
	}
	now := s.now()
	r := RestoreRun{ID: newID(), TenantID: tenantID, Name: strings.TrimSpace(name), Items: items, CreatedBy: actorID, CreatedAt: now}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := authorize(ctx, tx, actorID, tenantID, domain.CapRestoreExecute); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO restore_runs (id, tenant_id, name, items, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			r.ID, tenantID, r.Name, []byte(items), actorID, now)
		if err != nil {
			return fmt.Errorf("insert restore run: %w", err)
		}
		ctx = WithMetadata(ctx, actorID, tenantID, r.ID)
		return appendOne(ctx, tx, "restore-run-"+r.ID, domain.RestoreRunCreated{
			RestoreRunID: r.ID, TenantID: tenantID, Name: r.Name, Items: items, CreatedBy: actorID, At: now,
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

// PreviewRestoreRun previews a restore run and records its warnings.
func (s *Service) PreviewRestoreRun(ctx context.Context, actorID, id string) (RestoreRun, error) {
	var out RestoreRun
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		r, err := loadRestoreRun(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, actorID, r.TenantID, domain.CapRestoreExecute); err != nil {
			return err
		}
		if err := tx.Lock(ctx, "restore-run-"+id); err != nil {
			return err
		}
		now := s.now()
		warnings := previewWarnings(r.Items)
		w, _ := json.Marshal(warnings)
		if _, err := tx.Exec(ctx, `UPDATE restore_runs SET warnings = $2, previewed_at = $3 WHERE id = $1`, id, w, now); err != nil {
			return fmt.Errorf("record preview: %w", err)
		}
		ctx = WithMetadata(ctx, actorID, r.TenantID, id)
		if err := appendOne(ctx, tx, "restore-run-"+id, domain.RestoreRunPreviewed{
			RestoreRunID: id, TenantID: r.TenantID, Warnings: warnings, PreviewedBy: actorID, At: now,
		}); err != nil {
			return err
		}
		r.Previewed, r.Warnings, r.PreviewedAt = true, warnings, &now
		out = r
		return nil
	})
	return out, err
}

// GetRestoreRun returns a restore run the user may view.
func (s *Service) GetRestoreRun(ctx context.Context, actorID, id string) (RestoreRun, error) {
	r, err := loadRestoreRun(ctx, s.store.Pool(), id)
	if err != nil {
		return RestoreRun{}, err
	}
	if err := s.Authorize(ctx, actorID, r.TenantID, domain.CapOperationsView); err != nil {
		return RestoreRun{}, err
	}
	return r, nil
}

func loadRestoreRun(ctx context.Context, q querier, id string) (RestoreRun, error) {
	rows, err := q.Query(ctx, `SELECT id, tenant_id, name, items, warnings, previewed_at, created_by, created_at FROM restore_runs WHERE id = $1`, id)
	if err != nil {
		return RestoreRun{}, fmt.Errorf("load restore run %s: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (RestoreRun, error) {
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
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return RestoreRun{}, ErrNotFound
	}
	if err != nil {
		return RestoreRun{}, fmt.Errorf("load restore run %s: %w", id, err)
	}
	return r, nil
}
