// Package webhooks pushes changes (package changes) to the platform's
// endpoints in the Standard Webhooks 1.0 format (contract section 14):
// endpoints per workspace with their signing secrets (Service), and the
// dispatcher that follows each endpoint's stream of changes and sends
// each at least once, signed, retried on a schedule, from any number of
// processes without two sending one attempt at once (Dispatcher). Every
// attempt answered, and every one due later, is a row of
// webhook_deliveries: the delivery log, and what a replay starts from.
package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/webhooks/netguard"
	"github.com/opsgate/opsgate/webhooks/signing"
)

// ErrURLRefused means an endpoint's URL is or resolves to an address
// deliveries may not reach (loopback, private, link-local, unspecified).
var ErrURLRefused = errors.New("webhook URL refused")

// TypePing is the type of the message POST .../ping sends.
const TypePing = "ping"

// Endpoint is a webhook endpoint of a workspace. Types nil subscribes to
// every type of change; Secret is set in the answers that create it or
// rotate its secret only.
type Endpoint struct {
	ID          string    `json:"id"`
	WorkspaceID string    `json:"workspace_id"`
	URL         string    `json:"url"`
	Types       []string  `json:"types"`
	Description string    `json:"description"`
	Enabled     bool      `json:"enabled"`
	CreatedAt   time.Time `json:"created_at"`
	Secret      string    `json:"secret,omitempty"`
}

// Patch changes an endpoint; nil fields stay as they are. SetTypes says
// that Types was given (nil then subscribes to every type).
type Patch struct {
	URL         *string
	SetTypes    bool
	Types       []string
	Enabled     *bool
	Description *string
}

// Settings are the deployment's webhook settings.
type Settings struct {
	// AllowPrivate lets endpoints be on loopback, private or link-local
	// addresses (OPSGATE_WEBHOOK_ALLOW_PRIVATE).
	AllowPrivate bool
	// SecretOverlap is how long a rotated secret keeps signing beside the
	// new one (OPSGATE_WEBHOOK_SECRET_OVERLAP).
	SecretOverlap time.Duration
}

// Service records webhook endpoints and reads their deliveries.
type Service struct {
	db       *pgxpool.Pool
	settings Settings
	now      journal.Clock
	resolver *net.Resolver
	// announce wakes the dispatchers of every process (Topic).
	announce func(topics []string)
}

// New returns the webhook service over db; announce, if set, is told of
// deliveries queued (eventstore.Notifier.Committed).
func New(db *pgxpool.Pool, settings Settings, now journal.Clock, announce func(topics []string)) *Service {
	return &Service{db: db, settings: settings, now: now, resolver: net.DefaultResolver, announce: announce}
}

// checkURL refuses a URL deliveries may not be sent to.
func (s *Service) checkURL(ctx context.Context, raw string) error {
	if len(raw) > 2000 {
		return domain.Invalid("url", "is longer than 2000 characters")
	}
	err := netguard.CheckURL(ctx, raw, s.settings.AllowPrivate, s.resolver)
	switch {
	case err == nil, errors.Is(err, netguard.ErrUnresolvable):
		// A name that does not resolve now may later; every delivery
		// checks the address it connects to.
		return nil
	case errors.Is(err, netguard.ErrRefused):
		return fmt.Errorf("%w: %v", ErrURLRefused, err)
	}
	return domain.Invalid("url", "must be an http or https URL with a host: %v", err)
}

func checkTypes(types []string) error {
	if types != nil && len(types) == 0 {
		return domain.Invalid("types", "names no type: leave it out to subscribe to every type")
	}
	for _, t := range types {
		if !changes.IsType(t) {
			return domain.Invalid("types", "%q is not a type of change (%s)", t, strings.Join(changes.Types(), ", "))
		}
	}
	return nil
}

func checkDescription(d string) error {
	if len(d) > 500 {
		return domain.Invalid("description", "is longer than 500 characters")
	}
	return nil
}

