// Package connections holds tenants' provider connections: their
// readiness (consent, credentials, enabled), the tenant's default, and the
// simulated provider's settings. Every change is an event of the
// connection's stream, recorded with the row in one transaction. The gate
// reads connections as of its scope lock; it never changes them.
package connections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/tenancy"
)

// ProviderSimulated is the provider whose behaviour a connection's
// simulation settings describe.
const ProviderSimulated = "simulated"

// Connection is a provider connection.
type Connection struct {
	ID          string             `json:"id"`
	TenantID    string             `json:"tenant_id"`
	Provider    string             `json:"provider"`
	DisplayName string             `json:"display_name"`
	IsDefault   bool               `json:"is_default"`
	Consent     domain.Consent     `json:"consent"`
	Credentials domain.Credentials `json:"credentials"`
	Enabled     bool               `json:"enabled"`
	Simulation  *domain.Simulation `json:"simulation"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	// ReadinessChangedAt and ReadinessChangedBy say when consent,
	// credentials or enablement last changed, and who changed them: an
	// operator, or a run that found out during execution.
	ReadinessChangedAt *time.Time `json:"readiness_changed_at"`
	ReadinessChangedBy *ChangedBy `json:"readiness_changed_by"`
	LastVerifiedAt     *time.Time `json:"last_verified_at"`
}

// ChangedBy is who changed a connection's readiness.
type ChangedBy struct {
	Kind string `json:"kind"` // operator or run
	ID   string `json:"id"`
}

// Ref returns the connection as pinned into runs.
func (c Connection) Ref() *domain.ConnectionRef {
	return &domain.ConnectionRef{ID: c.ID, DisplayName: c.DisplayName, Provider: c.Provider}
}

// Readiness returns the preflight's view of the connection.
func (c Connection) Readiness() *domain.ConnectionReadiness {
	return &domain.ConnectionReadiness{Enabled: c.Enabled, Consent: c.Consent, Credentials: c.Credentials}
}

// NewConnection is the request to create a connection.
type NewConnection struct {
	Provider    string
	DisplayName string
	IsDefault   bool
	// Consent and Credentials are checked by Create; empty: missing.
	Consent     domain.Consent
	Credentials domain.Credentials
	Enabled     bool
	Simulation  *domain.Simulation
}

// Patch changes some fields of a connection; nil leaves a field.
type Patch struct {
	DisplayName *string
	Consent     *domain.Consent
	Credentials *domain.Credentials
	Enabled     *bool
	// Simulation replaces the simulation settings when SetSimulation.
	Simulation    *domain.Simulation
	SetSimulation bool
}

// Service records provider connections.
type Service struct {
	store *eventstore.Store
	now   journal.Clock
	// info caches connection id -> Info: a connection never changes
	// tenant or provider and is never deleted.
	info sync.Map
}

// New returns the connections service over store.
func New(store *eventstore.Store, now journal.Clock) *Service {
	return &Service{store: store, now: now}
}

func parseConsent(v domain.Consent) (domain.Consent, error) {
	c, ok := domain.ParseConsent(string(v))
	if !ok {
		return "", domain.Invalid("consent", "must be one of granted, missing, revoked")
	}
	return c, nil
}

func parseCredentials(v domain.Credentials) (domain.Credentials, error) {
	c, ok := domain.ParseCredentials(string(v))
	if !ok {
		return "", domain.Invalid("credentials", "must be one of valid, expired, invalid, missing")
	}
	return c, nil
}

// ValidateSimulation checks simulation settings for a connection of provider.
func ValidateSimulation(provider string, sim *domain.Simulation) error {
	if sim == nil {
		return nil
	}
	if provider != ProviderSimulated {
		return domain.Invalid("simulation", "is only accepted for provider %q", ProviderSimulated)
	}
	if sim.LatencyMS < 0 || sim.LatencyMS > 600_000 {
		return domain.Invalid("simulation.latency_ms", "must be between 0 and 600000")
	}
	if sim.ThrottleTimes < 0 || sim.ThrottleTimes > 1000 {
		return domain.Invalid("simulation.throttle_times", "must be between 0 and 1000")
	}
	if sim.FailWith != nil {
		if !sim.FailWith.EndsRuns() {
			return domain.Invalid("simulation.fail_with", "is not a reason code that can end a run")
		}
	}
	return nil
}

// Create records a new provider connection for a tenant.
func (s *Service) Create(ctx context.Context, by domain.Actor, tenantID string, in NewConnection) (Connection, error) {
	in.Provider = strings.TrimSpace(in.Provider)
	if err := tenancy.Required("provider", in.Provider); err != nil {
		return Connection{}, err
	}
	if err := tenancy.Required("display_name", in.DisplayName); err != nil {
		return Connection{}, err
	}
	if in.Consent == "" {
		in.Consent = domain.ConsentMissing
	}
	consent, err := parseConsent(in.Consent)
	if err != nil {
		return Connection{}, err
	}
	if in.Credentials == "" {
		in.Credentials = domain.CredentialsMissing
	}
	credentials, err := parseCredentials(in.Credentials)
	if err != nil {
		return Connection{}, err
	}
	if err := ValidateSimulation(in.Provider, in.Simulation); err != nil {
		return Connection{}, err
	}
	now := s.now()
	c := Connection{
		ID: journal.NewID(), TenantID: tenantID, Provider: in.Provider, DisplayName: strings.TrimSpace(in.DisplayName),
		Consent: consent, Credentials: credentials, Enabled: in.Enabled, Simulation: in.Simulation,
		CreatedAt: now, UpdatedAt: now,
	}
	err = s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := journal.Lock(ctx, tx, domain.TenantStream(tenantID)); err != nil {
			return err
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by.ID, tenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		sim, _ := json.Marshal(c.Simulation)
		if c.Simulation == nil {
			sim = nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO provider_connections
			(id, tenant_id, provider, display_name, is_default, consent, credentials, enabled, simulation, created_at, updated_at)
			VALUES ($1, $2, $3, $4, false, $5, $6, $7, $8, $9, $9)`,
			c.ID, c.TenantID, c.Provider, c.DisplayName, string(c.Consent), string(c.Credentials), c.Enabled, sim, now)
		if err != nil {
			return fmt.Errorf("insert connection: %w", err)
		}
		md := journal.Meta(by, tenantID, c.ID)
		err = journal.Append(ctx, tx, domain.ConnectionStream(c.ID), md, domain.ProviderConnectionCreated{
			ConnectionID: c.ID, TenantID: tenantID, Provider: c.Provider, DisplayName: c.DisplayName,
			Consent: c.Consent, Credentials: c.Credentials, Enabled: c.Enabled, Simulation: c.Simulation, At: now,
		})
		if err != nil {
			return err
		}
		if in.IsDefault {
			c.IsDefault = true
			return s.makeDefault(ctx, tx, md, c)
		}
		return nil
	})
	return c, err
}

