package connections

import "github.com/opsgate/opsgate/domain"

// Apply returns c after e, an event of its stream or the
// ProviderConnectionMadeDefault of another connection that names c as the
// previous default; actor is who recorded e. It is how a connection is
// read as of a past moment: folded from its history.
func (c Connection) Apply(e domain.Event, actor string) Connection {
	byOperator := &ChangedBy{Kind: "operator", ID: actor}
	changedBy := func(runID string) *ChangedBy {
		if runID != "" {
			return &ChangedBy{Kind: "run", ID: runID}
		}
		return byOperator
	}
	switch e := e.(type) {
	case domain.ProviderConnectionCreated:
		c = Connection{ID: e.ConnectionID, TenantID: e.TenantID, Provider: e.Provider, DisplayName: e.DisplayName,
			Consent: e.Consent, Credentials: e.Credentials, Enabled: e.Enabled, Simulation: e.Simulation,
			CreatedAt: e.At, UpdatedAt: e.At}
		return c
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
		c.Enabled, c.UpdatedAt, c.ReadinessChangedAt, c.ReadinessChangedBy = e.Enabled, at, &at, byOperator
	case domain.ProviderConnectionVerified:
		at := e.At
		c.LastVerifiedAt, c.UpdatedAt = &at, at
	case domain.ProviderConnectionSimulationChanged:
		c.Simulation, c.UpdatedAt = e.Simulation, e.At
	case domain.ProviderConnectionMadeDefault:
		c.IsDefault, c.UpdatedAt = e.ConnectionID == c.ID, e.At
	}
	return c
}
