// Package connections holds tenants' provider connections: their
// readiness (consent, credentials, enabled), the tenant's default, and the
// simulated provider's settings. Every change records events of the
// connection's stream and saves the row they leave, folded with
// Connection.Apply, in one transaction under the connection's lock; a read
// as of a past moment folds with the same Apply. The gate reads
// connections as of its scope lock; it never changes them.
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
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
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

// Apply returns c after e, an event of its stream or the
// ProviderConnectionMadeDefault of another connection that names c as the
// previous default (one that names neither leaves c as it is); actor is
// who recorded e. It is the one place an event's effect is written: every
// change folds the events it records into the connection as of its lock
// and saves the result, and a read as of a past moment folds the
// connection's history.
func (c Connection) Apply(e domain.Event, actor string) Connection {
	changedBy := func(runID string) *ChangedBy {
		if runID != "" {
			return &ChangedBy{Kind: "run", ID: runID}
		}
		return &ChangedBy{Kind: "operator", ID: actor}
	}
	switch e := e.(type) {
	case domain.ProviderConnectionCreated:
		return Connection{ID: e.ConnectionID, TenantID: e.TenantID, Provider: e.Provider, DisplayName: e.DisplayName,
			Consent: e.Consent, Credentials: e.Credentials, Enabled: e.Enabled, Simulation: e.Simulation,
			CreatedAt: e.At, UpdatedAt: e.At}
	case domain.ProviderConnectionRenamed:
		c.DisplayName, c.UpdatedAt = e.DisplayName, e.At
	case domain.ProviderConnectionConsentChanged:
		at := e.At
		c.Consent, c.UpdatedAt, c.ReadinessChangedAt, c.ReadinessChangedBy = e.Consent, at, &at, changedBy(e.RunID)
	case domain.ProviderConnectionCredentialsChanged:
		at := e.At
		c.Credentials, c.UpdatedAt, c.ReadinessChangedAt, c.ReadinessChangedBy = e.Credentials, at, &at, changedBy(e.RunID)
	case domain.ProviderConnectionEnabledChanged:
		at := e.At
		c.Enabled, c.UpdatedAt, c.ReadinessChangedAt, c.ReadinessChangedBy = e.Enabled, at, &at, changedBy("")
	case domain.ProviderConnectionVerified:
		at := e.At
		c.LastVerifiedAt, c.UpdatedAt = &at, at
	case domain.ProviderConnectionSimulationChanged:
		c.Simulation, c.UpdatedAt = e.Simulation, e.At
	case domain.ProviderConnectionMadeDefault:
		switch c.ID {
		case e.ConnectionID:
			c.IsDefault, c.UpdatedAt = true, e.At
		case e.PreviousID:
			c.IsDefault, c.UpdatedAt = false, e.At
		}
	}
	return c
}

// fold returns c after events, each recorded by actor.
func fold(c Connection, actor string, events ...domain.Event) Connection {
	for _, e := range events {
		c = c.Apply(e, actor)
	}
	return c
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
	// db is what the service reads with; store records its changes.
	db    *pgxpool.Pool
	store *eventstore.Store
	now   journal.Clock
	// info caches connection id -> Info: a connection never changes
	// tenant or provider and is never deleted.
	info sync.Map
}

// New returns the connections service over store.
func New(db *pgxpool.Pool, store *eventstore.Store, now journal.Clock) *Service {
	return &Service{db: db, store: store, now: now}
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
	created := domain.ProviderConnectionCreated{
		ConnectionID: journal.NewID(), TenantID: tenantID, Provider: in.Provider, DisplayName: strings.TrimSpace(in.DisplayName),
		Consent: consent, Credentials: credentials, Enabled: in.Enabled, Simulation: in.Simulation, At: s.now(),
	}
	var c Connection
	err = s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := journal.Lock(ctx, tx, domain.TenantStream(tenantID)); err != nil {
			return err
		}
		if err := tenancy.AuthorizeIn(ctx, tx, by, tenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		events := []domain.Event{created}
		c = fold(Connection{}, by.ID, events...)
		var previous []Connection
		if in.IsDefault {
			made, prev, _, err := s.makeDefault(ctx, tx, by.ID, c) // a new connection is not the default yet
			if err != nil {
				return err
			}
			events, previous = append(events, made), prev
			c = c.Apply(made, by.ID)
		}
		return record(ctx, tx, journal.Meta(by, tenantID, c.ID), c, events, previous...)
	})
	return c, err
}

