package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The soak's webhook receiver: an HTTP server on loopback to which the
// workers' dispatchers POST every change of the soak's workspace. It
// verifies each message with the Standard Webhooks reference library (not
// opsgate's own signing package) and the secret it was given, records what
// it accepted, and answers some attempts with a failure so that retries
// run alongside the kills and the database crash.

// webhookRetrySchedule is the processes' OPSGATE_WEBHOOK_RETRY_SCHEDULE:
// short, so that a failed attempt is tried again within the soak.
const webhookRetrySchedule = "500ms,1s,2s,5s,10s,20s"

// maxInjected bounds the failures the receiver injects per message, so
// that every message gets through well before the schedule ends.
const maxInjected = 3

type receiver struct {
	srv *http.Server
	url string

	mu       sync.Mutex
	endpoint string
	verifier *standardwebhooks.Webhook
	secret   string
	rnd      *rand.Rand
	msgs     map[string]*received // by webhook-id
	requests int
	// early are requests answered 503 before the endpoint was registered.
	early int
	// badSignature and outsideTolerance count requests that did not
	// verify (answered 400), with the first reason of each.
	badSignature, outsideTolerance  int
	firstBadSignature, firstOutside string
	maxSkew                         time.Duration
	// malformed are messages whose body is not {type, timestamp, data}
	// or whose data names another change than webhook-id.
	malformed []string
	injected  map[string]int // 500, 429, slow, timeout
}

// received is what the receiver got of one message (one webhook-id).
type received struct {
	attempts int // requests, verified or not
	accepted int // answered 2xx within the sender's timeout
	failures int // failures injected
	// data and typ are the first verified body's; differs counts later
	// verified bodies whose data was not the same.
	data      json.RawMessage
	typ       string
	differs   int
	accepted1 time.Time // the first 2xx answer
}

// newReceiver starts the receiver on a free loopback port.
func newReceiver() (*receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &receiver{url: "http://" + l.Addr().String() + "/hooks/opsgate", msgs: map[string]*received{},
		injected: map[string]int{}, rnd: rand.New(rand.NewPCG(7, 25))}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	return h, nil
}

func (h *receiver) close() { _ = h.srv.Close() }

// register gives the receiver the endpoint's id and secret.
func (h *receiver) register(endpoint, secret string) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return fmt.Errorf("webhook secret %q...: %w", secret[:min(len(secret), 8)], err)
	}
	h.mu.Lock()
	h.endpoint, h.verifier, h.secret = endpoint, wh, secret
	h.mu.Unlock()
	return nil
}

