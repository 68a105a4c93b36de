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
	Consent     string             `json:"consent"`
	Credentials string             `json:"credentials"`
	Enabled     bool               `json:"enabled"`
	Simulation  *domain.Simulation `json:"simulation"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
}

// Ref returns the connection as pinned into runs.
func (c Connection) Ref() *domain.ConnectionRef {
	return &domain.ConnectionRef{ID: c.ID, DisplayName: c.DisplayName, Provider: c.Provider}
}

func (c Connection) readiness() *domain.ConnectionReadiness {
	return &domain.ConnectionReadiness{Enabled: c.Enabled, Consent: c.Consent, Credentials: c.Credentials}
}

// NewConnection is the request to create a connection.
type NewConnection struct {
	Provider    string
	DisplayName string
	IsDefault   bool
	Consent     string
	Credentials string
	Enabled     bool
	Simulation  *domain.Simulation
}

// ConnectionPatch changes some fields of a connection; nil leaves a field.
type ConnectionPatch struct {
	DisplayName *string
	Consent     *string
	Credentials *string
	Enabled     *bool
	// Simulation replaces the simulation settings when SetSimulation.
	Simulation    *domain.Simulation
	SetSimulation bool
}

func validConsent(v string) bool {
	return v == domain.ConsentGranted || v == domain.ConsentMissing || v == domain.ConsentRevoked
}

func validCredentials(v string) bool {
	switch v {
	case domain.CredentialsValid, domain.CredentialsExpired, domain.CredentialsInvalid, domain.CredentialsMissing:
		return true
	}
	return false
}

// ValidateSimulation checks simulation settings for a connection of provider.
func ValidateSimulation(provider string, sim *domain.Simulation) error {
	if sim == nil {
		return nil
	}
	if provider != ProviderSimulated {
		return invalid("simulation", "is only accepted for provider %q", ProviderSimulated)
	}
	if sim.LatencyMS < 0 || sim.LatencyMS > 600_000 {
		return invalid("simulation.latency_ms", "must be between 0 and 600000")
	}
	if sim.ThrottleTimes < 0 || sim.ThrottleTimes > 1000 {
		return invalid("simulation.throttle_times", "must be between 0 and 1000")
	}
	if sim.FailWith != nil {
		if !sim.FailWith.EndsRuns() {
			return invalid("simulation.fail_with", "is not a reason code that can end a run")
		}
	}
	return nil
}

// CreateConnection records a new provider connection for a tenant.
func (s *Service) CreateConnection(ctx context.Context, actorID, tenantID string, in NewConnection) (Connection, error) {
	in.Provider = strings.TrimSpace(in.Provider)
	if err := required("provider", in.Provider); err != nil {
		return Connection{}, err
	}
	if err := required("display_name", in.DisplayName); err != nil {
		return Connection{}, err
	}
	if in.Consent == "" {
		in.Consent = domain.ConsentMissing
	}
	if !validConsent(in.Consent) {
		return Connection{}, invalid("consent", "must be one of granted, missing, revoked")
	}
	if in.Credentials == "" {
		in.Credentials = domain.CredentialsMissing
	}
	if !validCredentials(in.Credentials) {
		return Connection{}, invalid("credentials", "must be one of valid, expired, invalid, missing")
	}
	if err := ValidateSimulation(in.Provider, in.Simulation); err != nil {
		return Connection{}, err
	}
	now := s.now()
	c := Connection{
		ID: newID(), TenantID: tenantID, Provider: in.Provider, DisplayName: strings.TrimSpace(in.DisplayName),
		Consent: in.Consent, Credentials: in.Credentials, Enabled: in.Enabled, Simulation: in.Simulation,
		CreatedAt: now, UpdatedAt: now,
	}
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		if err := tx.Lock(ctx, "tenant-"+tenantID); err != nil {
			return err
		}
		if err := authorize(ctx, tx, actorID, tenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		sim, _ := json.Marshal(c.Simulation)
		if c.Simulation == nil {
			sim = nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO provider_connections
			(id, tenant_id, provider, display_name, is_default, consent, credentials, enabled, simulation, created_at, updated_at)
			VALUES ($1, $2, $3, $4, false, $5, $6, $7, $8, $9, $9)`,
			c.ID, c.TenantID, c.Provider, c.DisplayName, c.Consent, c.Credentials, c.Enabled, sim, now)
		if err != nil {
			return fmt.Errorf("insert connection: %w", err)
		}
		ctx = WithMetadata(ctx, actorID, tenantID, c.ID)
		err = appendOne(ctx, tx, "connection-"+c.ID, domain.ProviderConnectionCreated{
			ConnectionID: c.ID, TenantID: tenantID, Provider: c.Provider, DisplayName: c.DisplayName,
			Consent: c.Consent, Credentials: c.Credentials, Enabled: c.Enabled, Simulation: c.Simulation, At: now,
		})
		if err != nil {
			return err
		}
		if in.IsDefault {
			c.IsDefault = true
			return s.makeDefault(ctx, tx, c)
		}
		return nil
	})
	return c, err
}

