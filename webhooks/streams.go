package webhooks

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/internal/pg"
)

// An endpoint's changes reach it through its stream (webhook_streams):
// the dispatcher holding the stream reads the changes after how far it
// has read (claimed) and sends them, and a first attempt becomes a row of
// the delivery log once it is answered, recorded with how far every first
// attempt is (sent). A change thus costs one row, written once. Retries,
// pings and replays are rows queued ahead (claim).

// feedHead is the change feed's newest sequence number, as a subquery
// (0 for an empty feed): where a new stream starts.
const feedHead = `(SELECT coalesce(max(seq), 0) AS seq FROM changes)`

// subscribed is true of a change c that endpoint e follows: one of its
// workspace's tenants, of a type it subscribes to.
const subscribed = `c.tenant_id IN (SELECT t.id FROM tenants t WHERE t.workspace_id = e.workspace_id)
	AND (e.types IS NULL OR c.type = ANY(e.types))`

// stream is an endpoint's stream while this dispatcher holds it.
type stream struct {
	endpoint, workspace, url string
	types, secrets           []string
	// token is this holding's holder value: every write of the stream is
	// fenced by it.
	token string
	until time.Time // held until
	// claimed is how far the stream is read; open are the sequence
	// numbers read whose first attempt is not recorded yet, ascending.
	claimed int64
	open    []int64
	// recheck: changes up to it may have an attempt recorded already (by
	// a holder that gave the stream back); they are passed over.
	recheck int64
}

// sentThrough is how far every first attempt would be recorded once
// those of done are: up to the first open one not among them.
func (s *stream) sentThrough(done []int64) int64 {
	for _, seq := range s.open {
		if !slices.Contains(done, seq) {
			return seq - 1
		}
	}
	return s.claimed
}

// live reports whether st is held still, long enough to send an attempt
// whose answer can be recorded before the holding runs out.
func (d *Dispatcher) live(st *stream) bool { return d.holds(st, d.sendable()) }

// holds reports whether this dispatcher holds st for at least margin
// more; a stream held for less is let go, and whoever holds it next takes
// up what it left (holdStreams).
func (d *Dispatcher) holds(st *stream, margin time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.streams[st.endpoint] != st {
		return false
	}
	if time.Until(st.until) < margin {
		delete(d.streams, st.endpoint)
		return false
	}
	return true
}

// sendable is how long a stream must be held still for an attempt of it
// to be sent: the attempt's timeout, and time to record its answer.
// Renewed four times per holding, a stream is held at least 3/4 of the
// lease ahead, which is more (the lease is at least the timeout plus
// 20 s by default).
func (d *Dispatcher) sendable() time.Duration { return d.cfg.Timeout + d.cfg.Lease/8 }

