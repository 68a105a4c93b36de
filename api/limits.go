package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// decodeLimits reads a start's optional "limits" (contract section 12):
// {"queue_ttl_s": 1..86400, "max_duration_s": 1..86400}, either may be
// left out (the deployment's default then applies). Anything else in it (a
// wrong type, a fraction, an unknown field, out of range) is 422
// invalid_limits, before anything is decided.
func decodeLimits(raw json.RawMessage) (*domain.Limits, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var in map[string]json.RawMessage
	if err := json.Unmarshal(raw, &in); err != nil || in == nil {
		return nil, invalidLimits("limits must be an object such as {\"queue_ttl_s\": 600, \"max_duration_s\": 3600}")
	}
	var l domain.Limits
	for name, v := range in {
		var dst *time.Duration
		switch name {
		case "queue_ttl_s":
			dst = &l.QueueTTL
		case "max_duration_s":
			dst = &l.MaxDuration
		default:
			return nil, invalidLimits(fmt.Sprintf("limits has no field %q (it takes queue_ttl_s and max_duration_s)", name))
		}
		var n float64
		max := domain.MaxLimit / time.Second
		if err := json.Unmarshal(v, &n); err != nil || n != math.Trunc(n) || n < 1 || n > float64(max) {
			return nil, invalidLimits(fmt.Sprintf("limits.%s must be a whole number of seconds from 1 to %d", name, max))
		}
		*dst = time.Duration(n) * time.Second
	}
	return &l, nil
}

func invalidLimits(detail string) error {
	return &badRequest{code: "invalid_limits", detail: detail, code4: http.StatusUnprocessableEntity}
}
