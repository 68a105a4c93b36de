package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

// change is a change as the feed answers it.
type change struct {
	ID          string          `json:"id"`
	Cursor      string          `json:"cursor"`
	Type        string          `json:"type"`
	OccurredAt  time.Time       `json:"occurred_at"`
	TenantID    string          `json:"tenant_id"`
	Run         *apptest.Run    `json:"run"`
	Connection  json.RawMessage `json:"connection"`
	InitiatorID *string         `json:"initiator_id"`
}

type changePage struct {
	Items      []change `json:"items"`
	NextCursor string   `json:"next_cursor"`
}

// changesUntil reads the feed as token from after until cond holds of
// what it read, and returns it all.
func (f *fixture) changesUntil(t *testing.T, token, query string, cond func([]change) bool) ([]change, string) {
	t.Helper()
	var all []change
	cursor := ""
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		path := "/api/v1/changes?wait_ms=2000&limit=3" + query
		if cursor != "" {
			path += "&after=" + cursor
		}
		var p changePage
		f.Must(t, 200, "GET", path, token, nil, &p)
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			t.Fatalf("no next_cursor in %+v", p)
		}
		cursor = p.NextCursor
		if cond(all) {
			return all, cursor
		}
	}
	t.Fatalf("the feed did not hold what was waited for within 15s; it held %+v", all)
	return nil, ""
}

func typesOf(list []change, run string) []string {
	var out []string
	for _, c := range list {
		if c.Run != nil && c.Run.ID == run {
			out = append(out, c.Type)
		}
	}
	return out
}

func hasTypes(list []change, run string, want ...string) bool {
	return strings.Join(typesOf(list, run), ",") == strings.Join(want, ",")
}

// TestChangeFeed: a run's changes in commit order, each with the run as of
// that change, its deduped start with who asked, the connection's
// readiness change; never a change of a tenant the caller cannot see;
// pages, after=latest, and bad input.
func TestChangeFeed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	first := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.start(t, contractSurfaces[5], startArgs{conn: acme, token: f.operator.Token}).ExpectStart(t, "deduped")
	// Tenant B's run is not the owner's to see.
	other := f.start(t, contractSurfaces[5], startArgs{conn: f.connB, token: f.outsider.Token}).ExpectStart(t, "accepted").Run.ID
	claims := f.claim(t, ex, 1, 0)
	if len(claims) != 1 {
		t.Fatalf("claimed %d runs", len(claims))
	}
	f.complete(t, ex, first, map[string]any{"epoch": claims[0].Lease.Epoch, "status": "succeeded"}).ExpectStatus(t, 200)
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+acme, f.owner.Token, map[string]any{"consent": "revoked"}, nil)

	list, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		for _, c := range l {
			if c.Type == "connection.readiness_changed" {
				return true
			}
		}
		return false
	})
	if !hasTypes(list, first, "run.accepted", "run.deduped", "run.started", "run.succeeded") {
		t.Errorf("changes of the run: %v", typesOf(list, first))
	}
	seen := map[string]bool{}
	for i, c := range list {
		if c.TenantID == f.tenantB || (c.Run != nil && c.Run.ID == other) {
			t.Errorf("the owner of A was sent a change of tenant B: %+v", c)
		}
		if seen[c.ID] {
			t.Errorf("change %s twice", c.ID)
		}
		seen[c.ID] = true
		if i > 0 && c.Cursor <= list[i-1].Cursor {
			t.Errorf("cursor %s after %s: not in order", c.Cursor, list[i-1].Cursor)
		}
		switch c.Type {
		case "run.accepted":
			if c.Run.Status != "queued" || c.InitiatorID == nil || *c.InitiatorID != f.owner.ID {
				t.Errorf("run.accepted carries %+v, initiator %v", c.Run, c.InitiatorID)
			}
		case "run.deduped":
			if c.Run.Status != "queued" || c.InitiatorID == nil || *c.InitiatorID != f.operator.ID {
				t.Errorf("run.deduped carries the run %+v and initiator %v; want it queued, asked by the operator", c.Run, c.InitiatorID)
			}
		case "run.started":
			if c.Run.Status != "running" || c.Run.StartedAt == nil {
				t.Errorf("run.started carries %+v", c.Run)
			}
		case "run.succeeded":
			if c.Run.Status != "succeeded" || c.InitiatorID != nil {
				t.Errorf("run.succeeded carries %+v, initiator %v", c.Run, c.InitiatorID)
			}
		case "connection.readiness_changed":
			var conn struct{ ID, Consent string }
			if err := json.Unmarshal(c.Connection, &conn); err != nil || conn.ID != acme || conn.Consent != "revoked" || c.Run != nil {
				t.Errorf("connection.readiness_changed carries %s (%v)", c.Connection, err)
			}
		}
	}

	// The same feed again: the same ids and cursors.
	again, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool { return len(l) >= len(list) })
	for i := range list {
		if again[i].ID != list[i].ID || again[i].Cursor != list[i].Cursor {
			t.Errorf("change %d read again is %s/%s, was %s/%s", i, again[i].ID, again[i].Cursor, list[i].ID, list[i].Cursor)
		}
	}
	// Narrowed to tenant B, the owner of A is told the tenant does not
	// exist; the outsider sees B's run only.
	unknown := f.Call(t, "GET", "/api/v1/changes?tenant_id="+randomID(), f.owner.Token, nil)
	f.Call(t, "GET", "/api/v1/changes?tenant_id="+f.tenantB, f.owner.Token, nil).ExpectProblem(t, 404, "not_found")
	if got := f.Call(t, "GET", "/api/v1/changes?tenant_id="+f.tenantB, f.owner.Token, nil); string(got.Body) != string(unknown.Body) {
		t.Errorf("a tenant the caller cannot see answers %s, an unknown one %s", got.Body, unknown.Body)
	}
	theirs, _ := f.changesUntil(t, f.outsider.Token, "&tenant_id="+f.tenantB, func(l []change) bool { return len(l) > 0 })
	if theirs[0].Run == nil || theirs[0].Run.ID != other || theirs[0].Type != "run.accepted" {
		t.Errorf("the outsider's feed starts with %+v", theirs[0])
	}

	// after=latest: nothing now; the next change once it commits.
	var latest changePage
	f.Must(t, 200, "GET", "/api/v1/changes?after=latest", f.owner.Token, nil, &latest)
	if len(latest.Items) != 0 || latest.NextCursor < list[len(list)-1].Cursor {
		t.Errorf("after=latest answered %+v", latest)
	}
	next := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	var woken changePage
	f.Must(t, 200, "GET", "/api/v1/changes?wait_ms=10000&after="+latest.NextCursor, f.owner.Token, nil, &woken)
	if len(woken.Items) == 0 || woken.Items[0].Run == nil || woken.Items[0].Run.ID != next {
		t.Errorf("a long poll after latest answered %+v, want the start of %s", woken, next)
	}

	for _, bad := range []string{"limit=0", "limit=501", "limit=x", "wait_ms=-1", "wait_ms=30001", "after=nope", "after=zzzzzzzzzzzzzzzz", "tenant_id=nope"} {
		r := f.Call(t, "GET", "/api/v1/changes?"+bad, f.owner.Token, nil)
		if r.Status != 400 {
			t.Errorf("%s: %s, want 400", bad, r)
		}
	}
	f.Call(t, "GET", "/api/v1/changes", "", nil).ExpectProblem(t, 401, "unauthorized")
}