// Create records an endpoint of workspaceID with a new secret.
func (s *Service) Create(ctx context.Context, workspaceID, url string, types []string, description string) (Endpoint, error) {
	if strings.TrimSpace(workspaceID) == "" {
		return Endpoint{}, domain.Invalid("workspace_id", "is required")
	}
	if err := s.checkURL(ctx, url); err != nil {
		return Endpoint{}, err
	}
	if err := checkTypes(types); err != nil {
		return Endpoint{}, err
	}
	if err := checkDescription(description); err != nil {
		return Endpoint{}, err
	}
	e := Endpoint{ID: journal.NewID(), WorkspaceID: workspaceID, URL: url, Types: types, Description: description,
		Enabled: true, CreatedAt: s.now().UTC().Truncate(time.Microsecond), Secret: signing.NewSecret()}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO webhook_endpoints (id, workspace_id, url, types, description, created_at)
			SELECT $1, id, $3, $4, $5, $6 FROM workspaces WHERE id = $2`, e.ID, workspaceID, url, types, description, e.CreatedAt)
		if err != nil {
			return fmt.Errorf("insert webhook endpoint: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return domain.Invalid("workspace_id", "names no workspace")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO webhook_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)`,
			e.ID, e.Secret, e.CreatedAt); err != nil {
			return fmt.Errorf("insert webhook secret: %w", err)
		}
		// Its stream starts at the feed's head: the changes from now on.
		if _, err := tx.Exec(ctx, `INSERT INTO webhook_streams (endpoint_id, sent, claimed)
			SELECT $1, h.seq, h.seq FROM `+feedHead+` h`, e.ID); err != nil {
			return fmt.Errorf("insert webhook stream: %w", err)
		}
		return nil
	})
	if err == nil {
		s.wakeDispatchers() // to take up its stream at once
	}
	return e, err
}

// wakeDispatchers wakes the dispatchers of every process.
func (s *Service) wakeDispatchers() {
	if s.announce != nil {
		s.announce([]string{Topic})
	}
}

const selectEndpoint = `SELECT id, workspace_id, url, types, description, enabled, created_at FROM webhook_endpoints`

func scanEndpoint(row pgx.CollectableRow) (Endpoint, error) {
	var e Endpoint
	err := row.Scan(&e.ID, &e.WorkspaceID, &e.URL, &e.Types, &e.Description, &e.Enabled, &e.CreatedAt)
	e.CreatedAt = e.CreatedAt.UTC()
	return e, err
}

// List lists the endpoints, of workspaceID if it is not "".
func (s *Service) List(ctx context.Context, workspaceID string) ([]Endpoint, error) {
	rows, err := s.db.Query(ctx, selectEndpoint+` WHERE $1 = '' OR workspace_id = $1 ORDER BY id`, workspaceID)
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanEndpoint)
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	if list == nil {
		list = []Endpoint{}
	}
	return list, nil
}