// makeDefault makes c its tenant's default; the tenant lock is held.
func (s *Service) makeDefault(ctx context.Context, tx *eventstore.Tx, c Connection) error {
	var previous string
	err := tx.QueryRow(ctx, `SELECT id FROM provider_connections WHERE tenant_id = $1 AND is_default`, c.TenantID).Scan(&previous)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("look up default connection: %w", err)
	}
	if previous == c.ID {
		return nil
	}
	// Two statements: the unique index on the default is checked row by row.
	if _, err := tx.Exec(ctx, `UPDATE provider_connections SET is_default = false, updated_at = $2
		WHERE tenant_id = $1 AND is_default`, c.TenantID, s.now()); err != nil {
		return fmt.Errorf("clear default connection: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE provider_connections SET is_default = true, updated_at = $2 WHERE id = $1`, c.ID, s.now()); err != nil {
		return fmt.Errorf("set default connection: %w", err)
	}
	return appendOne(ctx, tx, "connection-"+c.ID, domain.ProviderConnectionMadeDefault{
		ConnectionID: c.ID, TenantID: c.TenantID, PreviousID: previous, At: s.now(),
	})
}

// MakeDefault makes a connection its tenant's default.
func (s *Service) MakeDefault(ctx context.Context, actorID, connectionID string) (Connection, error) {
	var out Connection
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		c, err := loadConnection(ctx, tx, connectionID)
		if err != nil {
			return err
		}
		if err := tx.Lock(ctx, "tenant-"+c.TenantID); err != nil {
			return err
		}
		if err := authorize(ctx, tx, actorID, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		ctx = WithMetadata(ctx, actorID, c.TenantID, c.ID)
		if err := s.makeDefault(ctx, tx, c); err != nil {
			return err
		}
		out, err = loadConnection(ctx, tx, connectionID)
		return err
	})
	return out, err
}