// TestChangeStream: the feed as server-sent events, resumed with
// Last-Event-ID after the last change read.
func TestChangeStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	read := func(lastID string, n int, then func()) []change {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", f.URL+"/api/v1/changes", nil)
		req.Header.Set("Authorization", "Bearer "+f.owner.Token)
		req.Header.Set("Accept", "text/event-stream")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("stream answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		then()
		var out []change
		var id, event string
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for len(out) < n && sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var c change
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &c); err != nil {
					t.Fatalf("event data %q: %v", line, err)
				}
				if c.Cursor != id || c.Type != event {
					t.Errorf("event id %s, event %s for change %+v", id, event, c)
				}
				out = append(out, c)
			}
		}
		if len(out) < n {
			t.Fatalf("stream ended after %d of %d changes: %v", len(out), n, sc.Err())
		}
		return out
	}
	first := read("", 1, func() {
		f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	})
	if first[0].Type != "run.accepted" {
		t.Fatalf("the stream began with %+v", first[0])
	}
	// Two more starts while no stream is open: resuming after the first
	// change reads exactly them.
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "deduped")
	f.start(t, contractSurfaces[6], startArgs{conn: f.connA}).ExpectStart(t, "scope_busy")
	rest := read(first[0].Cursor, 2, func() {})
	if rest[0].Type != "run.deduped" || rest[1].Type != "run.scope_busy" || rest[0].Run.ID != first[0].Run.ID {
		t.Errorf("resumed with %+v", rest)
	}
}

