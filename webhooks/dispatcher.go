package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/webhooks/netguard"
	"github.com/opsgate/opsgate/webhooks/signing"
)

// Topic is announced when attempts are queued as rows (pings, replays)
// and when an endpoint is created or enabled again: dispatchers wait for
// it, and for the change feed's.
const Topic = "webhook_deliveries"

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	// Schedule is the delay before each retry after a failed attempt
	// (OPSGATE_WEBHOOK_RETRY_SCHEDULE); past its end a message is given up.
	Schedule []time.Duration
	// AllowPrivate lets deliveries reach loopback, private and link-local
	// addresses (OPSGATE_WEBHOOK_ALLOW_PRIVATE).
	AllowPrivate bool
	// Timeout bounds an attempt (default 10 s): no answer by then fails it.
	Timeout time.Duration
	// Lease is how long a claimed attempt, or a stream held, is this
	// dispatcher's alone (default Timeout + 20 s, at least 2 x Timeout);
	// one whose dispatcher died is taken over once it has passed.
	Lease time.Duration
	// Concurrency bounds attempts in flight in this process (default 256),
	// PerEndpoint those to one endpoint at first (default 8), so that a
	// slow endpoint never holds up the others. An endpoint that answers
	// 2xx fast while its attempts wait may have more in flight, up to 16 x
	// PerEndpoint (queues), and has up to twice that claimed ahead of
	// sending, so that one claim serves many of them.
	Concurrency, PerEndpoint int
	// Wake returns a channel that receives when deliveries may have been
	// queued (Topic), Changes one that receives when changes may have
	// been added to the feed (changes.Topic); PollInterval is the
	// fallback, and how soon a retry that comes due is seen (default 1 s).
	Wake, Changes func() <-chan struct{}
	PollInterval  time.Duration
	// Observe, if set, is told of each attempt: its endpoint, its result
	// (delivered, failed, gave_up) and how long it took.
	Observe func(endpoint, result string, took time.Duration)
	// Recent, if set, holds the changes this process's change feed
	// committed last (changes.Recent): a stream that follows on from them
	// reads them there rather than from the database.
	Recent recentChanges
	// Yield, if set, reports whether this process's decisions need the
	// cores (gate.Service.Shedding: starts are refused as overloaded).
	// Meanwhile the dispatcher reads and claims nothing new but once a
	// second (yieldFloor), and sends what it holds: deliveries lag,
	// decisions and runs go first.
	Yield func() bool
}

// yieldFloor is how often a dispatcher that yields still reads, so that
// deliveries go on under a lasting overload; yieldPause how long it waits
// before it asks again.
const (
	yieldFloor = time.Second
	yieldPause = 20 * time.Millisecond
)

// recentChanges holds the change feed's newest changes in memory.
type recentChanges interface {
	// Following returns up to limit changes that follow sequence number
	// after, the sequence number they run through, and whether it holds
	// more after that; none when it does not hold the one that follows
	// after.
	Following(after int64, limit int) (list []changes.Change, through int64, more bool)
}

// maxResponseBody is how much of an answer's body is read.
const maxResponseBody = 64 << 10

// Dispatcher sends due deliveries. Any number of processes may run one:
// an attempt is claimed (claimed_until) before it is sent, so no two send
// it at once, and its result is recorded only by the dispatcher whose
// claim it still is.
//
// The first attempt of each change comes from the endpoint's stream
// (streams.go), which one dispatcher holds at a time; retries, pings and
// replays are attempts queued as rows, claimed one by one.
type Dispatcher struct {
	db     *pgxpool.Pool
	cfg    DispatcherConfig
	client *http.Client
	logger *slog.Logger

	queues  *queues
	sending sync.WaitGroup

	mu sync.Mutex
	// streams are the endpoints' streams this dispatcher holds.
	streams map[string]*stream
	// workspaces are the workspaces of the tenants whose changes streams
	// read from memory (readMemory; Run's goroutine alone uses it).
	workspaces map[string]string
	// results are the answers of attempts, recorded in batches by one
	// recorder (record) while the next attempts are already sent.
	results chan attemptResult
}

