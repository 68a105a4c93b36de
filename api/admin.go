package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

func (h *handlers) createWorkspace(c echo.Context) error {
	var body struct {
		Name string `json:"name"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	w, err := h.tenancy.CreateWorkspace(c.Request().Context(), actor(c), body.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, w)
}

func (h *handlers) createTenant(c echo.Context) error {
	var body struct {
		WorkspaceID string `json:"workspace_id"`
		Name        string `json:"name"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	id, err := requiredID("workspace_id", body.WorkspaceID)
	if err != nil {
		return err
	}
	t, err := h.tenancy.CreateTenant(c.Request().Context(), actor(c), id, body.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, t)
}

func (h *handlers) createUser(c echo.Context) error {
	var body struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	u, err := h.tenancy.CreateUser(c.Request().Context(), actor(c), body.Email, body.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func (h *handlers) grantMembership(c echo.Context) error {
	var body struct {
		UserID   string `json:"user_id"`
		TenantID string `json:"tenant_id"`
		Role     string `json:"role"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	user, err := requiredID("user_id", body.UserID)
	if err != nil {
		return err
	}
	tenant, err := requiredID("tenant_id", body.TenantID)
	if err != nil {
		return err
	}
	m, err := h.tenancy.GrantMembership(c.Request().Context(), actor(c), user, tenant, body.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, m)
}

// bind reads and strictly decodes a required JSON object body.
func bind(c echo.Context, dst any) error {
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	return decodeStrict(raw, dst, false)
}

func requiredID(name, v string) (string, error) {
	if v == "" {
		return "", &badRequest{code: "validation_failed", detail: name + " is required", code4: http.StatusUnprocessableEntity}
	}
	return optionalID(name, v)
}
