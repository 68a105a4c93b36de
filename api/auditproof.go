package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/audit"
)

// The verifiable audit of contract section 17: each tenant's chain is a
// Merkle tree whose signed checkpoints, inclusion proofs and consistency
// proofs are served here (audit/tree.go, audit/proof.go).

// AuditKey is the note verifier key of the deployment's checkpoints.
type AuditKey struct {
	VerifierKey string `json:"verifier_key"`
}

// auditKeyAnswer answers the verifier key, to anyone: it is public.
func (h *handlers) auditKeyAnswer(c echo.Context) error {
	if h.auditKey == nil {
		return problem(c, http.StatusNotFound, "audit_signing_off", "Audit signing is off",
			"This deployment has no audit signing key (OPSGATE_AUDIT_SIGNING_KEY_FILE): it signs no checkpoints.")
	}
	return c.JSON(http.StatusOK, AuditKey{VerifierKey: h.auditKey.VerifierKey})
}

// auditCheckpoint answers a tenant's latest signed checkpoint as the note
// itself (text/plain).
func (h *handlers) auditCheckpoint(c echo.Context) error {
	tenant, _, err := h.auditQuery(c)
	if err != nil {
		return err
	}
	cp, err := h.history.LatestCheckpoint(c.Request().Context(), tenant)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", cp.Note)
}

// auditProof answers the inclusion proof of one event of a tenant in the
// tree of a signed checkpoint (?size, by default the latest).
func (h *handlers) auditProof(c echo.Context) error {
	tenant, _, err := h.auditQuery(c)
	if err != nil {
		return err
	}
	seq, err := treeParam(c, "seq", true)
	if err != nil {
		return err
	}
	size, err := treeParam(c, "size", false)
	if err != nil {
		return err
	}
	if size > 0 && seq > size {
		return problem(c, http.StatusNotFound, "not_in_tree", "Not in that tree",
			"seq "+strconv.FormatInt(seq, 10)+" comes after the tree of size "+strconv.FormatInt(size, 10)+": ask with a larger size.")
	}
	p, err := h.history.Prove(c.Request().Context(), tenant, seq, size)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// auditConsistency answers the proof that a tenant's tree of ?from leaves
// is a prefix of its tree of ?to leaves.
func (h *handlers) auditConsistency(c echo.Context) error {
	tenant, _, err := h.auditQuery(c)
	if err != nil {
		return err
	}
	from, err := treeParam(c, "from", true)
	if err != nil {
		return err
	}
	to, err := treeParam(c, "to", true)
	if err != nil {
		return err
	}
	if from > to {
		return problem(c, http.StatusUnprocessableEntity, "invalid_range", "Invalid range",
			"from must not exceed to: a consistency proof shows that the tree of from leaves is a prefix of the tree of to leaves.")
	}
	p, err := h.history.ProveConsistency(c.Request().Context(), tenant, from, to)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// treeParam parses a seq or tree size: a whole number from 1.
func treeParam(c echo.Context, name string, required bool) (int64, error) {
	v := c.QueryParam(name)
	if v == "" {
		if required {
			return 0, badQuery(name + " is required")
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, badQuery(name + " must be a whole number from 1")
	}
	return n, nil
}

// auditProblem maps the verifiable audit's errors to their problems.
func auditProblem(err error) *Problem {
	switch {
	case errors.Is(err, audit.ErrNoCheckpoint):
		return newProblem(http.StatusNotFound, "checkpoint_not_found", "No signed checkpoint",
			"No checkpoint of this tenant's history was signed at that size: one is signed within 10 seconds of new events. GET /api/v1/audit/checkpoint has the latest.")
	case errors.Is(err, audit.ErrBeyondTree):
		return newProblem(http.StatusNotFound, "not_in_tree", "Not in the tree", "The tree of this tenant's history is not that large (yet).")
	case errors.Is(err, audit.ErrLinkMissing):
		return newProblem(http.StatusNotFound, "not_in_tree", "Not in the tree",
			"The tenant's chain has no event at that seq although its tree covers it: the event was removed. opsgate audit verify --tenant names it.")
	case errors.Is(err, audit.ErrTreeIncomplete):
		return retryLater(http.StatusServiceUnavailable, "audit_tree_building", "Tree being built",
			"This tenant's tree is still being built from its chain: try again shortly.")
	}
	return nil
}
