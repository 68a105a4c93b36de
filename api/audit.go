package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// exportFlushEvery is how many lines an export writes between flushes.
const exportFlushEvery = 256

// auditExport streams a tenant's chained history as NDJSON, one event a
// line in chain order, straight from one database statement: constant
// memory whatever its length. The request deadline does not apply, and a
// client that goes away ends the statement. A failure after the first
// line cuts the response (no terminating chunk), so a client never takes
// a truncated export for a whole one.
func (h *handlers) auditExport(c echo.Context) error {
	ctx := c.Request().Context()
	tenant, after, err := h.auditQuery(c)
	if err != nil {
		return err
	}
	afterSeq, err := h.history.SeqOf(ctx, tenant, after)
	if errors.Is(err, audit.ErrNotChained) {
		return badQuery("after names no event of the tenant's chain")
	}
	if err != nil {
		return err
	}
	return StreamExport(c.Response(), h.history.Lines(ctx, tenant, afterSeq))
}

// StreamExport writes lines to w as NDJSON, one a line, through a 64 KiB
// buffer flushed every exportFlushEvery lines, without the server's write
// deadline. An error before the first line is returned (the caller
// answers it); after it, the response is cut (http.ErrAbortHandler: no
// final chunk), so that no client takes a partial export for a whole one.
func StreamExport(w *echo.Response, lines iter.Seq2[audit.Line, error]) error {
	_ = http.NewResponseController(w.Writer).SetWriteDeadline(time.Time{})
	w.Header().Set(echo.HeaderContentType, "application/x-ndjson")
	buf := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(buf)
	n := 0
	for line, err := range lines {
		if err != nil {
			if n == 0 && !w.Committed {
				return err
			}
			panic(http.ErrAbortHandler) // cut the stream: the export is incomplete
		}
		if !w.Committed {
			w.WriteHeader(http.StatusOK)
		}
		if err := enc.Encode(line); err != nil {
			panic(http.ErrAbortHandler)
		}
		if n++; n%exportFlushEvery == 0 {
			if buf.Flush() != nil {
				panic(http.ErrAbortHandler)
			}
			w.Flush()
		}
	}
	if !w.Committed {
		w.WriteHeader(http.StatusOK)
	}
	if buf.Flush() != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// auditDigest answers the head of a tenant's chain: the hash an auditor
// keeps to tell later that the history up to it was not rewritten.
func (h *handlers) auditDigest(c echo.Context) error {
	ctx := c.Request().Context()
	tenant, err := tenantQuery(c)
	if err != nil {
		return err
	}
	if err := h.tenancy.Authorize(ctx, actor(c), tenant, domain.CapAuditRead); err != nil {
		return err
	}
	head, err := h.history.HeadOf(ctx, tenant)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ChainDigest{TenantID: tenant, Head: head})
}

// ChainDigest is the head of a tenant's chain.
type ChainDigest struct {
	TenantID string `json:"tenant_id"`
	audit.Head
}

func (h *handlers) explainOperation(c echo.Context) error {
	id, err := pathID(c, "runId")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	x, err := h.history.Explain(ctx, id)
	if err != nil {
		return err
	}
	if err := h.tenancy.Authorize(ctx, actor(c), x.TenantID, domain.CapOperationsView); err != nil {
		return err
	}
	if err := x.AskedBy.Name(ctx, h.tenancy.Label); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, x)
}

// asOfParam parses ?as_of: an event's position or an RFC 3339 time; ok
// is false without one.
func asOfParam(c echo.Context) (m audit.Moment, ok bool, err error) {
	v := c.QueryParam("as_of")
	if v == "" {
		return audit.Moment{}, false, nil
	}
	if p, err := strconv.ParseInt(v, 10, 64); err == nil {
		if p <= 0 {
			return audit.Moment{}, false, badQuery("as_of must be an event's position (a positive integer) or an RFC 3339 time")
		}
		return audit.AtPosition(p), true, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return audit.Moment{}, false, badQuery("as_of must be an event's position (a positive integer) or an RFC 3339 time such as 2026-12-01T09:30:00Z")
	}
	return audit.AtTime(t), true, nil
}

// asOfError words the errors of a read as of a moment.
func asOfError(err error) error {
	if errors.Is(err, eventstore.ErrUnknownPosition) {
		return badQuery("as_of names no event")
	}
	return err
}

// auditQuery parses ?tenant_id (required) and ?after of the audit trail
// and export, and checks that the caller may read the tenant's history.
func (h *handlers) auditQuery(c echo.Context) (tenant string, after int64, err error) {
	if tenant, err = tenantQuery(c); err != nil {
		return "", 0, err
	}
	if after, err = afterParam(c); err != nil {
		return "", 0, err
	}
	return tenant, after, h.tenancy.Authorize(c.Request().Context(), actor(c), tenant, domain.CapAuditRead)
}

// tenantQuery parses the required ?tenant_id of the audit endpoints.
func tenantQuery(c echo.Context) (string, error) {
	tenant, err := optionalID("tenant_id", c.QueryParam("tenant_id"))
	if err == nil && tenant == "" {
		err = badQuery("tenant_id is required")
	}
	return tenant, err
}

func afterParam(c echo.Context) (int64, error) {
	v := c.QueryParam("after")
	if v == "" {
		return 0, nil
	}
	after, err := strconv.ParseInt(v, 10, 64)
	if err != nil || after < 0 {
		return 0, badQuery("after must be the position of an event")
	}
	return after, nil
}