// makeDefault returns the event that makes c (as of its lock) its
// tenant's default, and the previous default, if any, as of its lock and
// after that event; ok is false if c is the default already. The tenant
// lock is held; the previous default's is taken here. Saving the previous
// default before c is the order the unique index on the default needs: it
// is checked row by row.
func (s *Service) makeDefault(ctx context.Context, tx *eventstore.Tx, actor string, c Connection) (made domain.ProviderConnectionMadeDefault, previous []Connection, ok bool, err error) {
	var previousID string
	err = tx.QueryRow(ctx, `SELECT id FROM provider_connections WHERE tenant_id = $1 AND is_default`, c.TenantID).Scan(&previousID)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return made, nil, false, fmt.Errorf("look up default connection: %w", err)
	}
	if previousID == c.ID {
		return made, nil, false, nil
	}
	made = domain.ProviderConnectionMadeDefault{ConnectionID: c.ID, TenantID: c.TenantID, PreviousID: previousID, At: s.now()}
	if previousID != "" {
		if err := journal.Lock(ctx, tx, domain.ConnectionStream(previousID)); err != nil {
			return made, nil, false, err
		}
		p, err := Load(ctx, tx, previousID)
		if err != nil {
			return made, nil, false, err
		}
		previous = []Connection{p.Apply(made, actor)}
	}
	return made, previous, true, nil
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
		if err := tenancy.AuthorizeIn(ctx, tx, by, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		if err := journal.Lock(ctx, tx, domain.ConnectionStream(c.ID)); err != nil {
			return err
		}
		if out, err = Load(ctx, tx, connectionID); err != nil { // as of the lock
			return err
		}
		made, previous, ok, err := s.makeDefault(ctx, tx, by.ID, out)
		if err != nil || !ok {
			return err
		}
		out = out.Apply(made, by.ID)
		return record(ctx, tx, journal.Meta(by, c.TenantID, c.ID), out, []domain.Event{made}, previous...)
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
		if err := tenancy.AuthorizeIn(ctx, tx, by, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		if err := journal.Lock(ctx, tx, domain.ConnectionStream(c.ID)); err != nil {
			return err
		}
		if c, err = Load(ctx, tx, connectionID); err != nil { // as of the lock
			return err
		}
		events, err := s.patchEvents(c, patch)
		if err != nil {
			return err
		}
		out = fold(c, by.ID, events...)
		if len(events) == 0 {
			return nil
		}
		return record(ctx, tx, journal.Meta(by, c.TenantID, c.ID), out, events)
	})
	return out, err
}

// patchEvents returns the events that patch records on c: one per changed
// aspect, none if it changes nothing.
func (s *Service) patchEvents(c Connection, patch Patch) ([]domain.Event, error) {
	now := s.now()
	var events []domain.Event
	if p := patch.DisplayName; p != nil && strings.TrimSpace(*p) != c.DisplayName {
		if err := tenancy.Required("display_name", *p); err != nil {
			return nil, err
		}
		events = append(events, domain.ProviderConnectionRenamed{ConnectionID: c.ID, TenantID: c.TenantID, DisplayName: strings.TrimSpace(*p), At: now})
	}
	if p := patch.Consent; p != nil && *p != c.Consent {
		consent, err := parseConsent(*p)
		if err != nil {
			return nil, err
		}
		events = append(events, domain.ProviderConnectionConsentChanged{ConnectionID: c.ID, TenantID: c.TenantID, Consent: consent, At: now})
	}
	if p := patch.Credentials; p != nil && *p != c.Credentials {
		credentials, err := parseCredentials(*p)
		if err != nil {
			return nil, err
		}
		events = append(events, domain.ProviderConnectionCredentialsChanged{ConnectionID: c.ID, TenantID: c.TenantID, Credentials: credentials, At: now})
	}
	if p := patch.Enabled; p != nil && *p != c.Enabled {
		events = append(events, domain.ProviderConnectionEnabledChanged{ConnectionID: c.ID, TenantID: c.TenantID, Enabled: *p, At: now})
	}
	if patch.SetSimulation {
		if err := ValidateSimulation(c.Provider, patch.Simulation); err != nil {
			return nil, err
		}
		events = append(events, domain.ProviderConnectionSimulationChanged{ConnectionID: c.ID, TenantID: c.TenantID, Simulation: patch.Simulation, At: now})
	}
	return events, nil
}

