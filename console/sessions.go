package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// session is a signed-in user of the console.
type session struct {
	UserID string
	CSRF   string
}

// sessions are kept in console_sessions, by the hash of the cookie's value.
type sessions struct {
	pool *pgxpool.Pool
	ttl  time.Duration
}

var errNoSession = errors.New("no session")

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashOf(value string) []byte {
	h := sha256.Sum256([]byte(value))
	return h[:]
}

// open starts a session of userID and returns the cookie's value. Expired
// sessions are removed on the way.
func (s *sessions) open(ctx context.Context, userID string) (string, error) {
	value := randomToken()
	_, err := s.pool.Exec(ctx, `WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now())
		INSERT INTO console_sessions (id_hash, user_id, csrf, expires_at) VALUES ($1, $2, $3, now() + $4 * interval '1 second')`,
		hashOf(value), userID, randomToken(), s.ttl.Seconds())
	if err != nil {
		return "", fmt.Errorf("open a console session: %w", err)
	}
	return value, nil
}

// lookup returns the live session of a cookie's value, errNoSession if
// there is none.
func (s *sessions) lookup(ctx context.Context, value string) (session, error) {
	var ss session
	err := s.pool.QueryRow(ctx, `SELECT user_id, csrf FROM console_sessions WHERE id_hash = $1 AND expires_at > now()`,
		hashOf(value)).Scan(&ss.UserID, &ss.CSRF)
	if errors.Is(err, pgx.ErrNoRows) {
		return session{}, errNoSession
	}
	if err != nil {
		return session{}, fmt.Errorf("look up a console session: %w", err)
	}
	return ss, nil
}

// close ends the session of a cookie's value.
func (s *sessions) close(ctx context.Context, value string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, hashOf(value)); err != nil {
		return fmt.Errorf("close a console session: %w", err)
	}
	return nil
}