// attemptResult is what came of attempt c.
type attemptResult struct {
	c       claimed
	r       result
	outcome string
}

// NewDispatcher returns a dispatcher over db.
func NewDispatcher(db *pgxpool.Pool, cfg DispatcherConfig, logger *slog.Logger) *Dispatcher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Lease <= cfg.Timeout {
		cfg.Lease = cfg.Timeout + 20*time.Second
	}
	// A stream renewed four times per holding must stay sendable between
	// renewals (sendable).
	cfg.Lease = max(cfg.Lease, 2*cfg.Timeout)
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.PerEndpoint <= 0 {
		cfg.PerEndpoint = 8
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	transport := &http.Transport{
		// No proxy from the environment: the guard must see the address
		// actually dialled.
		Proxy:                 nil,
		DialContext:           netguard.Dialer(cfg.AllowPrivate, cfg.Timeout).DialContext,
		MaxIdleConnsPerHost:   windowGrowth * cfg.PerEndpoint,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		// An answer's body is read only to be dropped.
		DisableCompression: true,
	}
	client := &http.Client{
		// No Timeout: each attempt's context bounds the whole exchange
		// (send), and a second deadline would cost a timer per attempt.
		Transport: transport,
		// Redirects are not followed: a 3xx is a failed attempt.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Dispatcher{db: db, cfg: cfg, client: client, logger: logger,
		queues: newQueues(cfg), results: make(chan attemptResult, cfg.Concurrency), streams: map[string]*stream{},
		workspaces: map[string]string{}}
}

// claimed is an attempt this dispatcher holds: a row claimed until
// claimedUntil, or the first attempt of change seq of stream.
type claimed struct {
	id, endpoint, message, typ string
	attempt                    int
	claimedUntil               time.Time
	url                        string
	secrets                    []string
	body                       []byte
	seq                        int64
	stream                     *stream
}

