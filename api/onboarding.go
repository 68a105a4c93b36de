package api

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/onboarding"
)

func (h *handlers) createOnboardingSession(c echo.Context) error {
	tenant, err := pathID(c, "tenantId")
	if err != nil {
		return err
	}
	raw, err := readBody(c)
	if err != nil {
		return err
	}
	var body struct {
		ProviderConnectionID *string `json:"provider_connection_id"`
	}
	if err := decodeStrict(raw, &body, true); err != nil {
		return err
	}
	conn := ""
	if body.ProviderConnectionID != nil {
		if conn, err = optionalID("provider_connection_id", *body.ProviderConnectionID); err != nil {
			return err
		}
	}
	sess, err := h.onboarding.Create(c.Request().Context(), actor(c), tenant, conn)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, sess)
}

func (h *handlers) getOnboardingSession(c echo.Context) error {
	id, err := pathID(c, "sessionId")
	if err != nil {
		return err
	}
	sess, err := h.onboarding.Get(c.Request().Context(), actor(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sess)
}

// onboardingRequest reads what every onboarding start shares: the session
// id, the body (decoded into dst) and the idempotency key.
func onboardingRequest(c echo.Context, dst any) (onboarding.Request, error) {
	id, err := pathID(c, "sessionId")
	if err != nil {
		return onboarding.Request{}, err
	}
	raw, err := readBody(c)
	if err != nil {
		return onboarding.Request{}, err
	}
	if dst == nil {
		dst = &struct{}{}
	}
	if err := decodeStrict(raw, dst, isEmptyBody(dst) || isVerifyBody(dst)); err != nil {
		return onboarding.Request{}, err
	}
	r := onboarding.Request{Actor: actor(c), SessionID: id}
	if key := c.Request().Header.Get(IdempotencyKeyHeader); key != "" {
		if len(key) > 255 {
			return r, &badRequest{code: "invalid_idempotency_key", detail: "Idempotency-Key is longer than 255 characters"}
		}
		r.IdempotencyKey, r.RequestHash = key, requestHash(c, raw)
	}
	return r, nil
}

func isEmptyBody(dst any) bool {
	_, ok := dst.(*struct{})
	return ok
}

func isVerifyBody(dst any) bool {
	_, ok := dst.(*verifyBody)
	return ok
}

// verifyBody is the body of POST .../verify.
type verifyBody struct {
	Limits json.RawMessage `json:"limits"`
}

func (h *handlers) onboardingVerify(c echo.Context) error {
	var body verifyBody
	r, err := onboardingRequest(c, &body)
	if err != nil {
		return err
	}
	if r.Limits, err = decodeLimits(body.Limits); err != nil {
		return err
	}
	resp, err := h.onboarding.Verify(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return h.renderStart(c, resp)
}

// bootstrapBody is the body of POST .../bootstrap.
type bootstrapBody struct {
	Operations []string        `json:"operations"`
	Limits     json.RawMessage `json:"limits"`
}

func (h *handlers) onboardingBootstrap(c echo.Context) error {
	var body bootstrapBody
	r, err := onboardingRequest(c, &body)
	if err != nil {
		return err
	}
	if r.Limits, err = decodeLimits(body.Limits); err != nil {
		return err
	}
	resp, err := h.onboarding.Bootstrap(c.Request().Context(), r, body.Operations)
	if err != nil {
		return err
	}
	return h.renderStart(c, resp)
}

func (h *handlers) onboardingContinue(c echo.Context) error {
	r, err := onboardingRequest(c, nil)
	if err != nil {
		return err
	}
	resp, err := h.onboarding.Continue(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return h.renderStart(c, resp)
}