// Get returns endpoint id, domain.ErrNotFound if there is none.
func (s *Service) Get(ctx context.Context, id string) (Endpoint, error) {
	rows, err := s.db.Query(ctx, selectEndpoint+` WHERE id = $1`, id)
	if err != nil {
		return Endpoint{}, fmt.Errorf("get webhook endpoint %s: %w", id, err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEndpoint)
	if errors.Is(err, pgx.ErrNoRows) {
		return Endpoint{}, domain.ErrNotFound
	}
	if err != nil {
		return Endpoint{}, fmt.Errorf("get webhook endpoint %s: %w", id, err)
	}
	return e, nil
}

// Update applies p to endpoint id.
func (s *Service) Update(ctx context.Context, id string, p Patch) (Endpoint, error) {
	if p.URL != nil {
		if err := s.checkURL(ctx, *p.URL); err != nil {
			return Endpoint{}, err
		}
	}
	if p.SetTypes {
		if err := checkTypes(p.Types); err != nil {
			return Endpoint{}, err
		}
	}
	if p.Description != nil {
		if err := checkDescription(*p.Description); err != nil {
			return Endpoint{}, err
		}
	}
	// An endpoint enabled again follows the feed from its head, as a new
	// one does: what happened while it was disabled is not sent.
	// (was reads the row as the statement found it: locking it there would
	// read nothing, as the statement itself updates it.)
	tag, err := s.db.Exec(ctx, `WITH was AS (
			SELECT enabled FROM webhook_endpoints WHERE id = $1
		), restarted AS (
			UPDATE webhook_streams SET sent = h.seq, claimed = h.seq, holder = NULL, held_until = NULL
			FROM `+feedHead+` h
			WHERE endpoint_id = $1 AND $5 AND NOT (SELECT enabled FROM was)
		)
		UPDATE webhook_endpoints SET url = coalesce($2, url),
			types = CASE WHEN $3 THEN $4 ELSE types END,
			enabled = coalesce($5, enabled), description = coalesce($6, description)
		WHERE id = $1`, id, p.URL, p.SetTypes, p.Types, p.Enabled, p.Description)
	if err != nil {
		return Endpoint{}, fmt.Errorf("update webhook endpoint %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return Endpoint{}, domain.ErrNotFound
	}
	if p.Enabled != nil && *p.Enabled {
		s.wakeDispatchers()
	}
	return s.Get(ctx, id)
}

// Delete deletes endpoint id with its secrets and deliveries.
func (s *Service) Delete(ctx context.Context, id string) error {
	tag, err := s.db.Exec(ctx, `DELETE FROM webhook_endpoints WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete webhook endpoint %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return domain.ErrNotFound
	}
	return nil
}

// RotateSecret gives endpoint id a new secret; the ones before keep
// signing beside it for the overlap.
func (s *Service) RotateSecret(ctx context.Context, id string) (Endpoint, error) {
	secret := signing.NewSecret()
	now := s.now()
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE)`, id).Scan(&exists); err != nil {
			return fmt.Errorf("lock webhook endpoint %s: %w", id, err)
		}
		if !exists {
			return domain.ErrNotFound
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_secrets SET expires_at = $2 WHERE endpoint_id = $1 AND expires_at IS NULL`,
			id, now.Add(s.settings.SecretOverlap)); err != nil {
			return fmt.Errorf("retire webhook secret: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM webhook_secrets WHERE endpoint_id = $1 AND expires_at <= $2`, id, now); err != nil {
			return fmt.Errorf("drop expired webhook secrets: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO webhook_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)`,
			id, secret, now); err != nil {
			return fmt.Errorf("insert webhook secret: %w", err)
		}
		return nil
	})
	if err != nil {
		return Endpoint{}, err
	}
	e, err := s.Get(ctx, id)
	e.Secret = secret
	return e, err
}

// Ping queues a message of type ping to endpoint id, due now.
func (s *Service) Ping(ctx context.Context, id string) (Delivery, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return Delivery{}, err
	}
	msg := journal.NewID()
	ping, _ := json.Marshal(map[string]any{"endpoint_id": id, "message": "ping from opsgate"})
	return s.queue(ctx, id, msg, TypePing, ping)
}