// makeDefault makes c its tenant's default; the tenant lock is held.
func (s *Service) makeDefault(ctx context.Context, tx *eventstore.Tx, md eventstore.Metadata, c Connection) error {
	var previous string
	err := tx.QueryRow(ctx, `SELECT id FROM provider_connections WHERE tenant_id = $1 AND is_default`, c.TenantID).Scan(&previous)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("look up default connection: %w", err)
	}
	if previous == c.ID {
		return nil
	}
	// One time for the rows and the event: a connection folded from its
	// history (Connection.Apply) equals its row.
	now := s.now()
	// Two statements: the unique index on the default is checked row by row.
	if _, err := tx.Exec(ctx, `UPDATE provider_connections SET is_default = false, updated_at = $2
		WHERE tenant_id = $1 AND is_default`, c.TenantID, now); err != nil {
		return fmt.Errorf("clear default connection: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE provider_connections SET is_default = true, updated_at = $2 WHERE id = $1`, c.ID, now); err != nil {
		return fmt.Errorf("set default connection: %w", err)
	}
	return journal.Append(ctx, tx, domain.ConnectionStream(c.ID), md, domain.ProviderConnectionMadeDefault{
		ConnectionID: c.ID, TenantID: c.TenantID, PreviousID: previous, At: now,
	})
}

