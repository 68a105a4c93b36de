// Package executors holds the registry of executors: the platform's own
// job code that claims accepted runs over HTTP (contract section 9). Each
// executor runs the operations of the providers it registered for (and
// only the types it listed, if it did), authenticates with a token of its
// own (prefix oge_, stored hashed, valid on the executor endpoints only),
// and can be revoked. The gate asks the registry whether anything runs a
// start before it accepts it.
package executors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/tokens"
)

// Executor is a registered executor. Token is set only in the answer to
// its registration.
type Executor struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Providers      []string   `json:"providers"`
	OperationTypes []string   `json:"operation_types"` // nil: every type
	CreatedAt      time.Time  `json:"created_at"`
	LastSeenAt     *time.Time `json:"last_seen_at"`
	// Live is whether it called an executor endpoint within the liveness
	// window: only live executors count for the preflight.
	Live      bool       `json:"live"`
	RevokedAt *time.Time `json:"revoked_at"`
	Token     string     `json:"token,omitempty"`
}

// Runs reports whether e executes runs of opType on provider.
func (e Executor) Runs(provider, opType string) bool {
	return slices.Contains(e.Providers, provider) && (e.OperationTypes == nil || slices.Contains(e.OperationTypes, opType))
}

// Actor is e as the actor of what it records.
func (e Executor) Actor() domain.Actor { return domain.ExecutorActor(e.ID) }

// Service records executors and authenticates them.
type Service struct {
	// db is what the service reads with; store records its changes.
	db       *pgxpool.Pool
	store    *eventstore.Store
	tokens   *tokens.Service
	now      journal.Clock
	liveness time.Duration
}

// New returns the registry over store, whose executors' tokens are
// tokens'; an executor is live while it called an executor endpoint
// within liveness (zero: DefaultLiveness).
func New(db *pgxpool.Pool, store *eventstore.Store, tokens *tokens.Service, now journal.Clock, liveness time.Duration) *Service {
	if liveness <= 0 {
		liveness = DefaultLiveness
	}
	return &Service{db: db, store: store, tokens: tokens, now: now, liveness: liveness}
}

// DefaultLiveness is how recently an executor must have called in to be
// live, unless configured (OPSGATE_EXECUTOR_LIVENESS).
const DefaultLiveness = time.Minute

// Register records a new executor of providers (and operationTypes, nil
// for every type) and returns it with its token, the only time the token
// is shown.
func (s *Service) Register(ctx context.Context, by domain.Actor, name string, providers, operationTypes []string) (Executor, error) {
	if err := tenancy.Required("name", name); err != nil {
		return Executor{}, err
	}
	if len(providers) == 0 {
		return Executor{}, domain.Invalid("providers", "name at least one provider")
	}
	var clean []string
	for _, p := range providers {
		p = strings.TrimSpace(p)
		if err := tenancy.Required("providers", p); err != nil {
			return Executor{}, err
		}
		if !slices.Contains(clean, p) {
			clean = append(clean, p)
		}
	}
	var types []string
	if operationTypes != nil {
		if len(operationTypes) == 0 {
			return Executor{}, domain.Invalid("operation_types", "name at least one operation type, or send null for every type")
		}
		types = []string{}
		for _, t := range operationTypes {
			op, ok := domain.LookupOperation(t)
			if !ok {
				return Executor{}, domain.Invalid("operation_types", "%q is not an operation type", t)
			}
			if !slices.Contains(types, op.Type) {
				types = append(types, op.Type)
			}
		}
	}
	now := s.now()
	e := Executor{ID: journal.NewID(), Name: strings.TrimSpace(name), Providers: clean, OperationTypes: types, CreatedAt: now}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		tx.Defer(`INSERT INTO executors (id, name, providers, operation_types, created_at) VALUES ($1, $2, $3, $4, $5)`,
			e.ID, e.Name, e.Providers, e.OperationTypes, now)
		if err := journal.Append(ctx, tx, domain.ExecutorStream(e.ID), journal.Meta(by, "", e.ID), domain.ExecutorRegistered{
			ExecutorID: e.ID, Name: e.Name, Providers: e.Providers, OperationTypes: e.OperationTypes, At: now}); err != nil {
			return err
		}
		t, err := s.tokens.Issue(ctx, tx, by, owner(e.ID), nil)
		e.Token = t.Value
		return err
	})
	return e, err
}