// UpdateConnection applies patch, recording one event per changed aspect.
func (s *Service) UpdateConnection(ctx context.Context, actorID, connectionID string, patch ConnectionPatch) (Connection, error) {
	var out Connection
	err := s.store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		c, err := loadConnection(ctx, tx, connectionID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, actorID, c.TenantID, domain.CapProviderConnectionManage); err != nil {
			return err
		}
		if err := tx.Lock(ctx, "connection-"+c.ID); err != nil {
			return err
		}
		if c, err = loadConnection(ctx, tx, connectionID); err != nil { // as of the lock
			return err
		}
		now := s.now()
		var events []domain.Event
		if p := patch.DisplayName; p != nil && strings.TrimSpace(*p) != c.DisplayName {
			if err := required("display_name", *p); err != nil {
				return err
			}
			c.DisplayName = strings.TrimSpace(*p)
			events = append(events, domain.ProviderConnectionRenamed{ConnectionID: c.ID, TenantID: c.TenantID, DisplayName: c.DisplayName, At: now})
		}
		if p := patch.Consent; p != nil && *p != c.Consent {
			if !validConsent(*p) {
				return invalid("consent", "must be one of granted, missing, revoked")
			}
			c.Consent = *p
			events = append(events, domain.ProviderConnectionConsentChanged{ConnectionID: c.ID, TenantID: c.TenantID, Consent: c.Consent, At: now})
		}
		if p := patch.Credentials; p != nil && *p != c.Credentials {
			if !validCredentials(*p) {
				return invalid("credentials", "must be one of valid, expired, invalid, missing")
			}
			c.Credentials = *p
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
		var sim []byte
		if c.Simulation != nil {
			sim, _ = json.Marshal(c.Simulation)
		}
		_, err = tx.Exec(ctx, `UPDATE provider_connections SET display_name = $2, consent = $3, credentials = $4,
			enabled = $5, simulation = $6, updated_at = $7 WHERE id = $1`,
			c.ID, c.DisplayName, c.Consent, c.Credentials, c.Enabled, sim, now)
		if err != nil {
			return fmt.Errorf("update connection: %w", err)
		}
		c.UpdatedAt = now
		ctx = WithMetadata(ctx, actorID, c.TenantID, c.ID)
		payloads := make([]eventstore.Payload, len(events))
		for i, e := range events {
			payloads[i] = e
		}
		if _, err := tx.Append(ctx, "connection-"+c.ID, eventstore.AnyVersion, payloads...); err != nil {
			return fmt.Errorf("record connection change: %w", err)
		}
		out = c
		return nil
	})
	return out, err
}

// GetConnection returns a connection the user may view.
func (s *Service) GetConnection(ctx context.Context, actorID, connectionID string) (Connection, error) {
	c, err := loadConnection(ctx, s.store.Pool(), connectionID)
	if err != nil {
		return Connection{}, err
	}
	if err := s.Authorize(ctx, actorID, c.TenantID, domain.CapOperationsView); err != nil {
		return Connection{}, err
	}
	return c, nil
}

// ListConnections returns a tenant's connections, oldest first.
func (s *Service) ListConnections(ctx context.Context, actorID, tenantID string) ([]Connection, error) {
	if err := s.Authorize(ctx, actorID, tenantID, domain.CapOperationsView); err != nil {
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
	simulation, created_at, updated_at FROM provider_connections`

func scanConnection(row pgx.CollectableRow) (Connection, error) {
	var c Connection
	var sim []byte
	err := row.Scan(&c.ID, &c.TenantID, &c.Provider, &c.DisplayName, &c.IsDefault, &c.Consent, &c.Credentials,
		&c.Enabled, &sim, &c.CreatedAt, &c.UpdatedAt)
	if err == nil && sim != nil {
		err = json.Unmarshal(sim, &c.Simulation)
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func loadConnection(ctx context.Context, q querier, id string) (Connection, error) {
	rows, err := q.Query(ctx, selectConnection+` WHERE id = $1`, id)
	if err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %w", id, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
	if errors.Is(err, pgx.ErrNoRows) {
		return Connection{}, ErrNotFound
	}
	if err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %w", id, err)
	}
	return c, nil
}

func defaultConnection(ctx context.Context, q querier, tenantID string) (*Connection, error) {
	rows, err := q.Query(ctx, selectConnection+` WHERE tenant_id = $1 AND is_default`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("load default connection: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load default connection: %w", err)
	}
	return &c, nil
}

// Connection returns a connection as it is now, without authorization: for
// the worker, which executes against the connection pinned in a run.
func (s *Service) Connection(ctx context.Context, id string) (Connection, error) {
	return loadConnection(ctx, s.store.Pool(), id)
}

// Readiness returns the preflight's view of the connection.
func (c Connection) Readiness() *domain.ConnectionReadiness { return c.readiness() }