// MakeDefault makes a connection its tenant's default.
func (s *Service) MakeDefault(ctx context.Context, by domain.Actor, connectionID string) (Connection, error) {
	var out Connection
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		c, err := Load(ctx, tx, connectionID)
		if err != nil {
			return err
		}
		if err := journal.Lock(ctx, tx, domain.TenantStream(c.TenantID)); err != nil {
			return err
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by.ID, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		if err := s.makeDefault(ctx, tx, journal.Meta(by, c.TenantID, c.ID), c); err != nil {
			return err
		}
		out, err = Load(ctx, tx, connectionID)
		return err
	})
	return out, err
}

// Update applies patch, recording one event per changed aspect.
func (s *Service) Update(ctx context.Context, by domain.Actor, connectionID string, patch Patch) (Connection, error) {
	var out Connection
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		c, err := Load(ctx, tx, connectionID)
		if err != nil {
			return err
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by.ID, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		if err := journal.Lock(ctx, tx, domain.ConnectionStream(c.ID)); err != nil {
			return err
		}
		if c, err = Load(ctx, tx, connectionID); err != nil { // as of the lock
			return err
		}
		now := s.now()
		var events []domain.Event
		if p := patch.DisplayName; p != nil && strings.TrimSpace(*p) != c.DisplayName {
			if err := tenancy.Required("display_name", *p); err != nil {
				return err
			}
			c.DisplayName = strings.TrimSpace(*p)
			events = append(events, domain.ProviderConnectionRenamed{ConnectionID: c.ID, TenantID: c.TenantID, DisplayName: c.DisplayName, At: now})
		}
		if p := patch.Consent; p != nil && *p != c.Consent {
			if c.Consent, err = parseConsent(*p); err != nil {
				return err
			}
			events = append(events, domain.ProviderConnectionConsentChanged{ConnectionID: c.ID, TenantID: c.TenantID, Consent: c.Consent, At: now})
		}
		if p := patch.Credentials; p != nil && *p != c.Credentials {
			if c.Credentials, err = parseCredentials(*p); err != nil {
				return err
			}
			events = append(events, domain.ProviderConnectionCredentialsChanged{ConnectionID: c.ID, TenantID: c.TenantID, Credentials: c.Credentials, At: now})
		}
		if p := patch.Enabled; p != nil && *p != c.Enabled {
			c.Enabled = *p
			events = append(events, domain.ProviderConnectionEnabledChanged{ConnectionID: c.ID, TenantID: c.TenantID, Enabled: c.Enabled, At: now})
		}
		if patch.SetSimulation {
			if err := ValidateSimulation(c.Provider, patch.Simulation); err != nil {
				return err
			}
			c.Simulation = patch.Simulation
			events = append(events, domain.ProviderConnectionSimulationChanged{ConnectionID: c.ID, TenantID: c.TenantID, Simulation: c.Simulation, At: now})
		}
		if len(events) == 0 {
			out = c
			return nil
		}
		if patch.Consent != nil || patch.Credentials != nil || patch.Enabled != nil {
			for _, e := range events {
				switch e.(type) {
				case domain.ProviderConnectionConsentChanged, domain.ProviderConnectionCredentialsChanged, domain.ProviderConnectionEnabledChanged:
					c.ReadinessChangedAt, c.ReadinessChangedBy = &now, &ChangedBy{Kind: "operator", ID: by.ID}
				}
			}
		}
		var sim []byte
		if c.Simulation != nil {
			sim, _ = json.Marshal(c.Simulation)
		}
		if err := save(ctx, tx, c, sim, now); err != nil {
			return err
		}
		c.UpdatedAt = now
		if err := journal.Append(ctx, tx, domain.ConnectionStream(c.ID), journal.Meta(by, c.TenantID, c.ID), events...); err != nil {
			return err
		}
		out = c
		return nil
	})
	return out, err
}

// Get returns a connection the user may view.
func (s *Service) Get(ctx context.Context, userID, connectionID string) (Connection, error) {
	c, err := Load(ctx, s.store.Pool(), connectionID)
	if err != nil {
		return Connection{}, err
	}
	if err := tenancy.AuthorizeIn(ctx, s.store.Pool(), userID, c.TenantID, domain.CapOperationsView); err != nil {
		return Connection{}, err
	}
	return c, nil
}

