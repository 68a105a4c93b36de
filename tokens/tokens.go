// Package tokens holds the bearer tokens of users, integrations and
// executors (contract section 13): issued with an optional expiry and
// shown once, stored as their SHA-256 only, listed without secrets with
// when each was last used, revoked one by one or all of an owner's at
// once, and suspended while their user is disabled. An owner may hold
// several valid tokens, so that a token is rotated without downtime.
// Issuing and revoking are events of the owner's stream, recorded in the
// owner's transaction; a token's value is never recorded, not even hashed.
//
// Authentication caches a known token's owner for at most half a second
// (by hash, never the token itself) and checks its expiry on every use, so
// a revocation, a suspension or an expiry takes effect on every process
// within a second, without any message between them.
package tokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
)

// Prefixes of the tokens of each kind of owner, so that a leaked token is
// recognisable (by secret scanners, too) and tells what it is.
var prefixes = map[domain.TokenOwner]string{
	domain.OwnerUser: "ogu_", domain.OwnerIntegration: "ogi_", domain.OwnerExecutor: "oge_",
}

// Prefix returns the prefix of the tokens of kind.
func Prefix(kind domain.TokenOwner) string { return prefixes[kind] }

// Hash returns the stored form of a bearer token.
func Hash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// New returns a new random token with prefix.
func New(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Owner is what a token authenticates.
type Owner struct {
	Kind domain.TokenOwner
	ID   string
}

// stream is the stream of the owner's events.
func (o Owner) stream() domain.StreamID {
	switch o.Kind {
	case domain.OwnerIntegration:
		return domain.IntegrationStream(o.ID)
	case domain.OwnerExecutor:
		return domain.ExecutorStream(o.ID)
	}
	return domain.UserStream(o.ID)
}

// Token is a token as its owner's admin sees it; Value is set only in the
// answer that issued it.
type Token struct {
	ID         string     `json:"id"`
	Value      string     `json:"token,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Service issues, revokes and authenticates tokens.
type Service struct {
	db  *pgxpool.Pool
	now journal.Clock
	// known caches token hash -> *known for a short while.
	known sync.Map
	// lookUps makes the requests that find a token stale at once wait
	// for one read of it, not one read each.
	lookUps singleflight.Group
}

// known is a token authenticated recently.
type known struct {
	owner     Owner
	id        string
	expiresAt *time.Time
	checked   time.Time // monotonic: when the database last confirmed it
}

// recheck bounds how long a token is trusted without the database
// confirming it: revocations take effect everywhere within it.
const recheck = 500 * time.Millisecond

// NewService returns the tokens service reading with db.
func NewService(db *pgxpool.Pool, now journal.Clock) *Service {
	return &Service{db: db, now: now}
}

// Issue issues a token of owner in tx, valid until expiresAt (nil: until
// revoked), and records TokenIssued on the owner's stream on behalf of
// by. The token's value is in the answer only.
func (s *Service) Issue(ctx context.Context, tx *eventstore.Tx, by domain.Actor, owner Owner, expiresAt *time.Time) (Token, error) {
	if expiresAt != nil {
		var future bool
		if err := tx.QueryRow(ctx, `SELECT $1::timestamptz > clock_timestamp()`, *expiresAt).Scan(&future); err != nil {
			return Token{}, fmt.Errorf("check the expiry: %w", err)
		}
		if !future {
			return Token{}, domain.Invalid("expires_at", "is not in the future")
		}
		utc := expiresAt.UTC().Truncate(time.Microsecond)
		expiresAt = &utc
	}
	t := Token{ID: journal.NewID(), Value: New(prefixes[owner.Kind]), CreatedAt: s.now(), ExpiresAt: expiresAt}
	tx.Defer(`INSERT INTO tokens (id, owner_kind, owner_id, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.ID, string(owner.Kind), owner.ID, Hash(t.Value), t.CreatedAt, t.ExpiresAt)
	err := journal.Append(ctx, tx, owner.stream(), journal.Meta(by, "", owner.ID),
		domain.TokenIssued{TokenID: t.ID, OwnerKind: owner.Kind, OwnerID: owner.ID, ExpiresAt: t.ExpiresAt, At: t.CreatedAt})
	return t, err
}

// List returns owner's tokens that were not revoked (expired ones too),
// oldest first, without their values.
func (s *Service) List(ctx context.Context, owner Owner) ([]Token, error) {
	rows, err := s.db.Query(ctx, `SELECT id, created_at, expires_at, last_used_at FROM tokens
		WHERE owner_kind = $1 AND owner_id = $2 AND revoked_at IS NULL ORDER BY created_at, id`, string(owner.Kind), owner.ID)
	if err != nil {
		return nil, fmt.Errorf("list the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Token, error) {
		var t Token
		err := row.Scan(&t.ID, &t.CreatedAt, &t.ExpiresAt, &t.LastUsedAt)
		t.CreatedAt, t.ExpiresAt, t.LastUsedAt = t.CreatedAt.UTC(), utc(t.ExpiresAt), utc(t.LastUsedAt)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	if list == nil {
		list = []Token{}
	}
	return list, nil
}

// LastUsed returns when a token of each of owners of kind was last used
// (absent: never).
func (s *Service) LastUsed(ctx context.Context, kind domain.TokenOwner, owners []string) (map[string]time.Time, error) {
	rows, err := s.db.Query(ctx, `SELECT owner_id, max(last_used_at) FROM tokens
		WHERE owner_kind = $1 AND owner_id = ANY($2) AND last_used_at IS NOT NULL GROUP BY owner_id`, string(kind), owners)
	if err != nil {
		return nil, fmt.Errorf("read when tokens were last used: %w", err)
	}
	out := map[string]time.Time{}
	var id string
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		out[id] = at.UTC()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read when tokens were last used: %w", err)
	}
	return out, nil
}

// Revoke revokes token tokenID of owner in tx on behalf of by;
// domain.ErrNotFound if owner holds no such unrevoked token. It returns
// how many valid tokens owner holds still.
func (s *Service) Revoke(ctx context.Context, tx *eventstore.Tx, by domain.Actor, owner Owner, tokenID string) (int, error) {
	revoked, err := s.revoke(ctx, tx, by, owner, tokenID)
	if err != nil {
		return 0, err
	}
	if len(revoked) == 0 {
		return 0, domain.ErrNotFound
	}
	var left int
	err = tx.QueryRow(ctx, `SELECT count(*) FROM tokens WHERE owner_kind = $1 AND owner_id = $2 AND revoked_at IS NULL
		AND (expires_at IS NULL OR expires_at > clock_timestamp())`, string(owner.Kind), owner.ID).Scan(&left)
	if err != nil {
		return 0, fmt.Errorf("count the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	return left, nil
}

// RevokeAll revokes every token of owner in tx on behalf of by (its
// integration or executor was revoked).
func (s *Service) RevokeAll(ctx context.Context, tx *eventstore.Tx, by domain.Actor, owner Owner) error {
	_, err := s.revoke(ctx, tx, by, owner, "")
	return err
}

// revoke revokes owner's unrevoked token tokenID ("": every one), each
// with its event, and forgets them here at once (other processes within
// recheck).
func (s *Service) revoke(ctx context.Context, tx *eventstore.Tx, by domain.Actor, owner Owner, tokenID string) ([]string, error) {
	now := s.now()
	rows, err := tx.Query(ctx, `UPDATE tokens SET revoked_at = $3 WHERE owner_kind = $1 AND owner_id = $2 AND revoked_at IS NULL
		AND ($4 = '' OR id = $4) RETURNING id`, string(owner.Kind), owner.ID, now, tokenID)
	if err != nil {
		return nil, fmt.Errorf("revoke the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("revoke the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	events := make([]domain.Event, len(ids))
	for i, id := range ids {
		events[i] = domain.TokenRevoked{TokenID: id, OwnerKind: owner.Kind, OwnerID: owner.ID, At: now}
	}
	s.forget(owner)
	return ids, journal.Append(ctx, tx, owner.stream(), journal.Meta(by, "", owner.ID), events...)
}

// Suspend suspends (or, with suspended false, restores) every token of
// owner in tx: a disabled user's tokens stop working until the user is
// enabled again.
func (s *Service) Suspend(ctx context.Context, tx *eventstore.Tx, owner Owner, suspended bool) error {
	if _, err := tx.Exec(ctx, `UPDATE tokens SET suspended = $3 WHERE owner_kind = $1 AND owner_id = $2`,
		string(owner.Kind), owner.ID, suspended); err != nil {
		return fmt.Errorf("suspend the tokens of %s %s: %w", owner.Kind, owner.ID, err)
	}
	s.forget(owner)
	return nil
}

// forget drops owner's tokens from this process's cache.
func (s *Service) forget(owner Owner) {
	s.known.Range(func(k, v any) bool {
		if v.(*known).owner == owner {
			s.known.Delete(k)
		}
		return true
	})
}

// Authenticate returns the owner of token: domain.ErrNotFound for a token
// that is unknown, revoked, expired or suspended.
func (s *Service) Authenticate(ctx context.Context, token string) (Owner, error) {
	hash := Hash(token)
	if v, ok := s.known.Load(string(hash)); ok {
		k := v.(*known)
		if k.expiresAt != nil && !time.Now().Before(*k.expiresAt) {
			s.known.Delete(string(hash))
			return Owner{}, domain.ErrNotFound
		}
		if time.Since(k.checked) < recheck {
			return k.owner, nil
		}
	}
	v, err, _ := s.lookUps.Do(string(hash), func() (any, error) {
		// Shared by every request waiting for it: no one request's
		// cancellation fails the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookUpTimeout)
		defer cancel()
		k, err := s.lookUp(ctx, s.db, hash)
		if err != nil {
			s.known.Delete(string(hash))
			return nil, err
		}
		s.known.Store(string(hash), k)
		return k, nil
	})
	if err != nil {
		return Owner{}, err
	}
	return v.(*known).owner, nil
}

// lookUpTimeout bounds a read of a token shared by several requests.
const lookUpTimeout = 5 * time.Second

// lookUp reads the token of hash if it is valid now, noting that it was
// used (at most once a minute).
func (s *Service) lookUp(ctx context.Context, q pg.Querier, hash []byte) (*known, error) {
	k := &known{checked: time.Now()}
	var kind string
	var used bool
	err := q.QueryRow(ctx, `SELECT id, owner_kind, owner_id, expires_at,
			last_used_at IS NOT NULL AND last_used_at > clock_timestamp() - interval '1 minute'
		FROM tokens WHERE hash = $1 AND revoked_at IS NULL AND NOT suspended
			AND (expires_at IS NULL OR expires_at > clock_timestamp())`, hash).
		Scan(&k.id, &kind, &k.owner.ID, &k.expiresAt, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, domain.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	k.owner.Kind = domain.TokenOwner(kind)
	if !used {
		if _, err := q.Exec(ctx, `UPDATE tokens SET last_used_at = clock_timestamp() WHERE id = $1`, k.id); err != nil {
			return nil, fmt.Errorf("note token %s used: %w", k.id, err)
		}
	}
	return k, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