// Run sends due deliveries until ctx ends, then waits for the attempts in
// flight and gives back those claimed but not sent.
func (d *Dispatcher) Run(ctx context.Context) {
	recorded := make(chan struct{})
	go func() { defer close(recorded); d.recordAll(ctx) }()
	defer func() {
		d.sending.Wait()
		d.giveBack()
		close(d.results)
		<-recorded
		release, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		d.releaseStreams(release)
	}()
	poll := time.NewTicker(d.cfg.PollInterval)
	defer poll.Stop()
	var taken, renewed, read time.Time
	for ctx.Err() == nil {
		var wake, changed <-chan struct{}
		if d.cfg.Wake != nil {
			wake = d.cfg.Wake()
		}
		if d.cfg.Changes != nil {
			changed = d.cfg.Changes()
		}
		// Free streams are looked for every poll interval (at least a
		// second: an endpoint created or enabled wakes the dispatchers),
		// the ones held renewed four times per holding.
		if renew := time.Since(renewed) >= d.cfg.Lease/4; renew || time.Since(taken) >= max(d.cfg.PollInterval, time.Second) {
			if err := d.holdStreams(ctx, renew); err != nil {
				if ctx.Err() == nil {
					d.logger.Warn("hold webhook streams failed; trying again", "err", err)
				}
			} else if taken = time.Now(); renew {
				renewed = taken
			}
		}
		if d.cfg.Yield != nil && time.Since(read) < yieldFloor && d.cfg.Yield() {
			select {
			case <-ctx.Done():
			case <-time.After(yieldPause):
			}
			continue
		}
		read = time.Now()
		more := false
		for _, next := range []func(context.Context, int, func(string) int) ([]claimed, bool, error){d.readStreams, d.claim} {
			free, room := d.queues.room()
			if free <= 0 {
				break
			}
			list, full, err := next(ctx, free, room)
			if err != nil && ctx.Err() == nil {
				d.logger.Warn("read or claim webhook deliveries failed; trying again", "err", err)
			}
			d.queues.hold(list)
			d.pump(ctx)
			more = more || full
		}
		if more {
			continue // there may be more: look again
		}
		select {
		case <-ctx.Done():
		case <-wake:
			taken = time.Time{} // an endpoint may have been created or enabled: look for its stream now
		case <-changed:
		case <-poll.C:
		case <-d.queues.low:
			// Under load queues run low one after the other: refill them
			// together, a moment later.
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
}

// pump starts sending held attempts, as many as the limits allow.
func (d *Dispatcher) pump(ctx context.Context) {
	if ctx.Err() != nil {
		return // stopping: what waits is given back
	}
	for _, c := range d.queues.next() {
		d.sending.Go(func() {
			d.queues.sent(c.endpoint, d.attempt(ctx, c))
			d.pump(ctx)
		})
	}
}

// giveBack hands the attempts claimed but not sent back to whoever
// claims next, through the recorder.
func (d *Dispatcher) giveBack() {
	for _, c := range d.queues.drop() {
		if c.stream == nil { // a stream's are read again (releaseStreams)
			d.results <- attemptResult{c: c, outcome: released}
		}
	}
}

// claim claims up to n due attempts, so that no endpoint has more than
// PerEndpoint in flight here (those of busy counted): the enabled
// endpoints with due attempts first, then each one's oldest, a few at a
// time (an index scan that stops at its limit, whatever the backlog),
// all in one round trip. An attempt whose dispatcher died while it held
// it is recorded as failed and a next attempt, due at once, is claimed in
// its place. It reports whether it claimed all n: there may be more.
func (d *Dispatcher) claim(ctx context.Context, n int, room func(endpoint string) int) ([]claimed, bool, error) {
	var list []claimed
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		list = list[:0]
		rows, err := tx.Query(ctx, `SELECT e.id FROM webhook_endpoints e WHERE e.enabled AND EXISTS (
				SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.state = 'pending'
					AND d.next_attempt_at <= now() AND (d.claimed_until IS NULL OR d.claimed_until < now()))
			ORDER BY random()`)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		endpoints, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		var b pgx.Batch
		var resumed []claimed
		for _, endpoint := range endpoints {
			free := room(endpoint)
			if free <= 0 || n <= 0 {
				continue
			}
			free = min(free, n)
			n -= free
			b.Queue(`WITH locked AS (
					SELECT d.id, d.claimed_until IS NOT NULL AS interrupted FROM webhook_deliveries d
					WHERE d.endpoint_id = $1 AND d.state = 'pending' AND d.next_attempt_at <= now()
						AND (d.claimed_until IS NULL OR d.claimed_until < now())
					ORDER BY d.next_attempt_at LIMIT $2
					FOR UPDATE SKIP LOCKED
				)
				UPDATE webhook_deliveries d SET claimed_until = clock_timestamp() + $3 * interval '1 millisecond'
				FROM locked WHERE d.id = locked.id
				RETURNING d.id, d.endpoint_id, d.message_id, d.type, d.attempt, d.claimed_until, locked.interrupted`,
				endpoint, free, d.cfg.Lease.Milliseconds()).Query(func(rows pgx.Rows) error {
				var c claimed
				var interrupted bool
				_, err := pgx.ForEachRow(rows, []any{&c.id, &c.endpoint, &c.message, &c.typ, &c.attempt, &c.claimedUntil, &interrupted}, func() error {
					if interrupted {
						resumed = append(resumed, c)
					} else {
						list = append(list, c)
					}
					return nil
				})
				return err
			})
		}
		if b.Len() == 0 {
			return nil
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		for _, r := range resumed {
			next, err := d.resume(ctx, tx, r)
			if err != nil {
				return err
			}
			list = append(list, next)
		}
		return d.load(ctx, tx, list)
	})
	if err != nil {
		return nil, false, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	return list, len(list) == n, nil
}

// resume records attempt c, whose dispatcher stopped before it recorded
// an answer, as failed, and claims its next attempt in its place.
func (d *Dispatcher) resume(ctx context.Context, tx pgx.Tx, c claimed) (claimed, error) {
	if _, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET state = 'failed', claimed_until = NULL, next_attempt_at = NULL,
			error = $2 WHERE id = $1`, c.id, stoppedError); err != nil {
		return c, fmt.Errorf("record interrupted attempt %s: %w", c.id, err)
	}
	next := c
	next.id, next.attempt = journal.NewID(), c.attempt+1
	err := tx.QueryRow(ctx, `INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, ping, attempt, state, next_attempt_at, claimed_until, created_at)
		SELECT $1, endpoint_id, message_id, type, ping, $2, 'pending', now(), clock_timestamp() + $3 * interval '1 millisecond', now()
		FROM webhook_deliveries WHERE id = $4 RETURNING claimed_until`, next.id, next.attempt, d.cfg.Lease.Milliseconds(), c.id).
		Scan(&next.claimedUntil)
	if err != nil {
		return c, fmt.Errorf("resume attempt %s: %w", c.id, err)
	}
	return next, nil
}

// validSecrets is the array of the secrets that sign the messages of
// endpoint e now, the newest first (an expression over webhook_endpoints
// e).
const validSecrets = `array(SELECT w.secret FROM webhook_secrets w WHERE w.endpoint_id = e.id AND (w.expires_at IS NULL OR w.expires_at > now())
	ORDER BY w.created_at DESC)`

// load reads what sending list needs: each endpoint's URL and valid
// secrets, and each message's body.
func (d *Dispatcher) load(ctx context.Context, tx pgx.Tx, list []claimed) error {
	if len(list) == 0 {
		return nil
	}
	ids := make([]string, len(list))
	for i, c := range list {
		ids[i] = c.id
	}
	rows, err := tx.Query(ctx, `SELECT d.id, e.url, `+validSecrets+`,
			d.ping, c.seq, c.type, c.occurred_at, c.tenant_id, c.run, c.connection, c.initiator_id
		FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
		LEFT JOIN changes c ON c.id = d.message_id
		WHERE d.id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("load deliveries: %w", err)
	}
	byID := map[string]*claimed{}
	for i := range list {
		byID[list[i].id] = &list[i]
	}
	var id, url string
	var secrets []string
	var ping []byte
	var seq *int64
	var ch changes.Change
	var typ, tenant *string
	var at *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &url, &secrets, &ping, &seq, &typ, &at, &tenant, &ch.Run, &ch.Connection, &ch.InitiatorID}, func() error {
		c := byID[id]
		c.url, c.secrets = url, secrets
		var data any
		when := time.Now().UTC()
		switch {
		case c.typ == TypePing:
			data = json.RawMessage(ping)
		case seq != nil:
			change := ch
			change.ID, change.Cursor, change.Type, change.OccurredAt, change.TenantID = c.message, changes.Cursor(*seq), *typ, at.UTC(), *tenant
			if len(change.Run) == 0 {
				change.Run = json.RawMessage("null")
			}
			if len(change.Connection) == 0 {
				change.Connection = json.RawMessage("null")
			}
			data, when = change, change.OccurredAt
		default:
			return fmt.Errorf("delivery %s names change %s, which is not in the feed", id, c.message)
		}
		body, err := messageBody(c.typ, when, data)
		c.body = body
		return err
	})
	if err != nil {
		return fmt.Errorf("load deliveries: %w", err)
	}
	return nil
}