// List returns a tenant's connections, oldest first.
func (s *Service) List(ctx context.Context, userID, tenantID string) ([]Connection, error) {
	if err := tenancy.AuthorizeIn(ctx, s.store.Pool(), userID, tenantID, domain.CapOperationsView); err != nil {
		return nil, err
	}
	rows, err := s.store.Pool().Query(ctx, selectConnection+` WHERE tenant_id = $1 ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanConnection)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	if list == nil {
		list = []Connection{}
	}
	return list, nil
}

const selectConnection = `SELECT id, tenant_id, provider, display_name, is_default, consent, credentials, enabled,
	simulation, created_at, updated_at, readiness_changed_at, readiness_changed_by_kind, readiness_changed_by_id,
	last_verified_at FROM provider_connections`

func scanConnection(row pgx.CollectableRow) (Connection, error) {
	var c Connection
	var sim []byte
	var byKind, byID *string
	err := row.Scan(&c.ID, &c.TenantID, &c.Provider, &c.DisplayName, &c.IsDefault, (*string)(&c.Consent), (*string)(&c.Credentials),
		&c.Enabled, &sim, &c.CreatedAt, &c.UpdatedAt, &c.ReadinessChangedAt, &byKind, &byID, &c.LastVerifiedAt)
	if err == nil && sim != nil {
		err = json.Unmarshal(sim, &c.Simulation)
	}
	if byKind != nil && byID != nil {
		c.ReadinessChangedBy = &ChangedBy{Kind: *byKind, ID: *byID}
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	c.ReadinessChangedAt, c.LastVerifiedAt = utc(c.ReadinessChangedAt), utc(c.LastVerifiedAt)
	return c, err
}

// Querier runs queries: a pool, or a transaction whose reads must see
// what it locked.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Load returns connection id as q sees it, domain.ErrNotFound if none.
func Load(ctx context.Context, q Querier, id string) (Connection, error) {
	rows, err := q.Query(ctx, selectConnection+` WHERE id = $1`, id)
	if err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %w", id, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
	if errors.Is(err, pgx.ErrNoRows) {
		return Connection{}, domain.ErrNotFound
	}
	if err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %w", id, err)
	}
	return c, nil
}

// Loaded is a connection read in a batch: nil until the batch was sent,
// and nil after it when there is no such connection.
type Loaded struct{ C *Connection }

// QueueLoadEach queues into b the read of the connections ids, in one
// statement; each id's Loaded is filled when b is sent.
func QueueLoadEach(b *pgx.Batch, ids []string) map[string]*Loaded {
	out := make(map[string]*Loaded, len(ids))
	for _, id := range ids {
		out[id] = &Loaded{}
	}
	b.Queue(selectConnection+` WHERE id = ANY($1::text[])`, ids).Query(func(rows pgx.Rows) error {
		found, err := pgx.CollectRows(rows, scanConnection)
		if err != nil {
			return fmt.Errorf("load connections: %w", err)
		}
		for i := range found {
			out[found[i].ID].C = &found[i]
		}
		return nil
	})
	return out
}

// QueueLoad queues into b the read of connection id.
func QueueLoad(b *pgx.Batch, id string) *Loaded {
	l := &Loaded{}
	b.Queue(selectConnection+` WHERE id = $1`, id).Query(func(rows pgx.Rows) error {
		c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("load connection %s: %w", id, err)
		}
		l.C = &c
		return nil
	})
	return l
}

// Default returns the id of tenantID's default connection, "" if it has
// none.
func (s *Service) Default(ctx context.Context, q tenancy.RowQuerier, tenantID string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT id FROM provider_connections WHERE tenant_id = $1 AND is_default`, tenantID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the default connection of %s: %w", tenantID, err)
	}
	return id, nil
}

// Info is what never changes about a connection: its tenant and provider.
type Info struct {
	TenantID, Provider string
}

