package api

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"
)

func (h *handlers) createRestoreRun(c echo.Context) error {
	tenant, err := pathID(c, "tenantId")
	if err != nil {
		return err
	}
	var body struct {
		Name  string          `json:"name"`
		Items json.RawMessage `json:"items"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	r, err := h.restores.Create(c.Request().Context(), actor(c), tenant, body.Name, body.Items)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, r)
}

func (h *handlers) previewRestoreRun(c echo.Context) error {
	id, err := pathID(c, "restoreRunId")
	if err != nil {
		return err
	}
	if _, err := readBody(c); err != nil {
		return err
	}
	r, err := h.restores.Preview(c.Request().Context(), actor(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

func (h *handlers) getRestoreRun(c echo.Context) error {
	id, err := pathID(c, "restoreRunId")
	if err != nil {
		return err
	}
	r, err := h.restores.Get(c.Request().Context(), actor(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}
