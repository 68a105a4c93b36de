package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/opsgate/opsgate/changes"
)

// Outcomes pushed (contract section 14): how soon a change is visible to a
// client long-polling the change feed, and how soon a webhook endpoint on
// loopback receives it, both timed from the change's occurred_at (its
// event's recorded_at, on this machine's clock, as the bench's), and from
// its event's commit (the definition), where the cluster tracks
// commit timestamps (fromCommit).

// hooks is a webhook receiver on loopback and the endpoint of the bench's
// workspace, subscribed to every type, that posts to it.
type hooks struct {
	url, endpoint string
	srv           *http.Server
	verifier      *standardwebhooks.Webhook

	mu       sync.Mutex
	got      map[string]hookMsg // by webhook-id: its first receipt
	requests int
	// duplicates are messages received again; bad those whose signature
	// or timestamp did not verify (answered 400).
	duplicates, bad int
	firstBad        string
}

type hookMsg struct {
	seq   int64         // the change's sequence number (its cursor)
	at    time.Time     // its first receipt
	delay time.Duration // first receipt - occurred_at
}

// newHooks starts the receiver and registers the endpoint for fx's
// workspace through the admin API.
func newHooks(ctx context.Context, c *client, fx *fixture) (*hooks, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hooks{url: "http://" + l.Addr().String() + "/hooks", got: map[string]hookMsg{}}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	var ep struct{ ID, Secret string }
	status, err := c.do(ctx, "POST", "/api/v1/admin/webhooks", adminToken, map[string]any{"workspace_id": fx.workspace, "url": h.url,
		"description": "bench receiver"}, &ep)
	if err == nil && status != 201 {
		err = fmt.Errorf("create the webhook endpoint: answered %d", status)
	}
	if err == nil {
		h.verifier, err = standardwebhooks.NewWebhook(ep.Secret)
	}
	if err != nil {
		h.close()
		return nil, err
	}
	h.endpoint = ep.ID
	return h, nil
}

func (h *hooks) close() { _ = h.srv.Close() }

// enable enables or disables the endpoint: a disabled endpoint is sent
// nothing, and no delivery is queued for it.
func (h *hooks) enable(ctx context.Context, c *client, on bool) error {
	status, err := c.do(ctx, "PATCH", "/api/v1/admin/webhooks/"+h.endpoint, adminToken, map[string]any{"enabled": on}, nil)
	if err == nil && status != 200 {
		err = fmt.Errorf("PATCH the webhook endpoint: answered %d", status)
	}
	return err
}

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	at := time.Now()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var msg struct {
		Data struct {
			Cursor     string    `json:"cursor"`
			OccurredAt time.Time `json:"occurred_at"`
		} `json:"data"`
	}
	verr := h.verifier.Verify(body, r.Header)
	if verr == nil {
		verr = json.Unmarshal(body, &msg)
	}
	var seq int64
	if verr == nil {
		seq, verr = changes.ParseCursor(msg.Data.Cursor)
	}
	id := r.Header.Get("webhook-id")
	h.mu.Lock()
	h.requests++
	switch _, seen := h.got[id]; {
	case verr != nil:
		if h.bad++; h.bad == 1 {
			h.firstBad = verr.Error()
		}
	case seen:
		h.duplicates++
	default:
		h.got[id] = hookMsg{seq: seq, at: at, delay: at.Sub(msg.Data.OccurredAt)}
	}
	h.mu.Unlock()
	if verr != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// received returns how many requests the receiver has had (0 for no
// receiver).
func (h *hooks) received() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

// after returns the messages of changes after sequence number seq as
// first received, by change id.
func (h *hooks) after(seq int64) map[string]hookMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]hookMsg{}
	for id, m := range h.got {
		if m.seq > seq {
			out[id] = m
		}
	}
	return out
}

// receivedAfter returns when the messages of changes after sequence
// number seq were first received, by change id.
func (h *hooks) receivedAfter(seq int64) map[string]time.Time {
	out := map[string]time.Time{}
	for id, m := range h.after(seq) {
		out[id] = m.at
	}
	return out
}

