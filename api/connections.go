package api

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

// connectionBody is the body of POST .../provider-connections.
type connectionBody struct {
	Provider    string             `json:"provider"`
	DisplayName string             `json:"display_name"`
	IsDefault   bool               `json:"is_default"`
	Consent     string             `json:"consent"`
	Credentials string             `json:"credentials"`
	Enabled     *bool              `json:"enabled"`
	Simulation  *domain.Simulation `json:"simulation"`
}

// decodeConnection decodes and checks the shape of a new connection.
func decodeConnection(raw []byte) (gate.NewConnection, error) {
	var b connectionBody
	if err := decodeStrict(raw, &b, false); err != nil {
		return gate.NewConnection{}, err
	}
	enabled := true
	if b.Enabled != nil {
		enabled = *b.Enabled
	}
	return gate.NewConnection{
		Provider: b.Provider, DisplayName: b.DisplayName, IsDefault: b.IsDefault,
		Consent: b.Consent, Credentials: b.Credentials, Enabled: enabled, Simulation: b.Simulation,
	}, nil
}

// connectionPatchBody is the body of PATCH /provider-connections/{id}.
type connectionPatchBody struct {
	DisplayName *string          `json:"display_name"`
	Consent     *string          `json:"consent"`
	Credentials *string          `json:"credentials"`
	Enabled     *bool            `json:"enabled"`
	Simulation  *json.RawMessage `json:"simulation"`
}

// decodeConnectionPatch decodes a connection patch; "simulation": null
// clears the simulation settings.
func decodeConnectionPatch(raw []byte) (gate.ConnectionPatch, error) {
	var b connectionPatchBody
	if err := decodeStrict(raw, &b, false); err != nil {
		return gate.ConnectionPatch{}, err
	}
	p := gate.ConnectionPatch{DisplayName: b.DisplayName, Consent: b.Consent, Credentials: b.Credentials, Enabled: b.Enabled}
	if b.Simulation != nil {
		p.SetSimulation = true
		if string(*b.Simulation) != "null" {
			var sim domain.Simulation
			if err := decodeStrict(*b.Simulation, &sim, false); err != nil {
				return p, err
			}
			p.Simulation = &sim
		}
	}
	return p, nil
}

func (h *handlers) createConnection(c echo.Context) error {
	tenant, err := pathID(c, "tenantId")
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	in, err := decodeConnection(raw)
	if err != nil {
		return err
	}
	conn, err := h.gate.CreateConnection(c.Request().Context(), userID(c), tenant, in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, conn)
}

func (h *handlers) listConnections(c echo.Context) error {
	tenant, err := pathID(c, "tenantId")
	if err != nil {
		return err
	}
	list, err := h.gate.ListConnections(c.Request().Context(), userID(c), tenant)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list})
}

func (h *handlers) getConnection(c echo.Context) error {
	id, err := pathID(c, "connectionId")
	if err != nil {
		return err
	}
	conn, err := h.gate.GetConnection(c.Request().Context(), userID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, conn)
}

func (h *handlers) updateConnection(c echo.Context) error {
	id, err := pathID(c, "connectionId")
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	patch, err := decodeConnectionPatch(raw)
	if err != nil {
		return err
	}
	conn, err := h.gate.UpdateConnection(c.Request().Context(), userID(c), id, patch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, conn)
}

func (h *handlers) makeDefault(c echo.Context) error {
	id, err := pathID(c, "connectionId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	conn, err := h.gate.MakeDefault(c.Request().Context(), userID(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, conn)
}