// InfoOf returns the tenant and provider of connection id
// (domain.ErrNotFound if none); known answers come from memory, as they
// never change.
func (s *Service) InfoOf(ctx context.Context, q tenancy.RowQuerier, id string) (Info, error) {
	if i, ok := s.info.Load(id); ok {
		return i.(Info), nil
	}
	var i Info
	err := q.QueryRow(ctx, `SELECT tenant_id, provider FROM provider_connections WHERE id = $1`, id).Scan(&i.TenantID, &i.Provider)
	if errors.Is(err, pgx.ErrNoRows) {
		return Info{}, domain.ErrNotFound
	}
	if err != nil {
		return Info{}, fmt.Errorf("look up connection %s: %w", id, err)
	}
	s.info.Store(id, i)
	return i, nil
}

// Learn records, in tx, what run learned during execution about the
// readiness of connection id (learned: the states it found; verified: a
// connection check succeeded), on behalf of by, and returns what changed
// (nil: nothing). Each change is an event of the connection naming the
// run. The caller holds the run's scope; the connection's own lock is
// taken here, as every change of a connection does.
func (s *Service) Learn(ctx context.Context, tx *eventstore.Tx, by domain.Actor, id, runID string, learned domain.Observations, verified bool) (*domain.ReadinessChange, error) {
	if learned.Consent == nil && learned.Credentials == nil && !verified {
		return nil, nil
	}
	if err := journal.Lock(ctx, tx, domain.ConnectionStream(id)); err != nil {
		return nil, err
	}
	c, err := Load(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var change domain.ReadinessChange
	var events []domain.Event
	if v := learned.Consent; v != nil && *v != c.Consent {
		change.Consent = &domain.Change{From: string(c.Consent), To: string(*v)}
		c.Consent = *v
		events = append(events, domain.ProviderConnectionConsentChanged{ConnectionID: id, TenantID: c.TenantID, Consent: *v, RunID: runID, At: now})
	}
	if v := learned.Credentials; v != nil && *v != c.Credentials {
		change.Credentials = &domain.Change{From: string(c.Credentials), To: string(*v)}
		c.Credentials = *v
		events = append(events, domain.ProviderConnectionCredentialsChanged{ConnectionID: id, TenantID: c.TenantID, Credentials: *v, RunID: runID, At: now})
	}
	if change.Consent != nil || change.Credentials != nil {
		c.ReadinessChangedAt, c.ReadinessChangedBy = &now, &ChangedBy{Kind: "run", ID: runID}
	}
	if verified {
		change.VerifiedAt, c.LastVerifiedAt = &now, &now
		events = append(events, domain.ProviderConnectionVerified{ConnectionID: id, TenantID: c.TenantID, RunID: runID, At: now})
	}
	if len(events) == 0 {
		return nil, nil
	}
	var sim []byte
	if c.Simulation != nil {
		sim, _ = json.Marshal(c.Simulation)
	}
	if err := save(ctx, tx, c, sim, now); err != nil {
		return nil, err
	}
	if err := journal.Append(ctx, tx, domain.ConnectionStream(id), journal.Meta(by, c.TenantID, id), events...); err != nil {
		return nil, err
	}
	return &change, nil
}

// save writes c's changeable fields to its row.
func save(ctx context.Context, tx *eventstore.Tx, c Connection, sim []byte, now time.Time) error {
	var byKind, byID *string
	if c.ReadinessChangedBy != nil {
		byKind, byID = &c.ReadinessChangedBy.Kind, &c.ReadinessChangedBy.ID
	}
	_, err := tx.Exec(ctx, `UPDATE provider_connections SET display_name = $2, consent = $3, credentials = $4,
		enabled = $5, simulation = $6, updated_at = $7, readiness_changed_at = $8, readiness_changed_by_kind = $9,
		readiness_changed_by_id = $10, last_verified_at = $11 WHERE id = $1`,
		c.ID, c.DisplayName, string(c.Consent), string(c.Credentials), c.Enabled, sim, now,
		c.ReadinessChangedAt, byKind, byID, c.LastVerifiedAt)
	if err != nil {
		return fmt.Errorf("update connection %s: %w", c.ID, err)
	}
	return nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Current returns a connection as it is now, without authorization: for
// executors, which run against the connection pinned in a run.
func (s *Service) Current(ctx context.Context, id string) (Connection, error) {
	return Load(ctx, s.store.Pool(), id)
}