// List returns every executor, revoked ones included, oldest first.
func (s *Service) List(ctx context.Context) ([]Executor, error) {
	rows, err := s.db.Query(ctx, selectExecutor+` ORDER BY created_at, id`, s.liveness)
	if err != nil {
		return nil, fmt.Errorf("list executors: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanExecutor)
	if err != nil {
		return nil, fmt.Errorf("list executors: %w", err)
	}
	if list == nil {
		list = []Executor{}
	}
	return list, nil
}

// Revoke revokes executor id: its token stops working at once. It returns
// domain.ErrNotFound for an executor that does not exist or was revoked
// before. The caller ends the runs it held (gate.EndLeasesOf).
func (s *Service) Revoke(ctx context.Context, by domain.Actor, id string) error {
	return s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		now := s.now()
		tag, err := tx.Exec(ctx, `UPDATE executors SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, id, now)
		if err != nil {
			return fmt.Errorf("revoke executor %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return domain.ErrNotFound
		}
		if err := s.tokens.RevokeAll(ctx, tx, by, owner(id)); err != nil {
			return err
		}
		return journal.Append(ctx, tx, domain.ExecutorStream(id), journal.Meta(by, "", id), domain.ExecutorRevoked{ExecutorID: id, At: now})
	})
}

// owner is executor id as the owner of its tokens.
func owner(id string) tokens.Owner { return tokens.Owner{Kind: domain.OwnerExecutor, ID: id} }

// IssueToken issues a token of executor id, valid until expiresAt (nil:
// until revoked); domain.ErrNotFound for an executor that does not exist
// or was revoked.
func (s *Service) IssueToken(ctx context.Context, by domain.Actor, id string, expiresAt *time.Time) (tokens.Token, error) {
	var t tokens.Token
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := s.exists(ctx, tx, id); err != nil {
			return err
		}
		var err error
		t, err = s.tokens.Issue(ctx, tx, by, owner(id), expiresAt)
		return err
	})
	return t, err
}

// Tokens lists the unrevoked tokens of executor id.
func (s *Service) Tokens(ctx context.Context, id string) ([]tokens.Token, error) {
	if err := s.exists(ctx, s.db, id); err != nil {
		return nil, err
	}
	return s.tokens.List(ctx, owner(id))
}

// RevokeToken revokes token tokenID of executor id and returns how many
// valid tokens the executor holds still: with none left, the caller ends
// its leases as for a revoked executor (gate.EndLeasesOf).
func (s *Service) RevokeToken(ctx context.Context, by domain.Actor, id, tokenID string) (left int, err error) {
	err = s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := s.exists(ctx, tx, id); err != nil {
			return err
		}
		left, err = s.tokens.Revoke(ctx, tx, by, owner(id), tokenID)
		return err
	})
	return left, err
}

// exists checks that executor id exists and was not revoked.
func (s *Service) exists(ctx context.Context, q pg.Querier, id string) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM executors WHERE id = $1 AND revoked_at IS NULL)`, id).Scan(&ok); err != nil {
		return fmt.Errorf("look up executor %s: %w", id, err)
	}
	if !ok {
		return domain.ErrNotFound
	}
	return nil
}

// Authenticate returns the executor holding token, domain.ErrNotFound for
// a token that is not a valid executor token, and notes that the executor
// was seen (at most once a second).
func (s *Service) Authenticate(ctx context.Context, token string) (Executor, error) {
	o, err := s.tokens.Authenticate(ctx, token)
	if err != nil {
		return Executor{}, err
	}
	if o.Kind != domain.OwnerExecutor {
		return Executor{}, domain.ErrNotFound
	}
	rows, err := s.db.Query(ctx, selectExecutor+` WHERE id = $2 AND revoked_at IS NULL`, s.liveness, o.ID)
	if err != nil {
		return Executor{}, fmt.Errorf("authenticate executor: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanExecutor)
	if errors.Is(err, pgx.ErrNoRows) {
		return Executor{}, domain.ErrNotFound
	}
	if err != nil {
		return Executor{}, fmt.Errorf("authenticate executor: %w", err)
	}
	// Seen, on the database's clock (liveness is judged on it), at most
	// once a second.
	if e.LastSeenAt == nil || !e.Live || time.Since(*e.LastSeenAt) >= time.Second {
		err := s.db.QueryRow(ctx, `UPDATE executors SET last_seen_at = clock_timestamp() WHERE id = $1 RETURNING last_seen_at`, e.ID).Scan(&e.LastSeenAt)
		if err != nil {
			return Executor{}, fmt.Errorf("note executor %s seen: %w", e.ID, err)
		}
		e.LastSeenAt, e.Live = utc(e.LastSeenAt), true
	}
	return e, nil
}

// Coverage is which operation types the live executors of one provider
// run (registered executors and built-in workers alike), and when one of
// them was last seen, read in a batch: filled when the batch was sent.
type Coverage struct {
	all      bool
	types    []string
	lastSeen *time.Time
}

// Runs reports whether some live executor runs opType.
func (c *Coverage) Runs(opType string) bool { return c.all || slices.Contains(c.types, opType) }

// LastSeen is when an executor of the provider was last seen, live or not
// (nil: never).
func (c *Coverage) LastSeen() *time.Time { return c.lastSeen }

// QueueCoverage queues into b the read of which types the executors of
// provider that were seen within liveness (on the database's clock) run,
// built-in workers included.
func QueueCoverage(b *pgx.Batch, provider string, liveness time.Duration) *Coverage {
	c := &Coverage{}
	b.Queue(`SELECT operation_types, last_seen_at, coalesce(last_seen_at > clock_timestamp() - $2::interval, false)
			FROM executors WHERE revoked_at IS NULL AND $1 = ANY(providers)
		UNION ALL
		SELECT NULL, seen_at, seen_at > clock_timestamp() - $2::interval FROM worker_presence WHERE $1 = ANY(providers)`,
		provider, liveness).Query(func(rows pgx.Rows) error {
		var types []string
		var seen *time.Time
		var live bool
		_, err := pgx.ForEachRow(rows, []any{&types, &seen, &live}, func() error {
			if seen != nil && (c.lastSeen == nil || seen.After(*c.lastSeen)) {
				c.lastSeen = utc(seen)
			}
			if !live {
				return nil
			}
			if types == nil {
				c.all = true
			}
			c.types = append(c.types, types...)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read the executors of %s: %w", provider, err)
		}
		return nil
	})
	return c
}

// Announce notes that the built-in worker workerID runs providers now
// (on the database's clock); a worker process announces itself while it
// runs, well within the liveness window. Presences not renewed for a day
// are forgotten.
func (s *Service) Announce(ctx context.Context, workerID string, providers []string) error {
	var b pgx.Batch
	b.Queue(`INSERT INTO worker_presence (worker_id, providers, seen_at) VALUES ($1, $2, clock_timestamp())
		ON CONFLICT (worker_id) DO UPDATE SET providers = excluded.providers, seen_at = excluded.seen_at`, workerID, providers)
	b.Queue(`DELETE FROM worker_presence WHERE seen_at < clock_timestamp() - interval '1 day'`)
	if err := s.db.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("announce worker %s: %w", workerID, err)
	}
	return nil
}

// Withdraw notes that the built-in worker workerID stopped.
func (s *Service) Withdraw(ctx context.Context, workerID string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM worker_presence WHERE worker_id = $1`, workerID); err != nil {
		return fmt.Errorf("withdraw worker %s: %w", workerID, err)
	}
	return nil
}

// selectExecutor reads executors, judging them live against the liveness
// window in $1.
const selectExecutor = `SELECT id, name, providers, operation_types, created_at, last_seen_at,
	coalesce(revoked_at IS NULL AND last_seen_at > clock_timestamp() - $1::interval, false), revoked_at FROM executors`

func scanExecutor(row pgx.CollectableRow) (Executor, error) {
	var e Executor
	err := row.Scan(&e.ID, &e.Name, &e.Providers, &e.OperationTypes, &e.CreatedAt, &e.LastSeenAt, &e.Live, &e.RevokedAt)
	e.CreatedAt = e.CreatedAt.UTC()
	e.LastSeenAt, e.RevokedAt = utc(e.LastSeenAt), utc(e.RevokedAt)
	return e, err
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
