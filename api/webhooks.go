package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/webhooks"
)

// Webhook endpoints and their deliveries (contract section 14), for the
// admin.

func (h *handlers) createWebhook(c echo.Context) error {
	var body struct {
		WorkspaceID string    `json:"workspace_id"`
		URL         string    `json:"url"`
		Types       *[]string `json:"types"`
		Description string    `json:"description"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	if strings.TrimSpace(body.URL) == "" {
		return domain.Invalid("url", "is required")
	}
	var types []string
	if body.Types != nil {
		types = *body.Types
		if types == nil {
			types = []string{}
		}
	}
	e, err := h.webhooks.Create(c.Request().Context(), strings.ToUpper(strings.TrimSpace(body.WorkspaceID)), body.URL, types, body.Description)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, e)
}

func (h *handlers) listWebhooks(c echo.Context) error {
	ws, err := optionalID("workspace_id", c.QueryParam("workspace_id"))
	if err != nil {
		return err
	}
	list, err := h.webhooks.List(c.Request().Context(), ws)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": list})
}

func (h *handlers) getWebhook(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	e, err := h.webhooks.Get(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, e)
}

func (h *handlers) updateWebhook(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	var body struct {
		URL         *string         `json:"url"`
		Types       json.RawMessage `json:"types"`
		Enabled     *bool           `json:"enabled"`
		Description *string         `json:"description"`
	}
	if err := decodeStrict(raw, &body, false); err != nil {
		return err
	}
	p := webhooks.Patch{URL: body.URL, Enabled: body.Enabled, Description: body.Description}
	if len(body.Types) > 0 {
		p.SetTypes = true
		if !bytes.Equal(bytes.TrimSpace(body.Types), []byte("null")) {
			if err := json.Unmarshal(body.Types, &p.Types); err != nil {
				return domain.Invalid("types", "must be a list of types of change, or null for every type")
			}
			if p.Types == nil {
				p.Types = []string{}
			}
		}
	}
	e, err := h.webhooks.Update(c.Request().Context(), id, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, e)
}

func (h *handlers) deleteWebhook(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	if err := h.webhooks.Delete(c.Request().Context(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (h *handlers) rotateWebhookSecret(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	e, err := h.webhooks.RotateSecret(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, e)
}

func (h *handlers) pingWebhook(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	d, err := h.webhooks.Ping(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, d)
}

func (h *handlers) listDeliveries(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	limit, err := limitParam(c)
	if err != nil {
		return err
	}
	cursor, err := optionalID("cursor", c.QueryParam("cursor"))
	if err != nil {
		return err
	}
	status := c.QueryParam("status")
	if status != "" && !slices.Contains(webhooks.States(), status) {
		return badQuery("status must be one of " + strings.Join(webhooks.States(), ", "))
	}
	list, next, err := h.webhooks.Deliveries(c.Request().Context(), id, status, cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page(list, next))
}

func (h *handlers) replayDelivery(c echo.Context) error {
	id, err := pathID(c, "webhookId")
	if err != nil {
		return err
	}
	delivery, err := pathID(c, "deliveryId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	d, err := h.webhooks.Replay(c.Request().Context(), id, delivery)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, d)
}