// holdStreams takes the streams of enabled endpoints that no dispatcher
// holds (or whose holder let its holding run out), and, when renew,
// renews those this dispatcher holds, in one round trip; a stream it held
// that is not renewed (taken over, enabled again, or of an endpoint
// disabled) is let go. A stream taken over records the first
// attempts its previous holder may have sent without recording them as
// interrupted (takeOver).
func (d *Dispatcher) holdStreams(ctx context.Context, renew bool) error {
	d.mu.Lock()
	var tokens []string
	if renew {
		for _, st := range d.streams {
			tokens = append(tokens, st.token)
		}
	}
	d.mu.Unlock()
	token := journal.NewID()
	// Those held are renewed whatever else holds their rows a moment (a
	// record of their attempts); free ones are taken unless another
	// dispatcher is taking them.
	const returning = `RETURNING s.endpoint_id, s.holder, s.held_until, s.sent, s.claimed, s.recheck, e.workspace_id, e.url, e.types, ` + validSecrets
	type held struct {
		stream
		sent int64
	}
	var list []held
	scan := func(rows pgx.Rows) error {
		var h held
		_, err := pgx.ForEachRow(rows, []any{&h.endpoint, &h.token, &h.until, &h.sent, &h.claimed, &h.recheck, &h.workspace, &h.url, &h.types, &h.secrets},
			func() error {
				list = append(list, h)
				return nil
			})
		return err
	}
	var b pgx.Batch
	if len(tokens) > 0 {
		b.Queue(`UPDATE webhook_streams s SET held_until = clock_timestamp() + $2 * interval '1 millisecond'
			FROM webhook_endpoints e WHERE e.id = s.endpoint_id AND e.enabled AND s.holder = ANY($1) `+returning,
			tokens, d.cfg.Lease.Milliseconds()).Query(scan)
	}
	b.Queue(`WITH free AS (
			SELECT s.endpoint_id FROM webhook_streams s JOIN webhook_endpoints e ON e.id = s.endpoint_id
			WHERE e.enabled AND (s.held_until IS NULL OR s.held_until < now())
			FOR UPDATE OF s SKIP LOCKED
		)
		UPDATE webhook_streams s SET holder = $1, held_until = clock_timestamp() + $2 * interval '1 millisecond'
		FROM free f, webhook_endpoints e WHERE s.endpoint_id = f.endpoint_id AND e.id = s.endpoint_id `+returning,
		token, d.cfg.Lease.Milliseconds()).Query(scan)
	if err := d.db.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("hold webhook streams: %w", err)
	}
	renewed := map[string]bool{}
	for _, h := range list {
		if h.token != token {
			d.mu.Lock()
			if st := d.streams[h.endpoint]; st != nil && st.token == h.token {
				st.until, st.url, st.types, st.secrets = h.until, h.url, h.types, h.secrets
				renewed[h.endpoint] = true
			}
			d.mu.Unlock()
			continue
		}
		st := h.stream
		if h.claimed > h.sent {
			if err := d.takeOver(ctx, &st, h.sent); err != nil {
				return err
			}
		}
		d.mu.Lock()
		d.streams[st.endpoint] = &st
		d.mu.Unlock()
		renewed[st.endpoint] = true
	}
	if renew {
		d.mu.Lock()
		for endpoint, st := range d.streams {
			if !renewed[endpoint] && slices.Contains(tokens, st.token) {
				delete(d.streams, endpoint) // taken over, or its endpoint disabled
			}
		}
		d.mu.Unlock()
	}
	return nil
}