// fromCommit summarises, for each change of seen (by id: when it was
// seen), the time from its event's commit to then: the delay as issue 25
// defines it (commit to change visible). occurred_at, which the other
// figures start from, is the event's recorded_at, taken before its
// decision waits for its commit. It needs track_commit_timestamp, which
// make bench's cluster (cmd/devdb) has on; without, it says so.
func fromCommit(ctx context.Context, pool *pgxpool.Pool, seen map[string]time.Time) (stats, error) {
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	rows, err := pool.Query(ctx, `SELECT e.event_id, pg_xact_commit_timestamp(e.xmin) FROM events e WHERE e.event_id = ANY($1)`, ids)
	if err != nil {
		return stats{}, fmt.Errorf("read the events' commit timestamps (track_commit_timestamp on?): %w", err)
	}
	delays := make([]time.Duration, 0, len(ids))
	var id string
	var committed *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &committed}, func() error {
		if committed == nil {
			return fmt.Errorf("event %s has no commit timestamp (committed before track_commit_timestamp was on?)", id)
		}
		delays = append(delays, seen[id].Sub(*committed))
		return nil
	})
	if err != nil {
		return stats{}, fmt.Errorf("read the events' commit timestamps (track_commit_timestamp on?): %w", err)
	}
	if len(delays) < len(ids) {
		return stats{}, fmt.Errorf("%d of %d changes have no event", len(ids)-len(delays), len(ids))
	}
	st := summarise(delays, 0, 0)
	st.Throughput = 0
	return st, nil
}

// recordFromCommit puts fromCommit's figure of seen in rep under name, or
// why there is none in its checks.
func recordFromCommit(ctx context.Context, pool *pgxpool.Pool, seen map[string]time.Time, rep *report, name string) {
	st, err := fromCommit(ctx, pool, seen)
	if err != nil {
		rep.Checks[name] = err.Error()
		return
	}
	rep.Results[name] = st
}

// summary describes what the receiver got, for the checks.
func (h *hooks) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := fmt.Sprintf("%d requests, %d changes, %d duplicates, %d with a bad signature", h.requests, len(h.got), h.duplicates, h.bad)
	if h.firstBad != "" {
		s += " (the first: " + h.firstBad + ")"
	}
	return s
}

// collect waits (up to limit) until the receiver has every change after
// sequence number after that the feed holds once the changes consumer
// caught up, and summarises their delivery delays.
func (h *hooks) collect(ctx context.Context, pool *pgxpool.Pool, after int64, limit time.Duration) stats {
	began := time.Now()
	caughtUp(ctx, pool, changes.ConsumerName, limit)
	var want int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM changes WHERE seq > $1`, after).Scan(&want)
	var got map[string]hookMsg
	for {
		got = h.after(after)
		if len(got) >= want || time.Since(began) > limit {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	end := time.Now()
	delays := make([]time.Duration, 0, want)
	for _, m := range got {
		delays = append(delays, m.delay)
	}
	missing := max(0, want-len(got))
	if missing > 0 {
		// The changes not received by then count with their delay so far:
		// the percentiles are then lower bounds.
		rows, err := pool.Query(ctx, `SELECT id, occurred_at FROM changes WHERE seq > $1`, after)
		if err == nil {
			for rows.Next() {
				var id string
				var at time.Time
				if rows.Scan(&id, &at) == nil {
					if _, ok := got[id]; !ok {
						delays = append(delays, end.Sub(at))
					}
				}
			}
			rows.Close()
		}
	}
	st := summarise(delays, missing, end.Sub(began))
	if missing > 0 {
		st.FirstError = fmt.Sprintf("%d of %d changes not at the receiver %s after the runs ended; counted with their delay then, so the percentiles are lower bounds",
			missing, want, limit)
	}
	st.Throughput = 0 // a delay figure: no rate
	return st
}

// latestChange returns the newest change's sequence number (0 for none).
func latestChange(ctx context.Context, pool *pgxpool.Pool) int64 {
	var seq int64
	_ = pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq)
	return seq
}

// caughtUp waits (up to limit) until consumer has applied the newest event.
func caughtUp(ctx context.Context, pool *pgxpool.Pool, consumer string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var behind bool
		err := pool.QueryRow(ctx, `SELECT coalesce((c.tx_id, c.position) < (h.tx_id, h.position), true)
			FROM (SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) h
			LEFT JOIN feed_checkpoints c ON c.consumer = $1`, consumer).Scan(&behind)
		if err == nil && !behind {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// drainWebhooks waits (up to limit) until no delivery to an enabled
// endpoint is pending (a row due, or a change of its stream after how far
// its first attempts are recorded), and returns how long that took.
func drainWebhooks(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) time.Duration {
	took, _ := drainWebhooksWhy(ctx, pool, limit)
	return took
}

// drainWebhooksWhy is drainWebhooks, and, when the drain took a second or
// more, what it waited for: the change feed, then the deliveries pending
// when it had caught up.
func drainWebhooksWhy(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) (time.Duration, string) {
	start := time.Now()
	caughtUp(ctx, pool, changes.ConsumerName, limit)
	feed := time.Since(start)
	var first string
	for time.Since(start) < limit {
		var rows, behind int
		var failed *string
		err := pool.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
					WHERE d.state = 'pending' AND e.enabled),
				(SELECT count(*) FROM webhook_streams w JOIN webhook_endpoints e ON e.id = w.endpoint_id AND e.enabled
					JOIN changes c ON c.seq > w.sent AND c.tenant_id IN (SELECT t.id FROM tenants t WHERE t.workspace_id = e.workspace_id)
						AND (e.types IS NULL OR c.type = ANY(e.types))),
				(SELECT max(error) FROM webhook_deliveries WHERE state = 'failed')`).Scan(&rows, &behind, &failed)
		if err == nil && rows == 0 && behind == 0 {
			break
		}
		if err == nil && first == "" {
			first = fmt.Sprintf("%d attempts due later, %d changes of a stream not recorded as sent", rows, behind)
			if failed != nil {
				first += ", an attempt failed: " + *failed
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if took < time.Second {
		return took, ""
	}
	return took, fmt.Sprintf("the change feed caught up after %s; then %s", feed.Round(time.Millisecond), first)
}

// feedWatch is a client following the change feed as a platform would:
// from after=latest, long polls of wait_ms=5000, a page of up to 500 at a
// time; each change's delay is when its page had arrived (read, not yet
// decoded) minus its occurred_at.
type feedWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	cursor   string
	delays   []time.Duration
	seen     map[string]time.Time // by change id, when its page was read
	errs     int
	firstErr string
}

