package api

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
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
func decodeConnection(raw []byte) (connections.NewConnection, error) {
	var b connectionBody
	if err := decodeStrict(raw, &b, false); err != nil {
		return connections.NewConnection{}, err
	}
	enabled := true
	if b.Enabled != nil {
		enabled = *b.Enabled
	}
	return connections.NewConnection{
		Provider: b.Provider, DisplayName: b.DisplayName, IsDefault: b.IsDefault,
		Consent: domain.Consent(b.Consent), Credentials: domain.Credentials(b.Credentials), Enabled: enabled, Simulation: b.Simulation,
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
func decodeConnectionPatch(raw []byte) (connections.Patch, error) {
	var b connectionPatchBody
	if err := decodeStrict(raw, &b, false); err != nil {
		return connections.Patch{}, err
	}
	p := connections.Patch{DisplayName: b.DisplayName, Consent: (*domain.Consent)(b.Consent), Credentials: (*domain.Credentials)(b.Credentials), Enabled: b.Enabled}
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
	conn, err := h.conns.Create(c.Request().Context(), actor(c), tenant, in)
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
	list, err := h.conns.List(c.Request().Context(), actor(c), tenant)
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
	asOf, past, err := asOfParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	conn, err := h.conns.Get(ctx, actor(c), id)
	if err != nil {
		return err
	}
	if past {
		// As it was then, folded from its history.
		if conn, err = h.history.ConnectionAt(ctx, id, asOf); err != nil {
			return asOfError(err)
		}
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
	conn, err := h.conns.Update(c.Request().Context(), actor(c), id, patch)
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
	conn, err := h.conns.MakeDefault(c.Request().Context(), actor(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, conn)
}