// takeOver records, as failed and due again at once, the first attempts
// of st's changes after sent (up to how far its previous holder read)
// that have no attempt recorded: the previous holder may have sent them,
// and stopped before it recorded an answer.
func (d *Dispatcher) takeOver(ctx context.Context, st *stream, sent int64) error {
	return pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT c.id, c.type FROM changes c
			WHERE c.seq > $1 AND c.seq <= $2 AND c.tenant_id IN (SELECT t.id FROM tenants t WHERE t.workspace_id = $3)
				AND ($4::text[] IS NULL OR c.type = ANY($4))
			ORDER BY c.seq`, sent, st.claimed, st.workspace, st.types)
		if err != nil {
			return fmt.Errorf("take over the webhook stream of %s: %w", st.endpoint, err)
		}
		var list []changes.Change
		var c changes.Change
		if _, err := pgx.ForEachRow(rows, []any{&c.ID, &c.Type}, func() error {
			list = append(list, c)
			return nil
		}); err != nil {
			return fmt.Errorf("take over the webhook stream of %s: %w", st.endpoint, err)
		}
		if list, err = unrecorded(ctx, tx, st.endpoint, list); err != nil {
			return fmt.Errorf("take over the webhook stream of %s: %w", st.endpoint, err)
		}
		var a attemptRows
		for _, c := range list {
			a.interrupted(c.ID, c.Type, 1, 0)
		}
		var b pgx.Batch
		queueRecord(&b, st, st.claimed, false, a)
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("take over the webhook stream of %s: %w", st.endpoint, err)
		}
		if len(a.ids) > 0 {
			d.logger.Info("webhook stream taken over; the attempts its holder may have sent unrecorded are tried again",
				"endpoint", st.endpoint, "attempts", len(a.ids)/2)
		}
		return nil
	})
}

// unrecorded returns the changes of list without an attempt to endpoint
// recorded. (A probe of the index on (endpoint_id, message_id) for the
// list as a whole: as an anti-join per change, a plan made on statistics
// older than a burst of deliveries scanned every delivery of the endpoint
// for each change.)
func unrecorded(ctx context.Context, q pg.Querier, endpoint string, list []changes.Change) ([]changes.Change, error) {
	if len(list) == 0 {
		return list, nil
	}
	ids := make([]string, len(list))
	for i, c := range list {
		ids[i] = c.ID
	}
	rows, err := q.Query(ctx, `SELECT message_id FROM webhook_deliveries WHERE endpoint_id = $1 AND message_id = ANY($2)`, endpoint, ids)
	if err != nil {
		return nil, fmt.Errorf("read recorded attempts: %w", err)
	}
	recorded, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read recorded attempts: %w", err)
	}
	return slices.DeleteFunc(list, func(c changes.Change) bool { return slices.Contains(recorded, c.ID) }), nil
}

// stoppedError is the error of an attempt whose dispatcher stopped before
// it recorded an answer.
const stoppedError = "no answer recorded: the dispatcher sending it stopped"

// readStreams reads, for each stream held long enough, the next changes
// up to the room its endpoint has (n in all), moving how far it is read
// in the same statement; all in one round trip. A stream that follows on
// from the changes this process's feed committed last (Recent) takes
// them from memory, and its statement only picks among them by the
// endpoint's types as they are now. A stream found taken over is let go.
// It reports whether a stream may have more to read now.
func (d *Dispatcher) readStreams(ctx context.Context, n int, room func(endpoint string) int) ([]claimed, bool, error) {
	var reads []*streamRead
	d.mu.Lock()
	for _, st := range d.streams {
		free := min(room(st.endpoint), n)
		if free <= 0 || time.Until(st.until) < d.sendable() {
			continue
		}
		n -= free
		reads = append(reads, &streamRead{st: st, from: st.claimed, limit: free})
	}
	d.mu.Unlock()
	if len(reads) == 0 {
		return nil, false, nil
	}
	if err := d.readMemory(ctx, reads); err != nil {
		return nil, false, fmt.Errorf("read webhook streams: %w", err)
	}
	var b pgx.Batch
	for _, r := range reads {
		r.queue(&b)
	}
	if err := d.db.SendBatch(ctx, &b).Close(); err != nil {
		return nil, false, fmt.Errorf("read webhook streams: %w", err)
	}
	more := false
	for _, r := range reads {
		// Its limit reached, or read up to where the part of memory it
		// looked through ends, short of what memory holds.
		more = more || len(r.found) == r.limit || r.memory && r.window && r.upto == r.through
	}
	// A stream given back may hold changes with an attempt recorded
	// already, up to recheck (fixed when the stream was taken).
	for _, r := range reads {
		if r.from < r.st.recheck && len(r.found) > 0 {
			found, err := unrecorded(ctx, d.db, r.st.endpoint, r.found)
			if err != nil {
				return nil, false, fmt.Errorf("read webhook streams: %w", err)
			}
			r.found = found
		}
	}
	var list []claimed
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range reads {
		st := r.st
		if r.upto <= r.from || d.streams[st.endpoint] != st {
			continue // nothing new, or let go meanwhile
		}
		if r.moved == nil {
			delete(d.streams, st.endpoint) // taken over: its holding ran out
			continue
		}
		st.claimed, st.url, st.secrets = *r.moved, r.url, r.secrets
		for _, c := range r.found {
			seq, _ := changes.ParseCursor(c.Cursor)
			body, err := messageBody(c.Type, c.OccurredAt, c)
			if err != nil {
				return nil, false, fmt.Errorf("read webhook streams: change %s: %w", c.ID, err)
			}
			st.open = append(st.open, seq)
			list = append(list, claimed{endpoint: st.endpoint, message: c.ID, typ: c.Type, attempt: 1, url: st.url,
				secrets: st.secrets, body: body, seq: seq, stream: st})
		}
	}
	return list, more, nil
}

// memoryRead is how many of the changes held in memory a stream's read
// looks through, of every workspace.
const memoryRead = 1024

// streamRead is one stream's read: what to read, and what it found.
type streamRead struct {
	st    *stream
	from  int64 // how far the stream was read
	limit int   // the most changes to take
	// memory: the changes that follow from (to through) are in memory,
	// and candidates are those of the endpoint's workspace among them
	// (seqs their sequence numbers); window: memory holds more after
	// through (the read looks through memoryRead at most).
	memory, window bool
	through        int64
	candidates     []changes.Change
	seqs           []int64

	// What the statement found: how far the stream is read now (upto),
	// moved as far unless it was taken over (moved nil), the endpoint
	// now, and the changes to send.
	upto    int64
	moved   *int64
	url     string
	secrets []string
	found   []changes.Change
}

// readMemory gives the reads whose changes follow on from those this
// process's feed holds (DispatcherConfig.Recent) those of their
// workspace, learning the workspace of the tenants it has not seen (a
// tenant never moves).
func (d *Dispatcher) readMemory(ctx context.Context, reads []*streamRead) error {
	if d.cfg.Recent == nil {
		return nil
	}
	var unknown []string
	for _, r := range reads {
		list, through, more := d.cfg.Recent.Following(r.from, memoryRead)
		if len(list) == 0 {
			continue
		}
		r.memory, r.window, r.through, r.candidates = true, more, through, list
		for _, c := range list {
			if _, seen := d.workspaces[c.TenantID]; !seen && !slices.Contains(unknown, c.TenantID) {
				unknown = append(unknown, c.TenantID)
			}
		}
	}
	if len(unknown) > 0 {
		rows, err := d.db.Query(ctx, `SELECT id, workspace_id FROM tenants WHERE id = ANY($1)`, unknown)
		if err != nil {
			return fmt.Errorf("read the workspaces of %d tenants: %w", len(unknown), err)
		}
		var tenant, workspace string
		if _, err := pgx.ForEachRow(rows, []any{&tenant, &workspace}, func() error {
			d.workspaces[tenant] = workspace
			return nil
		}); err != nil {
			return fmt.Errorf("read the workspaces of %d tenants: %w", len(unknown), err)
		}
	}
	for _, r := range reads {
		r.candidates = slices.DeleteFunc(r.candidates, func(c changes.Change) bool { return d.workspaces[c.TenantID] != r.st.workspace })
		r.seqs = make([]int64, len(r.candidates))
		for i, c := range r.candidates {
			r.seqs[i], _ = changes.ParseCursor(c.Cursor)
		}
	}
	return nil
}

// queue queues r's statement on b: the endpoint as it is now (disabled,
// its stream is let go), the changes picked (by its types, up to r.limit),
// and the stream moved as far as they run, fenced by its holding.
func (r *streamRead) queue(b *pgx.Batch) {
	// $1 the endpoint, $2 how far it was read, $3 the most to pick, $4
	// the holding; for a read of memory, $5 and $6 the candidates'
	// sequence numbers and types, $7 how far they run.
	picked := `SELECT c.seq, c.id, c.type, c.occurred_at, c.tenant_id, coalesce(c.run, 'null') AS run,
			coalesce(c.connection, 'null') AS connection, c.initiator_id
		FROM changes c, e WHERE c.seq > $2 AND c.seq <= ` + feedHead + ` AND ` + subscribed + `
		ORDER BY c.seq LIMIT $3`
	columns := `p.seq, p.id, p.type, p.occurred_at, p.tenant_id, p.run, p.connection, p.initiator_id`
	through := feedHead
	args := []any{r.st.endpoint, r.from, r.limit, r.st.token}
	if r.memory {
		columns = `p.seq`
		picked = `SELECT c.seq FROM unnest($5::bigint[], $6::text[]) AS c (seq, type), e
			WHERE e.types IS NULL OR c.type = ANY(e.types) ORDER BY c.seq LIMIT $3`
		through = `$7::bigint`
		types := make([]string, len(r.candidates))
		for i, c := range r.candidates {
			types[i] = c.Type
		}
		args = append(args, r.seqs, types, r.through)
	}
	b.Queue(`WITH e AS (
			SELECT e.id, e.workspace_id, e.url, e.types, `+validSecrets+` AS secrets
			FROM webhook_endpoints e WHERE e.id = $1 AND e.enabled
		),
		picked AS (`+picked+`),
		upto AS (SELECT CASE WHEN count(*) = $3 THEN max(seq) ELSE `+through+` END AS seq FROM picked),
		moved AS (
			UPDATE webhook_streams s SET claimed = upto.seq FROM upto
			WHERE s.endpoint_id = $1 AND s.holder = $4 AND s.claimed = $2 AND upto.seq > $2 AND s.held_until > now()
				AND EXISTS (SELECT 1 FROM e)
			RETURNING s.claimed
		)
		SELECT (SELECT seq FROM upto), (SELECT claimed FROM moved), e.url, e.secrets, `+columns+`
		FROM (SELECT 1) one LEFT JOIN e ON true LEFT JOIN picked p ON true ORDER BY p.seq`,
		args...).Query(r.scan)
}

// scan reads r's statement's rows: one per change picked (or one with
// none), each with how far the stream is read and the endpoint.
func (r *streamRead) scan(rows pgx.Rows) error {
	var seq *int64
	var id, typ, tenant, url *string
	var at *time.Time
	var c changes.Change
	dest := []any{&r.upto, &r.moved, &url, &r.secrets, &seq}
	if !r.memory {
		dest = append(dest, &id, &typ, &at, &tenant, &c.Run, &c.Connection, &c.InitiatorID)
	}
	next := 0 // the candidate to look at next: both are in order
	_, err := pgx.ForEachRow(rows, dest, func() error {
		if url != nil {
			r.url = *url
		}
		switch {
		case seq == nil:
		case r.memory:
			for next < len(r.seqs) && r.seqs[next] != *seq {
				next++
			}
			if next == len(r.seqs) {
				return fmt.Errorf("stream of %s: change %d picked is not a candidate", r.st.endpoint, *seq)
			}
			r.found = append(r.found, r.candidates[next])
		default:
			c.ID, c.Cursor, c.Type, c.OccurredAt, c.TenantID = *id, changes.Cursor(*seq), *typ, at.UTC(), *tenant
			r.found = append(r.found, c)
		}
		return nil
	})
	return err
}

// releaseStreams gives back the streams this dispatcher holds, once every
// answer is recorded: the next holder reads on from the first change
// whose first attempt is not recorded, passing over those recorded after
// it (up to recheck), and has nothing to take over.
func (d *Dispatcher) releaseStreams(ctx context.Context) {
	d.mu.Lock()
	var tokens []string
	for _, st := range d.streams {
		tokens = append(tokens, st.token)
	}
	clear(d.streams)
	d.mu.Unlock()
	if len(tokens) == 0 {
		return
	}
	if _, err := d.db.Exec(ctx, `UPDATE webhook_streams SET holder = NULL, held_until = NULL, recheck = claimed, claimed = sent
		WHERE holder = ANY($1)`,
		tokens); err != nil {
		d.logger.Warn("webhook streams not given back; they are taken over once their holding runs out", "err", err)
	}
}

// attemptRows are attempts of an endpoint to record, in columns.
type attemptRows struct {
	ids, messages, types, states []string
	attempts                     []int
	statuses, took               []*int
	errors                       []*string
	due                          []*int64 // for a pending attempt, milliseconds until it is due
}

// add adds an attempt of message (of type typ): one answered with status
// (nil for none) after took, failing with errText (none if ""), or, with
// due set, one pending until then.
func (a *attemptRows) add(message, typ string, attempt int, state string, status *int, took time.Duration, errText string, due *time.Duration) {
	a.ids, a.messages, a.types, a.states = append(a.ids, journal.NewID()), append(a.messages, message), append(a.types, typ), append(a.states, state)
	a.attempts, a.statuses = append(a.attempts, attempt), append(a.statuses, status)
	var ms *int
	var text *string
	var until *int64
	if due != nil {
		d := due.Milliseconds()
		until = &d
	} else {
		t := int(took.Milliseconds())
		ms = &t
	}
	if errText != "" {
		text = &errText
	}
	a.took, a.errors, a.due = append(a.took, ms), append(a.errors, text), append(a.due, until)
}

// interrupted adds attempt of message (of type typ), whose dispatcher
// stopped before it recorded an answer, as failed, and the next attempt,
// due at once.
func (a *attemptRows) interrupted(message, typ string, attempt int, took time.Duration) {
	var now time.Duration
	a.add(message, typ, attempt, StateFailed, nil, took, stoppedError, nil)
	a.add(message, typ, attempt+1, StatePending, nil, 0, "", &now)
}

// queueRecord queues the record of st's attempts a, with how far every
// first attempt of st is recorded (sent) and, if gone, the endpoint
// disabled: all or nothing, and nothing unless this dispatcher holds st
// still.
func queueRecord(b *pgx.Batch, st *stream, sent int64, gone bool, a attemptRows) {
	b.Queue(`WITH held AS (
			UPDATE webhook_streams SET sent = greatest(sent, $2) WHERE endpoint_id = $1 AND holder = $3 RETURNING endpoint_id
		), gone AS (
			UPDATE webhook_endpoints e SET enabled = false FROM held WHERE e.id = held.endpoint_id AND $4
		)
		INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, attempt, state, response_status, latency_ms, error,
			next_attempt_at, created_at)
		SELECT a.id, held.endpoint_id, a.message, a.type, a.attempt, a.state, a.status, a.took, a.error,
			now() + a.due * interval '1 millisecond', now()
		FROM held, unnest($5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::int[], $11::int[], $12::text[], $13::bigint[])
			AS a (id, message, type, attempt, state, status, took, error, due)`,
		st.endpoint, sent, st.token, gone, a.ids, a.messages, a.types, a.attempts, a.states, a.statuses, a.took, a.errors, a.due)
}