// TestWaitForRun: a wait answers when the run ends, and as the run is
// when the wait runs out.
func TestWaitForRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID

	var short apptest.Run
	f.Must(t, 200, "GET", "/api/v1/operations/"+run+"?wait_ms=50", f.owner.Token, nil, &short)
	if short.Status != "queued" {
		t.Errorf("a wait that ran out answered %s, want queued", short.Status)
	}
	claims := f.claim(t, ex, 1, 0)
	done := make(chan apptest.Run, 1)
	go func() {
		var r apptest.Run
		// The operator asked and was told deduped: they wait on that run.
		f.Must(t, 200, "GET", "/api/v1/operations/"+run+"?wait_ms=20000", f.operator.Token, nil, &r)
		done <- r
	}()
	f.complete(t, ex, run, map[string]any{"epoch": claims[0].Lease.Epoch, "status": "failed", "reason_code": "provider.throttled"}).ExpectStatus(t, 200)
	select {
	case r := <-done:
		if r.Status != "failed" || r.Reason == nil || r.Reason.Code != "provider.throttled" {
			t.Errorf("the wait answered %+v", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the wait did not answer within 15s of the run's end")
	}
	// An ended run answers at once; bad waits are refused.
	var ended apptest.Run
	f.Must(t, 200, "GET", "/api/v1/operations/"+run+"?wait_ms=30000", f.owner.Token, nil, &ended)
	for _, bad := range []string{"-1", "30001", "x"} {
		f.Call(t, "GET", "/api/v1/operations/"+run+"?wait_ms="+bad, f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
	}
	f.Call(t, "GET", "/api/v1/operations/"+run+"?wait_ms=100", f.outsider.Token, nil).ExpectProblem(t, 404, "not_found")
}

// TestChangeFeedTwoProcesses: starts decided concurrently by two processes
// while a client follows the feed: every start's change exactly once, in
// the order the events commit (the order readers of the log see), none
// of another tenant.
func TestChangeFeedTwoProcesses(t *testing.T) {
	t.Parallel()
	first := server(t)
	second := apptest.Start(t, apptest.OnDatabase(first.DatabaseURL), apptest.Roles(app.Roles{API: true}))
	f := newFixtureOn(t, first)
	conns := []string{f.connA}
	for i := range 5 {
		conns = append(conns, f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Graph %d", i)}))
	}
	var latest changePage
	f.Must(t, 200, "GET", "/api/v1/changes?after=latest", f.owner.Token, nil, &latest)

	const writers, each = 4, 10
	var wg sync.WaitGroup
	for _, a := range []*apptest.App{first, second} {
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					sc := contractSurfaces[5+(i%2)]
					path, _ := f.startPathBody(sc, startArgs{conn: conns[(w+i)%len(conns)]})
					if r := a.Call(t, "POST", path, f.owner.Token, nil); r.Status/100 != 2 && r.Status != 409 {
						t.Errorf("start: %s", r)
					}
					// Tenant B's starts go on beside them.
					if i%3 == 0 {
						a.Call(t, "POST", "/api/v1/provider-connections/"+f.connB+"/inventory-sync", f.outsider.Token, nil)
					}
				}
			})
		}
	}
	// Read while they are decided.
	var got []change
	cursor := latest.NextCursor
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < 2*writers*each && time.Now().Before(deadline) {
		var p changePage
		second.Must(t, 200, "GET", "/api/v1/changes?wait_ms=1000&limit=7&after="+cursor, f.owner.Token, nil, &p)
		got, cursor = append(got, p.Items...), p.NextCursor
	}
	wg.Wait()
	var extra changePage
	f.Must(t, 200, "GET", "/api/v1/changes?after="+cursor, f.owner.Token, nil, &extra)
	if len(got) != 2*writers*each || len(extra.Items) != 0 {
		t.Fatalf("read %d changes, then %d more; want exactly %d, one per start", len(got), len(extra.Items), 2*writers*each)
	}
	ids := make([]string, len(got))
	seen := map[string]bool{}
	for i, c := range got {
		if c.TenantID != f.tenantA || seen[c.ID] {
			t.Errorf("change %d: %+v (tenant B is %s; seen before: %v)", i, c, f.tenantB, seen[c.ID])
		}
		seen[c.ID], ids[i] = true, c.ID
	}
	rows, err := f.Pool.Query(context.Background(), `SELECT event_id FROM events WHERE event_id = ANY($1) ORDER BY tx_id, position`, ids)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	if strings.Join(order, ",") != strings.Join(ids, ",") {
		t.Errorf("the feed's order is not the events' commit order:\nfeed   %v\nevents %v", ids, order)
	}
}

