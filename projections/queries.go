package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// ErrNotFound means no such row in the read model.
var ErrNotFound = errors.New("not found")

// Reader answers queries on the read models.
type Reader struct {
	pool *pgxpool.Pool
	// wait bounds how long a read waits for the projectors to catch up.
	wait time.Duration
	// history answers a run's read when the projections are late.
	history History
}

// NewReader returns a reader over pool whose reads wait up to wait for the
// projectors to reach every event committed before the read began. A run
// read that waited in vain is answered from history (nil: from the read
// model as it stands).
func NewReader(pool *pgxpool.Pool, wait time.Duration, history History) *Reader {
	return &Reader{pool: pool, wait: wait, history: history}
}

// CatchUp is the read-your-writes barrier: it waits (up to the reader's
// bound) until projector has applied every event committed before the
// call, so a client that just received a StartResult, or changed a run,
// reads it back at once. It returns whether the projector caught up; a
// read after a timeout is served as it stands.
func (r *Reader) CatchUp(ctx context.Context, projector string) (bool, error) {
	head, ok, err := eventstore.Head(ctx, r.pool)
	if err != nil || !ok {
		return err == nil, err
	}
	deadline := time.Now().Add(r.wait)
	pause := 500 * time.Microsecond
	for {
		done, err := eventstore.Reached(ctx, r.pool, projector, head)
		if err != nil {
			return false, err
		}
		if done {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// RunView is a run in the Operations view with the counts of later starts
// answered with it.
type RunView struct {
	domain.Run
	DedupedCount   int
	ScopeBusyCount int
	ScopeID        string
	// Summary is what the run's executor reported; Changes what the run
	// changed on its connection's readiness.
	Summary json.RawMessage
	Changes *domain.ReadinessChange
	// InitiatedVia is the integration the start came through
	// ("integration:<id>"; "" when its initiator asked directly).
	InitiatedVia string
}

// RunFilter selects runs; empty fields do not filter. TenantIDs is
// required: the tenants the caller may see.
type RunFilter struct {
	TenantIDs     []string
	Status        string
	CanonicalType string
	ConnectionID  string
	// Cursor is the id of the last run of the previous page.
	Cursor string
	Limit  int
}

const selectRun = `SELECT id, tenant_id, scope_id, type, canonical_type, label, status, target, connection_id, connection_name,
	provider, initiator_id, surface, reason_code, reason_class, reason_message, created_at, started_at, finished_at,
	deduped_count, scope_busy_count, summary, connection_changes, claim_by, finish_by, rerun_of,
	coalesce(initiated_via, '') FROM projections.ops_runs`

func scanRun(row pgx.CollectableRow) (RunView, error) {
	var v RunView
	var connID, connName, provider, code, class, msg *string
	var summary, changes []byte
	var claimBy, finishBy *time.Time
	err := row.Scan(&v.ID, &v.TenantID, &v.ScopeID, &v.Type, &v.CanonicalType, &v.Label, &v.Status, &v.Target,
		&connID, &connName, &provider, &v.InitiatorID, &v.Surface, &code, &class, &msg,
		&v.CreatedAt, &v.StartedAt, &v.FinishedAt, &v.DedupedCount, &v.ScopeBusyCount, &summary, &changes,
		&claimBy, &finishBy, &v.RerunOf, &v.InitiatedVia)
	if err != nil {
		return v, err
	}
	if claimBy != nil {
		v.Deadlines = &domain.Deadlines{ClaimBy: claimBy.UTC(), FinishBy: utc(finishBy)}
	}
	if summary != nil {
		v.Summary = summary
	}
	if changes != nil {
		if err := json.Unmarshal(changes, &v.Changes); err != nil {
			return v, err
		}
	}
	if connID != nil {
		v.ProviderConnection = &domain.ConnectionRef{ID: *connID, DisplayName: deref(connName), Provider: deref(provider)}
	}
	if code != nil {
		v.Reason = &domain.Reason{Code: domain.ReasonCode(*code), Class: domain.ReasonClass(deref(class)), Message: deref(msg)}
	}
	v.CreatedAt = v.CreatedAt.UTC()
	v.StartedAt = utc(v.StartedAt)
	v.FinishedAt = utc(v.FinishedAt)
	v.Links = domain.RunLinks{Self: domain.RunHref(v.ID)}
	return v, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Authorizer tells whether an actor holds a capability on a tenant: nil,
// or the error to answer with.
type Authorizer interface {
	Authorize(ctx context.Context, who domain.Actor, tenantID string, capability domain.Capability) error
}

// VisibleRun returns run id if who may view it (operations.view on its
// tenant). An unknown id is domain.ErrNotFound, and auth decides what a
// user who may not see the run gets: the same not-found for a non-member,
// so that no answer tells whether another tenant's run exists.
func (r *Reader) VisibleRun(ctx context.Context, auth Authorizer, who domain.Actor, id string) (RunView, error) {
	v, err := r.GetRun(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return RunView{}, domain.ErrNotFound
	}
	if err != nil {
		return RunView{}, err
	}
	if err := auth.Authorize(ctx, who, v.TenantID, domain.CapOperationsView); err != nil {
		return RunView{}, err
	}
	return v, nil
}

// GetRun returns one run of the Operations view. When the operations
// projector is too late to have applied every event committed before the
// read (the projector process is down, say), the run is folded from its
// events in the store instead: a run the store knows is never answered as
// missing, and a client reads back at once what it was just answered.
func (r *Reader) GetRun(ctx context.Context, id string) (RunView, error) {
	caughtUp, err := r.CatchUp(ctx, "operations")
	if err != nil {
		return RunView{}, err
	}
	if !caughtUp && r.history != nil {
		v, found, err := runFromHistory(ctx, r.history, id)
		if err != nil {
			return RunView{}, err
		}
		if !found {
			return RunView{}, ErrNotFound
		}
		return v, nil
	}
	rows, err := r.pool.Query(ctx, selectRun+` WHERE id = $1`, id)
	if err != nil {
		return RunView{}, fmt.Errorf("get run %s: %w", id, err)
	}
	v, err := pgx.CollectExactlyOneRow(rows, scanRun)
	if errors.Is(err, pgx.ErrNoRows) {
		return RunView{}, ErrNotFound
	}
	if err != nil {
		return RunView{}, fmt.Errorf("get run %s: %w", id, err)
	}
	return v, nil
}

// ActiveRuns returns the active (queued or running) run of each of
// tenantID's connections that has one, by connection id: the run holding
// its scope.
func (r *Reader) ActiveRuns(ctx context.Context, tenantID string) (map[string]RunView, error) {
	if _, err := r.CatchUp(ctx, "operations"); err != nil {
		return nil, err
	}
	rows, err := r.pool.Query(ctx, selectRun+` WHERE tenant_id = $1 AND status = ANY($2) AND connection_id IS NOT NULL`,
		tenantID, []string{string(domain.StatusQueued), string(domain.StatusRunning)})
	if err != nil {
		return nil, fmt.Errorf("list active runs: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanRun)
	if err != nil {
		return nil, fmt.Errorf("list active runs: %w", err)
	}
	out := make(map[string]RunView, len(list))
	for _, v := range list {
		out[v.ProviderConnection.ID] = v
	}
	return out, nil
}

// ListRuns returns a page of runs, newest first, and the cursor of the
// next page ("" on the last).
func (r *Reader) ListRuns(ctx context.Context, f RunFilter) ([]RunView, string, error) {
	if len(f.TenantIDs) == 0 {
		return []RunView{}, "", nil
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	if _, err := r.CatchUp(ctx, "operations"); err != nil {
		return nil, "", err
	}
	where := []string{"tenant_id = ANY($1)"}
	args := []any{f.TenantIDs}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Status != "" {
		add("status = $%d", f.Status)
	}
	if f.CanonicalType != "" {
		add("canonical_type = $%d", f.CanonicalType)
	}
	if f.ConnectionID != "" {
		add("connection_id = $%d", f.ConnectionID)
	}
	if f.Cursor != "" {
		add("id < $%d", f.Cursor)
	}
	args = append(args, f.Limit+1)
	q := selectRun + ` WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	rows, err := r.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanRun)
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	next := ""
	if len(list) > f.Limit {
		list = list[:f.Limit]
		next = list[len(list)-1].ID
	}
	if list == nil {
		list = []RunView{}
	}
	return list, next, nil
}

// QueueStats is the job queue of a set of tenants.
type QueueStats struct {
	Queued             int      `json:"queued"`
	Running            int      `json:"running"`
	OldestQueuedAgeSec *float64 `json:"oldest_queued_age_seconds"`
}

// Queue returns queue depth and the age of the oldest queued job across
// tenantIDs (all tenants when nil), once the queue projector has caught
// up with the call (CatchUp).
func (r *Reader) Queue(ctx context.Context, tenantIDs []string) (QueueStats, error) {
	if _, err := r.CatchUp(ctx, "queue"); err != nil {
		return QueueStats{}, err
	}
	return r.queue(ctx, tenantIDs)
}

// QueueNow returns the queue of every tenant as the read model stands,
// without waiting for the projector: the metrics' scrape.
func (r *Reader) QueueNow(ctx context.Context) (QueueStats, error) {
	return r.queue(ctx, nil)
}

func (r *Reader) queue(ctx context.Context, tenantIDs []string) (QueueStats, error) {
	var s QueueStats
	err := r.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = $2), count(*) FILTER (WHERE status = $3),
		extract(epoch FROM clock_timestamp() - min(queued_at) FILTER (WHERE status = $2))::float8
		FROM projections.ops_queue WHERE $1::text[] IS NULL OR tenant_id = ANY($1)`,
		tenantIDs, string(domain.StatusQueued), string(domain.StatusRunning)).Scan(&s.Queued, &s.Running, &s.OldestQueuedAgeSec)
	if err != nil {
		return s, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

// Notification is a message to a run's initiator about its outcome.
type Notification struct {
	ID        string            `json:"id"`
	TenantID  string            `json:"tenant_id"`
	RunID     string            `json:"run_id"`
	Status    domain.RunStatus  `json:"status"`
	Message   domain.Message    `json:"message"`
	NextSteps []domain.NextStep `json:"next_steps"`
	Reason    *domain.Reason    `json:"reason"`
	CreatedAt time.Time         `json:"created_at"`
	Links     domain.RunLinks   `json:"links"`
}

// Notifications returns a page of userID's notifications, newest first;
// tenants, if not nil, are the only tenants whose notifications count (a
// request through an integration sees those of its workspace).
func (r *Reader) Notifications(ctx context.Context, userID string, tenants []string, cursor string, limit int) ([]Notification, string, error) {
	if limit <= 0 {
		limit = 50
	}
	if _, err := r.CatchUp(ctx, "notifications"); err != nil {
		return nil, "", err
	}
	rows, err := r.pool.Query(ctx, `SELECT id, tenant_id, run_id, status, title, body, tone, next_steps, reason, created_at
		FROM projections.ops_notifications WHERE user_id = $1 AND ($2 = '' OR id < $2) AND ($4::text[] IS NULL OR tenant_id = ANY($4))
		ORDER BY id DESC LIMIT $3`, userID, cursor, limit+1, tenants)
	if err != nil {
		return nil, "", fmt.Errorf("list notifications: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Notification, error) {
		var n Notification
		var steps, reason []byte
		err := row.Scan(&n.ID, &n.TenantID, &n.RunID, &n.Status, &n.Message.Title, &n.Message.Body, &n.Message.Tone, &steps, &reason, &n.CreatedAt)
		if err != nil {
			return n, err
		}
		n.CreatedAt = n.CreatedAt.UTC()
		n.Links = domain.RunLinks{Self: domain.RunHref(n.RunID)}
		if err := json.Unmarshal(steps, &n.NextSteps); err != nil {
			return n, err
		}
		if reason != nil {
			err = json.Unmarshal(reason, &n.Reason)
		}
		return n, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list notifications: %w", err)
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		next = list[len(list)-1].ID
	}
	if list == nil {
		list = []Notification{}
	}
	return list, next, nil
}