type changePage struct {
	Items []struct {
		ID         string    `json:"id"`
		Cursor     string    `json:"cursor"`
		OccurredAt time.Time `json:"occurred_at"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// watchFeed starts following fx's change feed from its newest change.
func watchFeed(ctx context.Context, c *client, fx *fixture) (*feedWatch, error) {
	var page changePage
	if _, err := c.do(ctx, "GET", "/api/v1/changes?after=latest&limit=1", fx.token, nil, &page); err != nil {
		return nil, err
	}
	if page.NextCursor == "" {
		return nil, fmt.Errorf("the change feed answered no next_cursor")
	}
	w := &feedWatch{cursor: page.NextCursor, done: make(chan struct{}), seen: map[string]time.Time{}}
	ctx, w.cancel = context.WithCancel(ctx)
	go w.run(ctx, c, fx)
	return w, nil
}

func (w *feedWatch) run(ctx context.Context, c *client, fx *fixture) {
	defer close(w.done)
	for ctx.Err() == nil {
		w.mu.Lock()
		cursor := w.cursor
		w.mu.Unlock()
		// A change is visible once its page has arrived: seen is taken
		// before the page is decoded.
		var page changePage
		status, body, seen, err := c.exchange(ctx, "GET", "/api/v1/changes?limit=500&wait_ms=5000&after="+cursor, fx.token, "", nil)
		if ctx.Err() != nil {
			return
		}
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("GET /api/v1/changes: %d %s", status, body)
		}
		if err == nil {
			err = json.Unmarshal(body, &page)
		}
		w.mu.Lock()
		if err != nil {
			if w.errs++; w.errs == 1 {
				w.firstErr = err.Error()
			}
			w.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, it := range page.Items {
			w.delays = append(w.delays, seen.Sub(it.OccurredAt))
			w.seen[it.ID] = seen
		}
		if page.NextCursor != "" {
			w.cursor = page.NextCursor
		}
		w.mu.Unlock()
	}
}

// stop waits (up to limit) until the watcher has read every change the
// feed holds once the changes consumer caught up, stops it and
// summarises the delays.
func (w *feedWatch) stop(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) stats {
	began := time.Now()
	caughtUp(ctx, pool, changes.ConsumerName, limit)
	want := changes.Cursor(latestChange(ctx, pool))
	for time.Since(began) < limit {
		w.mu.Lock()
		done := strings.Compare(w.cursor, want) >= 0
		w.mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	st := summarise(w.delays, w.errs, time.Since(began))
	st.FirstError, st.Throughput = w.firstErr, 0
	if w.cursor < want {
		st.FirstError = strings.TrimPrefix(st.FirstError+"; ", "; ") + fmt.Sprintf("the watcher read up to %s, not %s", w.cursor, want)
	}
	return st
}

// targets are the figures of section 14 with a target: the p99 of each
// delay.
var targets = []struct {
	result string
	what   string
	p99ms  float64
}{
	{"change_feed_delay_from_commit", "change feed delay p99 under the lifecycle (the event's commit to a long-polling client)", 100},
	{"webhook_delivery_delay_from_commit", "webhook delivery delay p99 under the lifecycle (the event's commit to a local receiver)", 250},
	// The same from the event's recorded_at, its decision's commit included.
	{"change_feed_delay", "change feed delay p99 under the lifecycle (recorded_at to a long-polling client)", 100},
	{"webhook_delivery_delay", "webhook delivery delay p99 under the lifecycle (recorded_at to a local receiver)", 250},
	// The same at a light load, for reference.
	{"change_feed_delay_light", "change feed delay p99 at a light load", 100},
	{"availability_50_connections", "availability of a tenant with 50 connections, p99", 20},
	{"webhook_delivery_delay_light", "webhook delivery delay p99 at a light load", 250},
	{"audit_inclusion_proof", "inclusion proof of one event over HTTP, p99, on the seeded history", 20},
}

// checkTargets records, for each target whose figure was measured,
// whether it was met.
func checkTargets(rep *report) {
	for _, t := range targets {
		s, ok := rep.Results[t.result]
		if !ok || s.Count == 0 {
			continue
		}
		verdict := "met"
		if s.P99ms >= t.p99ms || s.Errors > 0 {
			verdict = "MISSED"
		}
		rep.Targets[t.result+"_p99"] = fmt.Sprintf("%.1f ms (p50 %.1f ms, %d samples) against < %.0f ms: %s", s.P99ms, s.P50ms, s.Count, t.p99ms, verdict)
	}
}

// scrape reads the server's /metrics (nil when it cannot).
func scrape(base string) map[string]*dto.MetricFamily {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	return fams
}

// histDelta returns how many observations histogram family name got
// between two scrapes in its series whose label key is value (every
// series when key is ""), and the upper bounds of the buckets that hold
// their median and 99th percentile (+Inf beyond the last bucket).
func histDelta(before, after map[string]*dto.MetricFamily, name, key, value string) (n, p50, p99 float64) {
	counts := func(fams map[string]*dto.MetricFamily) (map[float64]float64, float64) {
		out, total := map[float64]float64{}, 0.0
		f := fams[name]
		if f == nil {
			return out, 0
		}
		for _, m := range f.Metric {
			if key != "" && !hasLabel(m, key, value) || m.Histogram == nil {
				continue
			}
			total += float64(m.Histogram.GetSampleCount())
			for _, b := range m.Histogram.Bucket {
				out[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
		return out, total
	}
	b0, n0 := counts(before)
	b1, n1 := counts(after)
	n = n1 - n0
	if n <= 0 {
		return 0, 0, 0
	}
	var bounds []float64
	for ub := range b1 {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	quantile := func(q float64) float64 {
		for _, ub := range bounds {
			if b1[ub]-b0[ub] >= q*n {
				return ub
			}
		}
		return math.Inf(1)
	}
	return n, quantile(.5), quantile(.99)
}

func hasLabel(m *dto.Metric, key, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == key && l.GetValue() == value {
			return true
		}
	}
	return false
}

// metricsOfPhase records what the server's metrics say of a lifecycle
// phase: how late the changes consumer read the events (its lag before
// its own transaction commits), and the webhook attempts sent and how
// long each took to be answered.
func metricsOfPhase(before, after map[string]*dto.MetricFamily, rep *report, suffix string) {
	if before == nil || after == nil {
		return
	}
	if n, p50, p99 := histDelta(before, after, "opsgate_projector_apply_lag_seconds", "projector", changes.ConsumerName); n > 0 {
		rep.Checks["changes_consumer_read_lag"+suffix] = fmt.Sprintf("%.0f changes, p50 <= %gs, p99 <= %gs (event recorded to the feed reading it, before the consumer's commit)", n, p50, p99)
	}
	if n, p50, p99 := histDelta(before, after, "opsgate_webhook_attempt_seconds", "", ""); n > 0 {
		rep.Checks["webhook_attempts"+suffix] = fmt.Sprintf("%.0f attempts, answered p50 <= %gs, p99 <= %gs", n, p50, p99)
	}
}

// pushedAtLightLoad measures the change feed's and the webhook's delays
// under a light load (starts paced at 20 a second for 10 s, each run a
// few changes), with the endpoint enabled for the phase: what the path
// costs when the machine is not saturated.
func pushedAtLightLoad(ctx context.Context, cfg config, c *client, pool *pgxpool.Pool, fx *fixture, rep *report) error {
	progress("pushed outcomes at a light load: 20 starts/s for 10 s, the change feed long-polled%s",
		map[bool]string{true: ", the webhook endpoint enabled"}[fx.hooks != nil])
	drain(ctx, pool, time.Minute)
	if fx.hooks != nil {
		if cfg.webhook == "lifecycle" {
			if err := fx.hooks.enable(ctx, c, true); err != nil {
				return err
			}
			defer func() { _ = fx.hooks.enable(ctx, c, false) }()
		}
		drainWebhooks(ctx, pool, time.Minute)
	}
	from := latestChange(ctx, pool)
	w, err := watchFeed(ctx, c, fx)
	if err != nil {
		return fmt.Errorf("follow the change feed: %w", err)
	}
	st := pacedLoad(ctx, c, fx, 4, 20, 0, 10*time.Second)
	drain(ctx, pool, time.Minute)
	rep.Results["change_feed_delay_light"] = w.stop(ctx, pool, time.Minute)
	recordFromCommit(ctx, pool, w.seen, rep, "change_feed_delay_light_from_commit")
	if st.Errors > 0 {
		rep.Checks["pushed_light_load_starts"] = fmt.Sprintf("%d errors, the first: %s", st.Errors, st.FirstError)
	}
	if fx.hooks != nil {
		rep.Results["webhook_delivery_delay_light"] = fx.hooks.collect(ctx, pool, from, time.Minute)
		recordFromCommit(ctx, pool, fx.hooks.receivedAfter(from), rep, "webhook_delivery_delay_light_from_commit")
	}
	wait, err := waitLatency(ctx, c, fx, 40)
	if err != nil {
		return err
	}
	rep.Results["wait_answer_after_end"] = wait
	return nil
}

// waitLatency starts n runs of 100 ms, one at a time, each followed at
// once by GET /operations/{id}?wait_ms=10000, and returns how long after
// each run's end (its finished_at, on this machine's clock) the wait was
// answered.
func waitLatency(ctx context.Context, c *client, fx *fixture, n int) (stats, error) {
	var lat []time.Duration
	began := time.Now()
	for i := range n {
		body := map[string]any{"provider": "simulated", "display_name": fmt.Sprintf("bench wait %d", i), "consent": "granted",
			"credentials": "valid", "enabled": true, "simulation": map[string]any{"latency_ms": 100, "fail_with": nil}}
		var conn struct{ ID string }
		if _, err := c.do(ctx, "POST", "/api/v1/tenants/"+fx.tenant+"/provider-connections", fx.token, body, &conn); err != nil {
			return stats{}, fmt.Errorf("wait latency: %w", err)
		}
		var start struct{ Run struct{ ID string } }
		if status, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conn.ID+"/inventory-sync", fx.token, nil, &start); err != nil || status != http.StatusAccepted {
			return stats{}, fmt.Errorf("wait latency: start answered %d: %v", status, err)
		}
		var run struct {
			Status     string
			FinishedAt *time.Time `json:"finished_at"`
		}
		if _, err := c.do(ctx, "GET", "/api/v1/operations/"+start.Run.ID+"?wait_ms=10000", fx.token, nil, &run); err != nil {
			return stats{}, fmt.Errorf("wait latency: %w", err)
		}
		answered := time.Now()
		if run.FinishedAt == nil {
			return stats{}, fmt.Errorf("wait latency: the wait answered the run %s", run.Status)
		}
		lat = append(lat, answered.Sub(*run.FinishedAt))
	}
	return summarise(lat, 0, time.Since(began)), nil
}
