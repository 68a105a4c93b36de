package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/projections"
)

// ChangeSettings are what the change feed and the waits on a run need.
type ChangeSettings struct {
	Reader *changes.Reader
	// Next returns a channel closed when changes next commit
	// (changes.Topic), in any process.
	Next func() <-chan struct{}
}

// maxChanges bounds a page of the change feed.
const maxChanges = 500

// waitParam reads wait_ms (0 to maxWaitMS).
func waitParam(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("wait_ms")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxWaitMS {
		return 0, badQuery("wait_ms must be a whole number from 0 to 30000")
	}
	return time.Duration(n) * time.Millisecond, nil
}

// waitFor calls done until it reports true, at each commit of changes,
// for at most wait; it holds no database connection while it waits, and
// gives up at once when the server drains.
func (h *handlers) waitFor(ctx context.Context, wait time.Duration, done func() (bool, error)) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		// Take the wake-up before looking, so that a change committed in
		// between is not missed.
		next := h.changes.Next()
		ok, err := done()
		if err != nil || ok || wait == 0 {
			return err
		}
		select {
		case <-next:
		case <-deadline.C:
			return nil
		case <-h.executor.Draining:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitForRun waits up to wait for run v to end, and returns it as it is
// then.
func (h *handlers) waitForRun(c echo.Context, v projections.RunView, wait time.Duration) (projections.RunView, error) {
	ctx := c.Request().Context()
	err := h.waitFor(ctx, wait, func() (bool, error) {
		if v.Status.Terminal() {
			return true, nil
		}
		next, err := h.reader.GetRun(ctx, v.ID)
		if err != nil {
			return false, err
		}
		v = next
		return v.Status.Terminal(), nil
	})
	return v, err
}

// changeQuery is a request of the change feed.
type changeQuery struct {
	tenants []string
	after   int64
	limit   int
	wait    time.Duration
}

func (h *handlers) changeQueryOf(c echo.Context, stream bool) (changeQuery, error) {
	ctx := c.Request().Context()
	q := changeQuery{limit: 100}
	var err error
	if v := c.QueryParam("limit"); v != "" {
		if q.limit, err = strconv.Atoi(v); err != nil || q.limit < 1 || q.limit > maxChanges {
			return q, badQuery("limit must be a whole number from 1 to 500")
		}
	}
	if q.wait, err = waitParam(c); err != nil {
		return q, err
	}
	after := c.QueryParam("after")
	if id := c.Request().Header.Get("Last-Event-ID"); stream && id != "" {
		after = id
	}
	switch after {
	case "":
	case "latest":
		if q.after, err = h.changes.Reader.Latest(ctx); err != nil {
			return q, err
		}
	default:
		if q.after, err = changes.ParseCursor(after); err != nil {
			return q, &badRequest{code: "invalid_cursor", detail: "after must be a cursor the feed gave (next_cursor, a change's cursor) or latest."}
		}
	}
	tenant, err := optionalID("tenant_id", c.QueryParam("tenant_id"))
	if err != nil {
		return q, err
	}
	if tenant != "" {
		if err := h.tenancy.Authorize(ctx, actor(c), tenant, domain.CapOperationsView); err != nil {
			return q, err
		}
		q.tenants = []string{tenant}
	} else if q.tenants, err = h.tenancy.MemberTenants(ctx, actor(c), domain.CapOperationsView); err != nil {
		return q, err
	}
	return q, nil
}

// ChangePage is a page of the change feed.
type ChangePage struct {
	Items      []changes.Change `json:"items"`
	NextCursor string           `json:"next_cursor"`
}

func (h *handlers) listChanges(c echo.Context) error {
	stream := strings.Contains(c.Request().Header.Get(echo.HeaderAccept), "text/event-stream")
	q, err := h.changeQueryOf(c, stream)
	if err != nil {
		return err
	}
	if stream {
		return h.streamChanges(c, q)
	}
	ctx := c.Request().Context()
	var items []changes.Change
	err = h.waitFor(ctx, q.wait, func() (bool, error) {
		var err error
		items, err = h.changes.Reader.After(ctx, q.tenants, q.after, q.limit)
		return len(items) > 0, err
	})
	if err != nil {
		return err
	}
	next := changes.Cursor(q.after)
	if len(items) > 0 {
		next = items[len(items)-1].Cursor
	}
	return c.JSON(http.StatusOK, ChangePage{Items: items, NextCursor: next})
}

// streamChanges sends the changes after q.after as server-sent events as
// they commit (id: the cursor, so that Last-Event-ID resumes), with a
// comment every 15 s to keep proxies from closing an idle stream, until
// the client goes or the server drains.
func (h *handlers) streamChanges(c echo.Context, q changeQuery) error {
	ctx := c.Request().Context()
	w := c.Response()
	_ = http.NewResponseController(w.Writer).SetWriteDeadline(time.Time{})
	hd := w.Header()
	hd.Set(echo.HeaderContentType, "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	w.Flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		next := h.changes.Next()
		items, err := h.changes.Reader.After(ctx, q.tenants, q.after, q.limit)
		if err != nil {
			if ctx.Err() == nil {
				_, _ = w.Write([]byte(": the feed could not be read; reconnect with Last-Event-ID\n\n"))
				w.Flush()
			}
			return nil
		}
		var msg bytes.Buffer
		for _, ch := range items {
			data, _ := json.Marshal(ch)
			msg.WriteString("id: " + ch.Cursor + "\nevent: " + ch.Type + "\ndata: ")
			msg.Write(data)
			msg.WriteString("\n\n")
			q.after, _ = changes.ParseCursor(ch.Cursor)
		}
		if msg.Len() > 0 {
			if _, err := w.Write(msg.Bytes()); err != nil {
				return nil
			}
			w.Flush()
		}
		if len(items) == q.limit {
			continue
		}
		select {
		case <-next:
		case <-keepAlive.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
			w.Flush()
		case <-h.executor.Draining:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