// Delivery is one attempt to send a message to an endpoint.
type Delivery struct {
	ID             string     `json:"id"`
	EndpointID     string     `json:"endpoint_id"`
	ChangeID       *string    `json:"change_id"`
	Type           string     `json:"type"`
	Attempt        int        `json:"attempt"`
	State          string     `json:"state"`
	ResponseStatus *int       `json:"response_status"`
	LatencyMS      *int       `json:"latency_ms"`
	Error          *string    `json:"error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

// The states of a delivery.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateFailed    = "failed"
	StateGaveUp    = "gave_up"
)

// States lists every state of a delivery.
func States() []string { return []string{StatePending, StateDelivered, StateFailed, StateGaveUp} }

const selectDelivery = `SELECT id, endpoint_id, message_id, type, attempt, state, response_status, latency_ms, error,
	next_attempt_at, created_at FROM webhook_deliveries`

func scanDelivery(row pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	var msg string
	err := row.Scan(&d.ID, &d.EndpointID, &msg, &d.Type, &d.Attempt, &d.State, &d.ResponseStatus, &d.LatencyMS, &d.Error,
		&d.NextAttemptAt, &d.CreatedAt)
	if d.Type != TypePing {
		d.ChangeID = &msg
	}
	d.CreatedAt = d.CreatedAt.UTC()
	if d.NextAttemptAt != nil {
		t := d.NextAttemptAt.UTC()
		d.NextAttemptAt = &t
	}
	return d, err
}

// queue inserts the first or a further attempt of message msg to
// endpoint, due now.
func (s *Service) queue(ctx context.Context, endpoint, msg, typ string, ping []byte) (Delivery, error) {
	rows, err := s.db.Query(ctx, `INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, ping, attempt, state, next_attempt_at, created_at)
		SELECT $1, $2, $3, $4, $5, coalesce(max(attempt), 0) + 1, 'pending', now(), now()
		FROM webhook_deliveries WHERE endpoint_id = $2 AND message_id = $3
		RETURNING id, endpoint_id, message_id, type, attempt, state, response_status, latency_ms, error, next_attempt_at, created_at`,
		journal.NewID(), endpoint, msg, typ, ping)
	if err != nil {
		return Delivery{}, fmt.Errorf("queue a delivery to %s: %w", endpoint, err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, scanDelivery)
	if err != nil {
		return Delivery{}, fmt.Errorf("queue a delivery to %s: %w", endpoint, err)
	}
	s.wakeDispatchers()
	return d, nil
}

// Deliveries lists the attempts to endpoint id, newest first, in state
// (any if ""), after cursor (the id of the last of the previous page).
func (s *Service) Deliveries(ctx context.Context, id, state, cursor string, limit int) ([]Delivery, string, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return nil, "", err
	}
	if state != "" && !slices.Contains(States(), state) {
		return nil, "", domain.Invalid("status", "must be one of %s", strings.Join(States(), ", "))
	}
	rows, err := s.db.Query(ctx, selectDelivery+` WHERE endpoint_id = $1 AND ($2 = '' OR state = $2) AND ($3 = '' OR id < $3)
		ORDER BY id DESC LIMIT $4`, id, state, cursor, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list deliveries of %s: %w", id, err)
	}
	list, err := pgx.CollectRows(rows, scanDelivery)
	if err != nil {
		return nil, "", fmt.Errorf("list deliveries of %s: %w", id, err)
	}
	next := ""
	if len(list) > limit {
		list, next = list[:limit], list[limit-1].ID
	}
	if list == nil {
		list = []Delivery{}
	}
	return list, next, nil
}

// Replay sends the message of delivery deliveryID of endpoint id again,
// now, as a new attempt.
func (s *Service) Replay(ctx context.Context, id, deliveryID string) (Delivery, error) {
	var msg, typ string
	var ping []byte
	err := s.db.QueryRow(ctx, `SELECT message_id, type, ping FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2`,
		deliveryID, id).Scan(&msg, &typ, &ping)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, domain.ErrNotFound
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("read delivery %s: %w", deliveryID, err)
	}
	return s.queue(ctx, id, msg, typ, ping)
}

// Backlog returns how long the oldest due attempt to an enabled endpoint
// has waited to be sent (0 when none waits): a retry, ping or replay
// since it came due, a change in an endpoint's stream since it happened
// (the first after the stream's sent, which has no attempt recorded).
// It also returns how many endpoints are disabled.
func (s *Service) Backlog(ctx context.Context) (time.Duration, int, error) {
	var waited float64
	var disabled int
	err := s.db.QueryRow(ctx, `SELECT greatest(
			coalesce((SELECT extract(epoch FROM now() - min(d.next_attempt_at)) FROM webhook_deliveries d
				JOIN webhook_endpoints e ON e.id = d.endpoint_id
				WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND e.enabled), 0),
			coalesce((SELECT extract(epoch FROM now() - min(c.occurred_at)) FROM webhook_streams w
				JOIN webhook_endpoints e ON e.id = w.endpoint_id AND e.enabled
				CROSS JOIN LATERAL (
					SELECT c.occurred_at FROM changes c
					WHERE c.seq > w.sent AND `+subscribed+`
					ORDER BY c.seq LIMIT 1) c), 0)),
			(SELECT count(*) FROM webhook_endpoints WHERE NOT enabled)`).Scan(&waited, &disabled)
	if err != nil {
		return 0, 0, fmt.Errorf("read the webhook backlog: %w", err)
	}
	return time.Duration(waited * float64(time.Second)), disabled, nil
}