// messageBody is the body of a message of type typ, stamped at, with data.
func messageBody(typ string, at time.Time, data any) ([]byte, error) {
	return json.Marshal(struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      any    `json:"data"`
	}{typ, at.Format(time.RFC3339Nano), data})
}

// result is what an attempt came to.
type result struct {
	status     *int
	took       time.Duration
	err        string
	retryAfter time.Duration
}

// attempt sends c and hands what came of it to the recorder; it says
// whether the endpoint answered it 2xx, and fast.
func (d *Dispatcher) attempt(ctx context.Context, c claimed) (fast bool) {
	if c.stream != nil {
		if !d.live(c.stream) {
			return false // not sent: its stream's next holder sends it
		}
	} else if time.Until(c.claimedUntil) < d.cfg.Timeout+time.Second {
		// Held so long behind a slow endpoint that, sent now, it could
		// outlive its claim: given back, to be claimed again.
		d.results <- attemptResult{c: c, outcome: released}
		return false
	}
	r := d.send(ctx, c)
	if ctx.Err() != nil && r.status == nil {
		// Stopping: a row's claim runs out and the attempt is taken over;
		// a stream's attempt is recorded as stopped, and tried again.
		if c.stream != nil {
			d.results <- attemptResult{c: c, r: result{err: stoppedError, took: r.took}, outcome: stopped}
		}
		return false
	}
	outcome := d.outcomeOf(c, r)
	if d.cfg.Observe != nil {
		d.cfg.Observe(c.endpoint, outcome, r.took)
	}
	d.results <- attemptResult{c: c, r: r, outcome: outcome}
	return outcome == StateDelivered && r.took < d.cfg.Timeout/fastShare
}