// Get returns a connection the user may view.
func (s *Service) Get(ctx context.Context, who domain.Actor, connectionID string) (Connection, error) {
	c, err := Load(ctx, s.db, connectionID)
	if err != nil {
		return Connection{}, err
	}
	if err := tenancy.AuthorizeIn(ctx, s.db, who, c.TenantID, domain.CapOperationsView); err != nil {
		return Connection{}, err
	}
	return c, nil
}

// List returns a tenant's connections, oldest first.
func (s *Service) List(ctx context.Context, who domain.Actor, tenantID string) ([]Connection, error) {
	if err := tenancy.AuthorizeIn(ctx, s.db, who, tenantID, domain.CapOperationsView); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, selectConnection+` WHERE tenant_id = $1 ORDER BY created_at, id`, tenantID)
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
	for _, c := range list {
		s.info.Store(c.ID, Info{TenantID: c.TenantID, Provider: c.Provider})
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

// Load returns connection id as q sees it, domain.ErrNotFound if none.
func Load(ctx context.Context, q pg.Querier, id string) (Connection, error) {
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
func (s *Service) Default(ctx context.Context, q pg.Querier, tenantID string) (string, error) {
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
func (s *Service) InfoOf(ctx context.Context, q pg.Querier, id string) (Info, error) {
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
		events = append(events, domain.ProviderConnectionConsentChanged{ConnectionID: id, TenantID: c.TenantID, Consent: *v, RunID: runID, At: now})
	}
	if v := learned.Credentials; v != nil && *v != c.Credentials {
		change.Credentials = &domain.Change{From: string(c.Credentials), To: string(*v)}
		events = append(events, domain.ProviderConnectionCredentialsChanged{ConnectionID: id, TenantID: c.TenantID, Credentials: *v, RunID: runID, At: now})
	}
	if verified {
		change.VerifiedAt = &now
		events = append(events, domain.ProviderConnectionVerified{ConnectionID: id, TenantID: c.TenantID, RunID: runID, At: now})
	}
	if len(events) == 0 {
		return nil, nil
	}
	if err := record(ctx, tx, journal.Meta(by, c.TenantID, id), fold(c, by.ID, events...), events); err != nil {
		return nil, err
	}
	return &change, nil
}

// record saves c, the connection as events leave it, after previous, the
// previous default as a ProviderConnectionMadeDefault among events leaves
// it, and appends events to c's stream with md.
func record(ctx context.Context, tx *eventstore.Tx, md eventstore.Metadata, c Connection, events []domain.Event, previous ...Connection) error {
	for _, p := range previous {
		if err := save(ctx, tx, p); err != nil {
			return err
		}
	}
	if err := save(ctx, tx, c); err != nil {
		return err
	}
	return journal.Append(ctx, tx, domain.ConnectionStream(c.ID), md, events...)
}

// save writes c to its row: every column, inserting the row if there is
// none; an existing row keeps its tenant, provider and creation time,
// which never change.
func save(ctx context.Context, tx *eventstore.Tx, c Connection) error {
	var sim []byte
	if c.Simulation != nil {
		sim, _ = json.Marshal(c.Simulation)
	}
	var byKind, byID *string
	if c.ReadinessChangedBy != nil {
		byKind, byID = &c.ReadinessChangedBy.Kind, &c.ReadinessChangedBy.ID
	}
	_, err := tx.Exec(ctx, `INSERT INTO provider_connections (id, tenant_id, provider, display_name, is_default,
			consent, credentials, enabled, simulation, created_at, updated_at, readiness_changed_at,
			readiness_changed_by_kind, readiness_changed_by_id, last_verified_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, is_default = excluded.is_default,
			consent = excluded.consent, credentials = excluded.credentials, enabled = excluded.enabled,
			simulation = excluded.simulation, updated_at = excluded.updated_at,
			readiness_changed_at = excluded.readiness_changed_at, readiness_changed_by_kind = excluded.readiness_changed_by_kind,
			readiness_changed_by_id = excluded.readiness_changed_by_id, last_verified_at = excluded.last_verified_at`,
		c.ID, c.TenantID, c.Provider, c.DisplayName, c.IsDefault, string(c.Consent), string(c.Credentials), c.Enabled, sim,
		c.CreatedAt, c.UpdatedAt, c.ReadinessChangedAt, byKind, byID, c.LastVerifiedAt)
	if err != nil {
		return fmt.Errorf("save connection %s: %w", c.ID, err)
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
	return Load(ctx, s.db, id)
}