func (h *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	at := time.Now()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	if h.verifier == nil {
		h.early++
		h.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	h.requests++
	if ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64); err == nil {
		h.maxSkew = max(h.maxSkew, at.Sub(time.Unix(ts, 0)).Abs())
	}
	// The reference library checks the signature and that the timestamp
	// is within its tolerance (5 minutes) of now.
	if err := h.verifier.Verify(body, r.Header); err != nil {
		why := fmt.Sprintf("%s: %v", r.Header.Get("webhook-id"), err)
		if errors.Is(err, standardwebhooks.ErrMessageTooOld) || errors.Is(err, standardwebhooks.ErrMessageTooNew) {
			if h.outsideTolerance++; h.outsideTolerance == 1 {
				h.firstOutside = why
			}
		} else if h.badSignature++; h.badSignature == 1 {
			h.firstBadSignature = why
		}
		h.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := r.Header.Get("webhook-id")
	var msg struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	var ref struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &msg) != nil || json.Unmarshal(msg.Data, &ref) != nil || ref.ID != id || ref.Type != msg.Type || msg.Timestamp == "" {
		h.malformed = append(h.malformed, fmt.Sprintf("%s: %.200s", id, body))
	}
	m := h.msgs[id]
	if m == nil {
		m = &received{data: msg.Data, typ: msg.Type}
		h.msgs[id] = m
	} else if !jsonEqual(m.data, msg.Data) {
		m.differs++
	}
	m.attempts++
	// What this attempt gets: about 5% answered 500, 3% 429 with
	// Retry-After: 1, 1% a slow 2xx (1 to 3 s), 0.1% an answer after the
	// sender's 10 s timeout; never more than maxInjected failures per
	// message.
	var answer string
	if m.failures < maxInjected {
		switch p := h.rnd.Float64(); {
		case p < 0.05:
			answer = "500"
		case p < 0.08:
			answer = "429"
		case p < 0.09:
			answer = "slow"
		case p < 0.091:
			answer = "timeout"
		}
	}
	var slow time.Duration
	switch answer {
	case "500", "429", "timeout":
		m.failures++
		h.injected[answer]++
	case "slow":
		h.injected[answer]++
		slow = time.Second + time.Duration(h.rnd.Int64N(int64(2*time.Second)))
	default:
		m.accepted++
		if m.accepted == 1 {
			m.accepted1 = at
		}
	}
	h.mu.Unlock()

	switch answer {
	case "500":
		w.WriteHeader(http.StatusInternalServerError)
	case "429":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	case "timeout":
		select {
		case <-time.After(11 * time.Second):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	case "slow":
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
		}
		if r.Context().Err() == nil { // the sender is still waiting for the answer
			h.mu.Lock()
			if m.accepted++; m.accepted == 1 {
				m.accepted1 = time.Now()
			}
			h.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// delivered returns the ids of the messages answered 2xx at least once.
func (h *receiver) delivered() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]bool, len(h.msgs))
	for id, m := range h.msgs {
		if m.accepted > 0 {
			out[id] = true
		}
	}
	return out
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// feedChange is one change of the feed as the API answered it.
type feedChange struct {
	id, typ, cursor string
	occurredAt      time.Time
	raw             json.RawMessage
}

// readFeed reads the whole change feed of each tenant of fx, as its caller.
func readFeed(ctx context.Context, a *api, fx *fixture) ([]feedChange, error) {
	var all []feedChange
	for _, t := range fx.tenants {
		after := ""
		for {
			var page struct {
				Items      []json.RawMessage `json:"items"`
				NextCursor string            `json:"next_cursor"`
			}
			path := "/api/v1/changes?limit=500&tenant_id=" + t.id
			if after != "" {
				path += "&after=" + after
			}
			ex := a.do(ctx, "GET", path, t.as.token, nil, t.as.headers(nil), &page)
			if ex.status != 200 || ex.err != "" {
				return nil, fmt.Errorf("GET %s answered %s %s %s", path, statusName(ex.status), ex.code, ex.err)
			}
			for _, raw := range page.Items {
				var c struct {
					ID         string    `json:"id"`
					Type       string    `json:"type"`
					Cursor     string    `json:"cursor"`
					OccurredAt time.Time `json:"occurred_at"`
				}
				if err := json.Unmarshal(raw, &c); err != nil {
					return nil, fmt.Errorf("a change of the feed: %w", err)
				}
				if c.Cursor <= after {
					return nil, fmt.Errorf("the feed answered cursor %s after %s", c.Cursor, after)
				}
				all = append(all, feedChange{id: c.ID, typ: c.Type, cursor: c.Cursor, occurredAt: c.OccurredAt, raw: raw})
				after = c.Cursor
			}
			if len(page.Items) == 0 {
				break
			}
		}
	}
	return all, nil
}

// webhookOutcome is what the end of the soak found of the change feed and
// the webhook deliveries.
type webhookOutcome struct {
	feed    []feedChange
	feedErr error
	// waited is how long after the feed was read every change had arrived
	// (or the limit).
	waited   time.Duration
	complete bool
	// missingEvents are run events of the soak's tenants without their
	// change in the feed.
	missingEvents []string
	// attempts are the delivery log's attempts by state; retried those
	// after a message's first.
	attempts map[string]int
	retried  int
}

// runEventTypes are the events each of which is one change of a run.
var runEventTypes = []string{"StartAccepted", "StartBlocked", "StartDeduped", "StartScopeBusy", "RunStarted", "RunSucceeded",
	"RunFailed", "RunCancelled"}

// awaitWebhooks reads the whole change feed once the changes consumer
// caught up, checks that every run event has its change, and waits up to
// limit until every change of the feed was accepted by the receiver.
func awaitWebhooks(ctx context.Context, cfg config, a *api, fx *fixture, pool *pgxpool.Pool, h *receiver, limit time.Duration) webhookOutcome {
	var out webhookOutcome
	if _, ok := catchUp(ctx, pool, time.Now(), 60*time.Second, []string{"changes"}); !ok {
		cfg.logf("the changes consumer did not catch up within a minute")
	}
	out.feed, out.feedErr = readFeed(ctx, a, fx)
	if out.feedErr != nil {
		return out
	}
	inFeed := make(map[string]bool, len(out.feed))
	for _, c := range out.feed {
		inFeed[c.id] = true
	}
	tenants := make([]string, len(fx.tenants))
	for i, t := range fx.tenants {
		tenants[i] = t.id
	}
	rows, err := pool.Query(ctx, `SELECT event_id, event_type FROM events WHERE tenant_id = ANY($1) AND event_type = ANY($2)`, tenants, runEventTypes)
	if err != nil {
		out.feedErr = fmt.Errorf("read the run events: %w", err)
		return out
	}
	for rows.Next() {
		var id, typ string
		if err := rows.Scan(&id, &typ); err != nil {
			rows.Close()
			out.feedErr = err
			return out
		}
		if !inFeed[id] {
			out.missingEvents = append(out.missingEvents, typ+" "+id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		out.feedErr = err
		return out
	}
	cfg.logf("change feed: %d changes; waiting (up to %s) until each arrived at the webhook receiver", len(out.feed), limit)
	began := time.Now()
	for {
		got := h.delivered()
		missing := 0
		for _, c := range out.feed {
			if !got[c.id] {
				missing++
			}
		}
		if missing == 0 {
			out.complete, out.waited = true, time.Since(began)
			break
		}
		if time.Since(began) > limit || ctx.Err() != nil {
			out.waited = time.Since(began)
			cfg.logf("%d changes still not at the receiver after %s", missing, out.waited.Round(time.Millisecond))
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	out.attempts = map[string]int{}
	rows, err = pool.Query(ctx, `SELECT state, count(*), count(*) FILTER (WHERE attempt > 1) FROM webhook_deliveries GROUP BY state`)
	if err == nil {
		for rows.Next() {
			var state string
			var n, retried int
			if rows.Scan(&state, &n, &retried) == nil {
				out.attempts[state] = n
				out.retried += retried
			}
		}
		rows.Close()
	}
	return out
}

// webhookChecks adds the webhook lines to rep.
func (r *run) webhookChecks(rep *report) {
	h, w := r.hooks, r.webhooks
	if w.feedErr != nil {
		rep.lines = append(rep.lines, line{name: "changes not delivered to the webhook", measured: "feed not read: " + w.feedErr.Error(), limit: "0", breach: true})
	} else {
		rep.zero("run events missing from the change feed", len(w.missingEvents), strings.Join(first(w.missingEvents, 2), ", "))
		got := h.delivered()
		var missing []string
		for _, c := range w.feed {
			if !got[c.id] {
				missing = append(missing, c.typ+" "+c.id)
			}
		}
		rep.zero("changes not delivered to the webhook", len(missing), fmt.Sprintf("after %s; %s", w.waited.Round(time.Second), strings.Join(first(missing, 2), ", ")))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rep.zero("webhook messages with a bad signature", h.badSignature, h.firstBadSignature)
	rep.zero("webhook messages outside the timestamp tolerance (5m)", h.outsideTolerance, h.firstOutside)
	// A message's data is the feed's change of the same id, the same on
	// every attempt.
	var differ []string
	differ = append(differ, h.malformed...)
	feed := make(map[string]feedChange, len(w.feed))
	for _, c := range w.feed {
		feed[c.id] = c
	}
	var ids []string
	for id := range h.msgs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var delays []time.Duration
	duplicates, retried := 0, 0
	for _, id := range ids {
		m := h.msgs[id]
		if m.differs > 0 {
			differ = append(differ, fmt.Sprintf("%s: %d attempts with other data", id, m.differs))
		}
		duplicates += max(0, m.accepted-1)
		retried += m.attempts - 1
		c, ok := feed[id]
		switch {
		case w.feedErr != nil:
		case !ok:
			differ = append(differ, id+": not in the feed")
		case !jsonEqual(c.raw, m.data):
			differ = append(differ, fmt.Sprintf("%s: data %.300s, the feed %.300s", id, m.data, c.raw))
		}
		if ok && m.accepted > 0 {
			delays = append(delays, m.accepted1.Sub(c.occurredAt))
		}
	}
	rep.zero("webhook messages that differ from the feed's change", len(differ), strings.Join(first(differ, 1), "; "))
	rep.zero("webhook secret in plaintext in the logs", r.secretInLogs(h.secret), "")

	rep.note("changes in the feed", fmt.Sprintf("%d (%s)", len(w.feed), formatCounts(countTypes(w.feed))))
	rep.note("webhook messages received", fmt.Sprintf("%d requests for %d changes; every change at the receiver %s after the feed was read",
		h.requests, len(h.msgs), w.waited.Round(time.Millisecond)))
	rep.note("webhook duplicates (at least once)", fmt.Sprintf("%d changes accepted more than once", duplicates))
	rep.note("webhook retried attempts", fmt.Sprintf("%d at the receiver; delivery log: %d attempts after a first (%s)", retried, w.retried, formatCounts(w.attempts)))
	rep.note("webhook failures injected", formatCounts(h.injected))
	if len(delays) > 0 {
		sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
		pct := func(p float64) time.Duration { return delays[int(p*float64(len(delays)-1))].Round(time.Millisecond) }
		rep.note("webhook delay, change to first 2xx", fmt.Sprintf("p50 %s, p99 %s, max %s; timestamp skew at most %s",
			pct(.5), pct(.99), delays[len(delays)-1].Round(time.Millisecond), h.maxSkew.Round(time.Second)))
	}
}

func countTypes(feed []feedChange) map[string]int {
	out := map[string]int{}
	for _, c := range feed {
		out[c.typ]++
	}
	return out
}