// recordAll records the attempts' results as they come, those waiting
// together in one transaction, until results is closed. The database may
// be away: a result waits for it as long as its claim is this
// dispatcher's (after that the attempt is sent again by whoever claims
// it).
func (d *Dispatcher) recordAll(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for first := range d.results {
		batch := []attemptResult{first}
	more:
		for len(batch) < 256 {
			select {
			case next, ok := <-d.results:
				if !ok {
					break more
				}
				batch = append(batch, next)
			default:
				break more
			}
		}
		for wait := 100 * time.Millisecond; len(batch) > 0; wait = min(2*wait, 5*time.Second) {
			err := d.record(ctx, batch)
			if err == nil {
				break
			}
			live := batch[:0]
			for _, a := range batch {
				if d.mine(a.c) {
					live = append(live, a)
				}
			}
			if len(live) < len(batch) {
				d.logger.Warn("webhook attempt results not recorded before their claims ran out; they will be sent again",
					"attempts", len(batch)-len(live), "err", err)
			}
			if len(live) > 0 {
				d.logger.Warn("recording webhook attempt results failed; trying again", "attempts", len(live), "in", wait, "err", err)
			}
			batch = live
			time.Sleep(wait) // the database is away: nothing else to do meanwhile
		}
	}
}

// mine reports whether attempt c is this dispatcher's still: its row's
// claim or its stream's holding has not run out (holds).
func (d *Dispatcher) mine(c claimed) bool {
	if c.stream == nil {
		return time.Now().Before(c.claimedUntil)
	}
	return d.holds(c.stream, 0)
}