// TestChangeFeedDerivedAgain: the changes consumer commits without waiting
// for the WAL flush, so a crash or a failover may take back its last
// batches, together with its checkpoint. Derived again from the same
// events, in batches of other sizes, every change has the cursor and the
// content it had: a client that was given a cursor reads on without a gap
// or a change named twice.
func TestChangeFeedDerivedAgain(t *testing.T) {
	t.Parallel()
	first := server(t)
	f := newFixtureOn(t, first)
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	var runs []string
	for i := range 4 {
		acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme", Name: fmt.Sprintf("Acme %d", i)})
		runs = append(runs, f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID)
		f.start(t, contractSurfaces[5], startArgs{conn: acme, token: f.operator.Token}).ExpectStart(t, "deduped")
		if i == 0 {
			f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+acme, f.owner.Token, map[string]any{"consent": "revoked"}, nil)
		}
	}
	f.start(t, contractSurfaces[5], startArgs{conn: f.connB, token: f.outsider.Token}).ExpectStart(t, "accepted")
	for _, c := range f.claim(t, ex, len(runs), 0) {
		body := map[string]any{"epoch": c.Lease.Epoch, "status": "succeeded"}
		if c.Run.ID == runs[1] {
			body["status"], body["reason_code"] = "failed", "provider.unavailable"
		}
		f.complete(t, ex, c.Run.ID, body).ExpectStatus(t, 200)
	}
	f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		ended := 0
		for _, c := range l {
			if c.Type == "run.succeeded" || c.Type == "run.failed" {
				ended++
			}
		}
		return ended == len(runs)
	})
	first.Stop()

	ctx := context.Background()
	db, err := pgxpool.New(ctx, first.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	read := func() []string {
		rows, err := db.Query(ctx, `SELECT concat_ws(' ', seq, id, type, tenant_id, occurred_at, run_id, run, connection, initiator_id)
			FROM changes ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	before := read()
	// What a crash took back: every batch of the consumer, its subjects and
	// its checkpoint with them.
	if _, err := db.Exec(ctx, `TRUNCATE changes, change_subjects;
		DELETE FROM feed_checkpoints WHERE consumer = 'changes'`); err != nil {
		t.Fatal(err)
	}
	again := apptest.Start(t, apptest.OnDatabase(first.DatabaseURL), apptest.Roles(app.Roles{API: true, Projector: true}))
	var after []string
	apptest.WaitFor(t, 15*time.Second, "the changes derived again", func() bool {
		after = read()
		return len(after) >= len(before)
	})
	for i := range before {
		if after[i] != before[i] {
			t.Fatalf("derived again, change %d of %d is\n%s\nwas\n%s", i+1, len(before), after[i], before[i])
		}
	}
	if len(after) != len(before) {
		t.Errorf("derived again, %d changes; were %d", len(after), len(before))
	}
	// A client's cursor names what it named.
	var page changePage
	again.Must(t, 200, "GET", "/api/v1/changes?limit=500", f.owner.Token, nil, &page)
	if len(page.Items) < 4*len(runs) {
		t.Errorf("the feed holds %d changes of the owner's, want at least %d", len(page.Items), 4*len(runs))
	}
}

// TestChangeFeedFromMemory: the changes this process's feed committed last
// are answered from memory (changes.Recent), exactly as the database holds
// them. (When the database answers instead: TestRecent, package changes.)
func TestChangeFeedFromMemory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.start(t, contractSurfaces[5], startArgs{conn: acme, token: f.operator.Token}).ExpectStart(t, "deduped")
	claims := f.claim(t, ex, 1, 0)
	f.complete(t, ex, run, map[string]any{"epoch": claims[0].Lease.Epoch, "status": "succeeded"}).ExpectStatus(t, 200)
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+acme, f.owner.Token, map[string]any{"consent": "revoked"}, nil)
	// Every change is in the feed before it is read: the revocation's too.
	list, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		return hasTypes(l, run, "run.accepted", "run.deduped", "run.started", "run.succeeded") &&
			slices.ContainsFunc(l, func(c change) bool { return c.Type == "connection.readiness_changed" })
	})

	ctx := f.Ctx
	tenants := []string{f.tenantA}
	fromDB := changes.NewReader(f.Pool, nil)
	encode := func(r *changes.Reader, after int64) string {
		t.Helper()
		page, err := r.After(ctx, tenants, after, 500)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(page)
		return string(b)
	}
	last, err := changes.ParseCursor(list[len(list)-1].Cursor)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for after := range last {
		want = append(want, encode(fromDB, after))
	}
	// Altered in the database only: what is answered from memory still
	// reads as the database had it.
	if _, err := f.Pool.Exec(ctx, `UPDATE changes SET type = 'altered' WHERE tenant_id = $1`, f.tenantA); err != nil {
		t.Fatal(err)
	}
	for after := range last {
		if got := encode(f.Changes, after); got != want[after] {
			t.Errorf("after %d, answered from memory:\n%s\nthe database held:\n%s", after, got, want[after])
		}
	}
	if got := encode(fromDB, 0); got == want[0] {
		t.Fatal("the database was not altered: the comparison proves nothing")
	}
}