// send POSTs c's message, signed with every valid secret.
func (d *Dispatcher) send(ctx context.Context, c claimed) result {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		return result{err: "bad URL: " + err.Error(), took: time.Since(began)}
	}
	keys := make([][]byte, 0, len(c.secrets))
	for _, s := range c.secrets {
		if k, err := signing.DecodeSecret(s); err == nil {
			keys = append(keys, k)
		}
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "opsgate-webhooks/1")
	req.Header.Set("webhook-id", c.message)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", signing.Header(keys, c.message, now, c.body))
	resp, err := d.client.Do(req)
	took := time.Since(began)
	if err != nil {
		return result{err: describe(err, d.cfg.Timeout), took: took}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	status := resp.StatusCode
	r := result{status: &status, took: took}
	switch {
	case status >= 200 && status < 300:
	case status >= 300 && status < 400:
		r.err = fmt.Sprintf("HTTP %d: redirects are not followed", status)
	default:
		r.err = fmt.Sprintf("HTTP %d", status)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		r.retryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return r
}

// describe words a failed request for the delivery log.
func describe(err error, timeout time.Duration) string {
	var netErr net.Error
	switch {
	case errors.Is(err, netguard.ErrRefused):
		return "refused: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("no answer within %s", timeout)
	}
	return err.Error()
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// outcomeOf says what an attempt's result comes to: delivered, failed
// (tried again), or gave_up (the schedule is over, or the endpoint
// answered 410 Gone).
func (d *Dispatcher) outcomeOf(c claimed, r result) string {
	switch {
	case r.status != nil && *r.status >= 200 && *r.status < 300:
		return StateDelivered
	case r.status != nil && *r.status == http.StatusGone, c.attempt > len(d.cfg.Schedule):
		return StateGaveUp
	}
	return StateFailed
}

// record records each result as its attempt's, if the attempt is still
// claimed by this dispatcher, in one transaction: the attempt's state, the
// next attempt of a failed one (after the schedule's delay or a longer
// Retry-After), and a 410's endpoint disabled.
func (d *Dispatcher) record(ctx context.Context, batch []attemptResult) error {
	var b pgx.Batch
	// The first attempts of each stream, the bulk, in one statement each,
	// with how far the stream's first attempts are recorded.
	type streamResults struct {
		seqs []int64 // the sequence numbers the results record
		rows attemptRows
		gone bool // an answer was 410
	}
	streams := map[*stream]*streamResults{}
	for _, a := range batch {
		c, r, st := a.c, a.r, a.c.stream
		if st == nil {
			continue
		}
		sr := streams[st]
		if sr == nil {
			sr = &streamResults{}
			streams[st] = sr
		}
		sr.seqs = append(sr.seqs, c.seq)
		sr.gone = sr.gone || r.status != nil && *r.status == http.StatusGone
		rows := &sr.rows
		switch a.outcome {
		case stopped:
			rows.interrupted(c.message, c.typ, c.attempt, r.took)
		case StateFailed:
			rows.add(c.message, c.typ, c.attempt, a.outcome, r.status, r.took, r.err, nil)
			delay := max(d.cfg.Schedule[c.attempt-1], r.retryAfter)
			rows.add(c.message, c.typ, c.attempt+1, StatePending, nil, 0, "", &delay)
		default:
			rows.add(c.message, c.typ, c.attempt, a.outcome, r.status, r.took, r.err, nil)
		}
	}
	for st, sr := range streams {
		d.mu.Lock()
		sent := st.sentThrough(sr.seqs)
		d.mu.Unlock()
		queueRecord(&b, st, sent, sr.gone, sr.rows)
	}
	// The answered attempts of rows, in one statement.
	var ids []string
	var claims []time.Time
	var statuses, took []int
	for _, a := range batch {
		if a.c.stream == nil && a.outcome == StateDelivered {
			ids, claims = append(ids, a.c.id), append(claims, a.c.claimedUntil)
			statuses, took = append(statuses, *a.r.status), append(took, int(a.r.took.Milliseconds()))
		}
	}
	if len(ids) > 0 {
		b.Queue(`UPDATE webhook_deliveries d SET state = 'delivered', response_status = r.status, latency_ms = r.took,
				claimed_until = NULL, next_attempt_at = NULL
			FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[]) AS r (id, claimed_until, status, took)
			WHERE d.id = r.id AND d.claimed_until = r.claimed_until`, ids, claims, statuses, took)
	}
	for _, a := range batch {
		c, r := a.c, a.r
		switch {
		case c.stream != nil, a.outcome == StateDelivered:
			continue
		case a.outcome == released:
			b.Queue(`UPDATE webhook_deliveries SET claimed_until = NULL WHERE id = $1 AND claimed_until = $2`, c.id, c.claimedUntil)
			continue
		}
		var errText *string
		if r.err != "" {
			errText = &r.err
		}
		var delay time.Duration
		if a.outcome == StateFailed {
			delay = max(d.cfg.Schedule[c.attempt-1], r.retryAfter)
		}
		gone := r.status != nil && *r.status == http.StatusGone
		b.Queue(`WITH done AS (
				UPDATE webhook_deliveries SET state = $3, response_status = $4, latency_ms = $5, error = $6,
					claimed_until = NULL, next_attempt_at = NULL
				WHERE id = $1 AND claimed_until = $2
				RETURNING endpoint_id, message_id, type, ping, attempt
			), next AS (
				INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, ping, attempt, state, next_attempt_at, created_at)
				SELECT $7, endpoint_id, message_id, type, ping, attempt + 1, 'pending', now() + $8 * interval '1 millisecond', now()
				FROM done WHERE $3 = 'failed'
			), disabled AS (
				UPDATE webhook_endpoints SET enabled = false WHERE $9 AND id IN (SELECT endpoint_id FROM done)
			)
			SELECT count(*) FROM done`,
			c.id, c.claimedUntil, a.outcome, r.status, int(r.took.Milliseconds()), errText,
			journal.NewID(), delay.Milliseconds(), gone)
	}
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("record %d webhook attempts: %w", len(batch), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for st, sr := range streams {
		st.open = slices.DeleteFunc(st.open, func(seq int64) bool { return slices.Contains(sr.seqs, seq) })
	}
	return nil
}
