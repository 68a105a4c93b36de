package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/opsgate/opsgate/changes"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/journal"
	"github.com/opsgate/opsgate/webhooks"
)

// webhook is an endpoint as the admin API answers it.
type webhook struct {
	ID          string   `json:"id"`
	WorkspaceID string   `json:"workspace_id"`
	URL         string   `json:"url"`
	Types       []string `json:"types"`
	Enabled     bool     `json:"enabled"`
	Secret      string   `json:"secret"`
}

// delivery is an attempt as the admin API lists it.
type delivery struct {
	ID             string     `json:"id"`
	ChangeID       *string    `json:"change_id"`
	Type           string     `json:"type"`
	Attempt        int        `json:"attempt"`
	State          string     `json:"state"`
	ResponseStatus *int       `json:"response_status"`
	Error          *string    `json:"error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

// message is one request a receiver got.
type message struct {
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time
	ID     string // webhook-id
	Type   string
	Data   json.RawMessage
}

// receiver is a real HTTP server that records what it is sent; handle,
// if set, answers instead of 200 (n is the request's number for its
// webhook-id, from 1).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      []message
	inFlight map[string]int
	overlaps []string
	handle   func(w http.ResponseWriter, r *http.Request, n int)
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{inFlight: map[string]int{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 0, 4096)
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		var env struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		id := r.Header.Get("webhook-id")
		rc.mu.Lock()
		n := 1
		for _, m := range rc.got {
			if m.ID == id && m.Path == r.URL.Path {
				n++
			}
		}
		rc.got = append(rc.got, message{Path: r.URL.Path, Header: r.Header.Clone(), Body: body, At: time.Now(), ID: id, Type: env.Type, Data: env.Data})
		key := r.URL.Path + " " + id
		if rc.inFlight[key] > 0 {
			rc.overlaps = append(rc.overlaps, key)
		}
		rc.inFlight[key]++
		handle := rc.handle
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			rc.inFlight[key]--
			rc.mu.Unlock()
		}()
		if handle != nil {
			handle(w, r, n)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) messages(path string) []message {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []message
	for _, m := range rc.got {
		if path == "" || m.Path == path {
			out = append(out, m)
		}
	}
	return out
}

// waitFor waits until the receiver got messages of which cond holds.
func (rc *receiver) waitFor(t *testing.T, what, path string, cond func([]message) bool) []message {
	t.Helper()
	var got []message
	apptest.WaitFor(t, 20*time.Second, what, func() bool {
		got = rc.messages(path)
		return cond(got)
	})
	return got
}

func (f *fixture) newWebhook(t *testing.T, workspace, url string, types []string) webhook {
	t.Helper()
	body := map[string]any{"workspace_id": workspace, "url": url}
	if types != nil {
		body["types"] = types
	}
	var w webhook
	f.Must(t, 201, "POST", "/api/v1/admin/webhooks", apptest.AdminToken, body, &w)
	return w
}

func (f *fixture) deliveries(t *testing.T, endpoint string) []delivery {
	t.Helper()
	var p struct{ Items []delivery }
	f.Must(t, 200, "GET", "/api/v1/admin/webhooks/"+endpoint+"/deliveries?limit=200", apptest.AdminToken, nil, &p)
	return p.Items
}

// verifyIndependently checks m's signature with the Standard Webhooks
// reference library, under secret.
func verifyIndependently(t *testing.T, m message, secret string) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("the reference library refuses secret %q: %v", secret, err)
	}
	return wh.Verify(m.Body, m.Header)
}

// webhookServer is a server with every role (the dispatcher runs with
// the worker), its dispatcher quick to time out and take over.
func webhookServer(t *testing.T, opts ...apptest.Option) *apptest.App {
	t.Helper()
	return apptest.Start(t, append([]apptest.Option{apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.Lease = 500*time.Millisecond, 2*time.Second
	}))}, opts...)...)
}

// TestWebhookEndpoints: the admin's endpoints, and every refusal with its
// code, recording nothing.
func TestWebhookEndpoints(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: true}),
		apptest.Configure(func(c *config.Config) { c.WebhookAllowPrivate = false })))
	for _, bad := range []struct {
		name string
		body map[string]any
		code string
	}{
		{"no url", map[string]any{"workspace_id": f.workspace}, "validation_failed"},
		{"ftp", map[string]any{"workspace_id": f.workspace, "url": "ftp://hooks.example.test/x"}, "validation_failed"},
		{"no host", map[string]any{"workspace_id": f.workspace, "url": "https:///x"}, "validation_failed"},
		{"user info", map[string]any{"workspace_id": f.workspace, "url": "https://me:pw@hooks.example.test/x"}, "validation_failed"},
		{"loopback", map[string]any{"workspace_id": f.workspace, "url": "http://127.0.0.1:9/x"}, "webhook_url_refused"},
		{"localhost", map[string]any{"workspace_id": f.workspace, "url": "http://localhost/x"}, "webhook_url_refused"},
		{"private", map[string]any{"workspace_id": f.workspace, "url": "https://10.1.2.3/x"}, "webhook_url_refused"},
		{"link-local", map[string]any{"workspace_id": f.workspace, "url": "http://169.254.169.254/latest"}, "webhook_url_refused"},
		{"ipv6 loopback", map[string]any{"workspace_id": f.workspace, "url": "http://[::1]/x"}, "webhook_url_refused"},
		{"unknown type", map[string]any{"workspace_id": f.workspace, "url": "https://hooks.example.test/x", "types": []string{"run.exploded"}}, "validation_failed"},
		{"no types", map[string]any{"workspace_id": f.workspace, "url": "https://hooks.example.test/x", "types": []string{}}, "validation_failed"},
		{"unknown workspace", map[string]any{"workspace_id": randomID(), "url": "https://hooks.example.test/x"}, "validation_failed"},
		{"malformed workspace", map[string]any{"workspace_id": "nope", "url": "https://hooks.example.test/x"}, "validation_failed"},
		{"no workspace", map[string]any{"url": "https://hooks.example.test/x"}, "validation_failed"},
	} {
		f.Call(t, "POST", "/api/v1/admin/webhooks", apptest.AdminToken, bad.body).ExpectProblem(t, 422, bad.code)
	}
	f.Call(t, "POST", "/api/v1/admin/webhooks", apptest.AdminToken, `{"workspace_id":"`+f.workspace+`","url":"https://x.test","extra":1}`).ExpectProblem(t, 400, "unknown_field")
	var none struct{ Items []webhook }
	f.Must(t, 200, "GET", "/api/v1/admin/webhooks?workspace_id="+f.workspace, apptest.AdminToken, nil, &none)
	if len(none.Items) != 0 {
		t.Fatalf("refused endpoints were recorded: %+v", none.Items)
	}

	// A name that does not resolve now is taken: each delivery checks the
	// address it connects to.
	all := f.newWebhook(t, f.workspace, "https://hooks.example.test/opsgate", nil)
	if !strings.HasPrefix(all.Secret, "whsec_") || all.Types != nil || !all.Enabled {
		t.Errorf("created %+v", all)
	}
	some := f.newWebhook(t, f.workspace, "https://hooks.example.test/done", []string{"run.succeeded", "run.failed"})
	var list struct{ Items []json.RawMessage }
	f.Must(t, 200, "GET", "/api/v1/admin/webhooks?workspace_id="+f.workspace, apptest.AdminToken, nil, &list)
	if len(list.Items) != 2 || strings.Contains(string(list.Items[0])+string(list.Items[1]), "whsec_") {
		t.Errorf("listed %s", list.Items)
	}
	var one webhook
	f.Must(t, 200, "GET", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, nil, &one)
	if one.Secret != "" || strings.Join(one.Types, ",") != "run.succeeded,run.failed" {
		t.Errorf("read %+v", one)
	}
	f.Must(t, 200, "PATCH", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, map[string]any{"types": nil, "enabled": false}, &one)
	if one.Types != nil || one.Enabled {
		t.Errorf("patched to every type, disabled: %+v", one)
	}
	f.Call(t, "PATCH", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, map[string]any{"url": "http://127.0.0.1/x"}).ExpectProblem(t, 422, "webhook_url_refused")
	f.Call(t, "PATCH", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, map[string]any{"types": []string{"nope"}}).ExpectProblem(t, 422, "validation_failed")
	var rotated webhook
	f.Must(t, 200, "POST", "/api/v1/admin/webhooks/"+all.ID+"/rotate-secret", apptest.AdminToken, nil, &rotated)
	if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == all.Secret {
		t.Errorf("rotated to %q from %q", rotated.Secret, all.Secret)
	}
	f.Must(t, 204, "DELETE", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, nil, nil)
	f.Call(t, "GET", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "DELETE", "/api/v1/admin/webhooks/"+some.ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/admin/webhooks/"+randomID()+"/deliveries", apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/admin/webhooks/"+all.ID+"/deliveries?status=lost", apptest.AdminToken, nil).ExpectProblem(t, 400, "invalid_query")
	f.Call(t, "POST", "/api/v1/admin/webhooks/"+all.ID+"/deliveries/"+randomID()+"/replay", apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/admin/webhooks", f.owner.Token, nil).ExpectProblem(t, 401, "unauthorized")
}

// TestWebhookDelivery: each change of the workspace reaches its endpoint,
// signed (checked with the reference library), carrying the feed's change
// under the change's id; two signatures while a rotated secret overlaps;
// nothing of another workspace.
func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, webhookServer(t))
	rc := newReceiver(t)
	mine := f.newWebhook(t, f.workspace, rc.URL+"/mine", nil)
	var other struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/admin/workspaces", apptest.AdminToken, map[string]any{"name": "Other MSP"}, &other)
	theirs := f.newWebhook(t, other.ID, rc.URL+"/theirs", nil)

	run := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	// Deliveries of one endpoint go out several at a time: they may
	// arrive in any order.
	got := rc.waitFor(t, "the run's changes delivered", "/mine", func(m []message) bool { return len(m) >= 3 })
	if types := strings.Split(typesIn(got), ","); len(types) != 3 || !slices.Contains(types, "run.accepted") ||
		!slices.Contains(types, "run.started") || !slices.Contains(types, "run.succeeded") {
		t.Errorf("delivered %s", typesIn(got))
	}
	feed, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool { return hasTypes(l, run, "run.accepted", "run.started", "run.succeeded") })
	byID := map[string]change{}
	for _, c := range feed {
		byID[c.ID] = c
	}
	for _, m := range got {
		if err := verifyIndependently(t, m, mine.Secret); err != nil {
			t.Errorf("message %s does not verify with the reference library: %v", m.ID, err)
		}
		var data change
		if err := json.Unmarshal(m.Data, &data); err != nil || data.ID != m.ID || m.Header.Get("Content-Type") != "application/json" {
			t.Errorf("message %s carries %s (%v)", m.ID, m.Data, err)
		}
		want, _ := json.Marshal(byID[m.ID])
		have, _ := json.Marshal(data)
		if string(want) != string(have) {
			t.Errorf("message %s carries\n%s\nthe feed has\n%s", m.ID, have, want)
		}
	}
	if n := len(rc.messages("/theirs")); n != 0 {
		t.Errorf("another workspace's endpoint was sent %d messages", n)
	}
	// Results are recorded a moment after the receiver answered.
	var recorded []delivery
	apptest.WaitFor(t, 10*time.Second, "the attempts recorded", func() bool {
		recorded = f.deliveries(t, mine.ID)
		for _, d := range recorded {
			if d.State == "pending" {
				return false
			}
		}
		return true
	})
	for _, d := range recorded {
		if d.State != "delivered" || d.Attempt != 1 || d.ResponseStatus == nil || *d.ResponseStatus != 200 {
			t.Errorf("delivery %+v", d)
		}
	}

	// Rotated: both secrets sign until the overlap ends.
	var rotated webhook
	f.Must(t, 200, "POST", "/api/v1/admin/webhooks/"+mine.ID+"/rotate-secret", apptest.AdminToken, nil, &rotated)
	later := f.start(t, contractSurfaces[6], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	var next message
	rc.waitFor(t, "a change of the run started after the rotation", "/mine", func(m []message) bool {
		for _, msg := range m {
			if strings.Contains(string(msg.Data), later) {
				next = msg
				return true
			}
		}
		return false
	})
	if sigs := strings.Fields(next.Header.Get("webhook-signature")); len(sigs) != 2 {
		t.Errorf("signatures after a rotation: %q, want two", next.Header.Get("webhook-signature"))
	}
	for _, secret := range []string{mine.Secret, rotated.Secret} {
		if err := verifyIndependently(t, next, secret); err != nil {
			t.Errorf("after the rotation, a secret does not verify: %v", err)
		}
	}
	// Ping: signed, of type ping.
	var ping delivery
	f.Must(t, 202, "POST", "/api/v1/admin/webhooks/"+theirs.ID+"/ping", apptest.AdminToken, nil, &ping)
	pinged := rc.waitFor(t, "the ping", "/theirs", func(m []message) bool { return len(m) == 1 })[0]
	if pinged.Type != "ping" || verifyIndependently(t, pinged, theirs.Secret) != nil || ping.ChangeID != nil {
		t.Errorf("ping %+v (queued %+v)", pinged, ping)
	}
}

// otherWorkspace creates a workspace beside f's, with a tenant and its
// owner.
func (f *fixture) otherWorkspace(t *testing.T) (tenant string, owner user) {
	t.Helper()
	var other, tn struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/admin/workspaces", apptest.AdminToken, map[string]any{"name": "Other MSP"}, &other)
	f.Must(t, 201, "POST", "/api/v1/admin/tenants", apptest.AdminToken, map[string]any{"workspace_id": other.ID, "name": "Fabrikam"}, &tn)
	return tn.ID, f.newUser(t, "their-owner", tn.ID, "owner")
}

// memoryServed counts the changes a dispatcher's streams were given from
// memory (webhooks.DispatcherConfig.Recent).
type memoryServed struct {
	inner interface {
		Following(after int64, limit int) ([]changes.Change, int64, bool)
	}
	// window, if not 0, is the most a read is given at once.
	window int
	mu     sync.Mutex
	ids    []string
	reads  int
}

func (m *memoryServed) Following(after int64, limit int) ([]changes.Change, int64, bool) {
	if m.window > 0 {
		limit = min(limit, m.window)
	}
	list, through, more := m.inner.Following(after, limit)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	for _, c := range list {
		m.ids = append(m.ids, c.ID)
	}
	return list, through, more
}

// TestWebhookStreamFromMemory: a dispatcher beside the change feed that
// committed the changes reads its streams from memory, and sends what a
// read of the database would: its workspace's changes alone, of the types
// its endpoint subscribes to as they are now, as the feed has them.
func TestWebhookStreamFromMemory(t *testing.T) {
	t.Parallel()
	served := &memoryServed{}
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.Lease = 500*time.Millisecond, 2*time.Second
		served.inner, c.Recent = c.Recent, served
	}))))
	rc := newReceiver(t)
	theirTenant, theirOwner := f.otherWorkspace(t)
	theirConn := f.newConnection(t, theirTenant, theirOwner.Token, conn{Name: "Graph theirs", Default: true})

	// Held while it subscribed to run.deduped alone; it follows the
	// types it has now.
	hook := f.newWebhook(t, f.workspace, rc.URL+"/memory", []string{"run.deduped"})
	f.Must(t, 200, "PATCH", "/api/v1/admin/webhooks/"+hook.ID, apptest.AdminToken, map[string]any{"types": []string{"run.accepted"}}, nil)
	// Runs on acme stay queued (no executor claims them): the second
	// start is deduped.
	f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	theirs := f.start(t, contractSurfaces[5], startArgs{conn: theirConn, token: theirOwner.Token}).ExpectStart(t, "accepted").Run.ID
	mine := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	f.start(t, contractSurfaces[5], startArgs{conn: acme, token: f.operator.Token}).ExpectStart(t, "deduped")
	last := f.start(t, contractSurfaces[6], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	feed, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		// last runs on (simulated): its start and end may follow.
		return hasTypes(l, mine, "run.accepted", "run.deduped") && slices.Contains(typesOf(l, last), "run.accepted")
	})
	want := map[string]string{}
	var through int64
	for _, c := range feed {
		if c.Type == "run.accepted" {
			b, _ := json.Marshal(c)
			want[c.ID] = string(b)
			through, _ = changes.ParseCursor(c.Cursor)
		}
	}
	// Once the stream's first attempts are recorded past the last change
	// it follows, the receiver has every message it will be sent.
	apptest.WaitFor(t, 10*time.Second, "the stream sent past the last change", func() bool {
		var sent int64
		err := f.Pool.QueryRow(t.Context(), `SELECT sent FROM webhook_streams WHERE endpoint_id = $1`, hook.ID).Scan(&sent)
		return err == nil && sent >= through
	})
	got := rc.messages("/memory")
	if len(got) != 2 || len(want) != 2 {
		t.Fatalf("delivered %s, want the workspace's two run.accepted", typesIn(got))
	}
	served.mu.Lock()
	fromMemory := slices.Clone(served.ids)
	served.mu.Unlock()
	for _, m := range got {
		var data change
		_ = json.Unmarshal(m.Data, &data)
		have, _ := json.Marshal(data)
		if string(have) != want[m.ID] {
			t.Errorf("message %s carries\n%s\nthe feed has\n%s", m.ID, have, want[m.ID])
		}
		if strings.Contains(string(m.Data), theirs) {
			t.Errorf("another workspace's change was sent: %s", m.Data)
		}
	}
	if !slices.ContainsFunc(got, func(m message) bool { return slices.Contains(fromMemory, m.ID) }) {
		t.Errorf("no message came from memory (%d changes given from memory)", len(fromMemory))
	}
}

// TestWebhookStreamReadsOnThroughMemory: a read of memory looks through a
// bounded part of it (here two changes); a stream whose next change lies
// beyond more of other workspaces' reads on at once, not at the next
// wake-up or poll (a minute here).
func TestWebhookStreamReadsOnThroughMemory(t *testing.T) {
	t.Parallel()
	served := &memoryServed{window: 2}
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.Lease, c.PollInterval = 500*time.Millisecond, 2*time.Second, time.Minute
		served.inner, c.Recent = c.Recent, served
	}))))
	rc := newReceiver(t)
	theirTenant, theirOwner := f.otherWorkspace(t)
	// Runs on acme stay queued (no executor claims them): nothing follows
	// the starts to wake the dispatcher again.
	f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	theirs := f.newConnection(t, theirTenant, theirOwner.Token, conn{Provider: "acme"})
	mine := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	f.newWebhook(t, f.workspace, rc.URL+"/far", []string{"run.accepted"})

	// Ten changes of the other workspace, decided together, then one of
	// the endpoint's.
	items := make([]map[string]any, 10)
	for i := range items {
		items[i] = map[string]any{"surface": "inventory_sync", "provider_connection_id": theirs}
	}
	f.Must(t, 200, "POST", "/api/v1/starts/batch", theirOwner.Token, map[string]any{"items": items}, nil)
	run := f.start(t, contractSurfaces[5], startArgs{conn: mine}).ExpectStart(t, "accepted").Run.ID
	got := rc.waitFor(t, "the endpoint's change, past the other workspace's", "/far", func(m []message) bool { return len(m) == 1 })
	if !strings.Contains(string(got[0].Data), run) {
		t.Errorf("delivered %s, want the run.accepted of %s", got[0].Data, run)
	}
}

// TestWebhookStreamRecordsUpToTheFirstUnanswered: a read of memory that
// reaches its limit (two attempts in flight at most) sends the changes it
// picked; while the first of them is unanswered, the stream's first
// attempts are recorded as far as just before it, however many after it
// are answered, and past it once it is.
func TestWebhookStreamRecordsUpToTheFirstUnanswered(t *testing.T) {
	t.Parallel()
	served := &memoryServed{}
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		// Two attempts in flight at most at first: a read of the four changes
		// reaches its limit. The first is held unanswered well within the
		// timeout (an attempt timed out is recorded as failed).
		c.Timeout, c.Lease, c.PerEndpoint = 20*time.Second, 45*time.Second, 2
		served.inner, c.Recent = c.Recent, served
	}))))
	rc := newReceiver(t)
	ready, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var first string // written before ready is closed
	rc.handle = func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-ready:
		case <-r.Context().Done():
			return
		}
		if r.Header.Get("webhook-id") == first {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}
	theirTenant, theirOwner := f.otherWorkspace(t)
	// Runs on acme stay queued (no executor claims them): each start is
	// one run.accepted.
	f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	theirs := f.newConnection(t, theirTenant, theirOwner.Token, conn{Provider: "acme"})
	items := make([]map[string]any, 4)
	for i := range items {
		items[i] = map[string]any{"surface": "inventory_sync",
			"provider_connection_id": f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme", Name: fmt.Sprintf("Limit %d", i)})}
	}
	hook := f.newWebhook(t, f.workspace, rc.URL+"/limit", []string{"run.accepted"})
	// A change the stream passes over, so that how far it is recorded
	// starts short of the changes it sends.
	f.start(t, contractSurfaces[5], startArgs{conn: theirs, token: theirOwner.Token}).ExpectStart(t, "accepted")
	f.Must(t, 200, "POST", "/api/v1/starts/batch", f.owner.Token, map[string]any{"items": items}, nil)
	accepted := func(c change) bool { return c.Type == "run.accepted" }
	feed, _ := f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		return len(slices.DeleteFunc(slices.Clone(l), func(c change) bool { return !accepted(c) })) == 4
	})
	seqs := map[string]int64{}
	var last int64
	for _, c := range feed {
		if !accepted(c) {
			continue
		}
		seq, _ := changes.ParseCursor(c.Cursor)
		seqs[c.ID], last = seq, max(last, seq)
		if first == "" || seq < seqs[first] {
			first = c.ID
		}
	}
	close(ready)
	sent := func() int64 {
		var n int64
		if err := f.Pool.QueryRow(t.Context(), `SELECT sent FROM webhook_streams WHERE endpoint_id = $1`, hook.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rc.waitFor(t, "the three changes after the first sent", "/limit", func(m []message) bool {
		return len(slices.DeleteFunc(m, func(m message) bool { return m.ID == first })) == 3
	})
	apptest.WaitFor(t, 10*time.Second, "the first attempts recorded up to just before the first change", func() bool {
		return sent() == seqs[first]-1
	})
	apptest.WaitFor(t, 10*time.Second, "the answers to the three after it recorded", func() bool {
		var n int
		err := f.Pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'delivered'`, hook.ID).Scan(&n)
		return err == nil && n == 3
	})
	if got := sent(); got != seqs[first]-1 {
		t.Errorf("first attempts recorded up to %d while the change at %d is unanswered", got, seqs[first])
	}
	releaseOnce.Do(func() { close(release) })
	apptest.WaitFor(t, 10*time.Second, "the first attempts recorded past the last change", func() bool { return sent() >= last })
	served.mu.Lock()
	fromMemory := len(served.ids)
	served.mu.Unlock()
	if fromMemory == 0 {
		t.Error("no change was read from memory")
	}
}

// TestWebhookDispatcherYields: while the process sheds starts, the
// dispatcher reads nothing new but once a second, and still delivers
// every change; once it stops yielding, it delivers on as before.
func TestWebhookDispatcherYields(t *testing.T) {
	t.Parallel()
	var yield atomic.Bool
	yield.Store(true)
	served := &memoryServed{}
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.Lease = 500*time.Millisecond, 2*time.Second
		served.inner, c.Recent, c.Yield = c.Recent, served, yield.Load
	}))))
	rc := newReceiver(t)
	f.newWebhook(t, f.workspace, rc.URL+"/yield", []string{"run.accepted"})
	reads := func() int {
		served.mu.Lock()
		defer served.mu.Unlock()
		return served.reads
	}
	conns := make([]string, 6)
	for i := range conns {
		conns[i] = f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Yield %d", i)})
	}
	began, before := time.Now(), reads()
	for _, c := range conns {
		f.start(t, contractSurfaces[5], startArgs{conn: c}).ExpectStart(t, "accepted")
	}
	rc.waitFor(t, "every change delivered while the dispatcher yields", "/yield", func(m []message) bool { return len(m) == len(conns) })
	if n, most := reads()-before, int(time.Since(began)/time.Second)+2; n > most {
		t.Errorf("%d reads in %s while yielding, want at most %d (one a second)", n, time.Since(began), most)
	}

	yield.Store(false)
	more := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Yield no more"})
	f.start(t, contractSurfaces[5], startArgs{conn: more}).ExpectStart(t, "accepted")
	rc.waitFor(t, "the change after it stopped yielding", "/yield", func(m []message) bool { return len(m) == len(conns)+1 })
}

// typesIn lists the types of list's changes in the order of their
// cursors: messages may arrive out of order (one slow message holds back
// no other), and receivers order them by data.cursor.
func typesIn(list []message) string {
	sorted := slices.Clone(list)
	cursor := func(m message) string {
		var c struct{ Cursor string }
		_ = json.Unmarshal(m.Data, &c)
		return c.Cursor
	}
	slices.SortStableFunc(sorted, func(a, b message) int { return strings.Compare(cursor(a), cursor(b)) })
	var out []string
	for _, m := range sorted {
		out = append(out, m.Type)
	}
	return strings.Join(out, ",")
}

// TestWebhookFailures: every kind of failed attempt is recorded and
// retried with the same webhook-id, Retry-After is honoured, 410 disables
// the endpoint, redirects are not followed, a huge answer is read no
// further than 64 KiB, and nothing is left running afterwards.
func TestWebhookFailures(t *testing.T) {
	f := newFixtureOn(t, webhookServer(t))
	before := runtime.NumGoroutine()
	rc := newReceiver(t)
	redirected := 0
	rc.handle = func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/flaky":
			switch n {
			case 1:
				w.WriteHeader(http.StatusInternalServerError)
			case 2:
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/elsewhere":
			redirected++
		case "/huge":
			w.WriteHeader(http.StatusOK)
			chunk := []byte(strings.Repeat("x", 64<<10))
			for i := 0; i < 160; i++ { // 10 MiB, if anyone read it all
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "/slow":
			<-r.Context().Done() // answers never: the attempt times out
		case "/reset":
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "/gone":
			w.WriteHeader(http.StatusGone)
		case "/down":
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}
	paths := []string{"/flaky", "/redirect", "/huge", "/slow", "/reset", "/gone", "/down"}
	endpoints := map[string]webhook{}
	for _, p := range paths {
		endpoints[p] = f.newWebhook(t, f.workspace, rc.URL+p, []string{"run.accepted"})
	}
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")

	// The schedule of the test servers is 100, 200, 400 ms: 4 attempts.
	settled := func(p string, states string) []delivery {
		t.Helper()
		var list []delivery
		apptest.WaitFor(t, 20*time.Second, p+" settled as "+states, func() bool {
			list = f.deliveries(t, endpoints[p].ID)
			var got []string
			for i := len(list) - 1; i >= 0; i-- {
				got = append(got, list[i].State)
			}
			return strings.Join(got, ",") == states
		})
		return list
	}
	flaky := settled("/flaky", "failed,failed,delivered")
	if *flaky[2].ResponseStatus != 500 || *flaky[1].ResponseStatus != 429 || *flaky[0].ResponseStatus != 204 {
		t.Errorf("flaky attempts answered %d, %d, %d", *flaky[2].ResponseStatus, *flaky[1].ResponseStatus, *flaky[0].ResponseStatus)
	}
	if flaky[0].Attempt != 3 || flaky[1].NextAttemptAt != nil {
		t.Errorf("third attempt %+v after %+v", flaky[0], flaky[1])
	}
	sent := rc.messages("/flaky")
	if len(sent) != 3 || sent[0].ID != sent[2].ID || sent[2].At.Sub(sent[1].At) < time.Second {
		t.Errorf("flaky was sent %d messages; the retry after a 429 with Retry-After: 1 came %s later", len(sent), sent[len(sent)-1].At.Sub(sent[1].At))
	}
	for _, p := range []string{"/redirect", "/slow", "/reset", "/down"} {
		list := settled(p, "failed,failed,failed,gave_up")
		if e := list[0].Error; e == nil || *e == "" {
			t.Errorf("%s: the last attempt records no error: %+v", p, list[0])
		}
		ids := rc.messages(p)
		for _, m := range ids {
			if m.ID != ids[0].ID {
				t.Errorf("%s: retried under webhook-id %s, first %s", p, m.ID, ids[0].ID)
			}
		}
	}
	if redirected != 0 {
		t.Errorf("a redirect was followed %d times", redirected)
	}
	if e := *settled("/slow", "failed,failed,failed,gave_up")[0].Error; !strings.Contains(e, "no answer within") {
		t.Errorf("a slow endpoint's attempt records %q", e)
	}
	settled("/huge", "delivered")
	gone := settled("/gone", "gave_up")
	var g webhook
	f.Must(t, 200, "GET", "/api/v1/admin/webhooks/"+endpoints["/gone"].ID, apptest.AdminToken, nil, &g)
	if g.Enabled || *gone[0].ResponseStatus != 410 {
		t.Errorf("after 410 the endpoint is %+v", g)
	}

	// Replay: a new attempt now, under the same webhook-id.
	first := rc.messages("/down")[0].ID
	down := f.deliveries(t, endpoints["/down"].ID)
	rc.handle = nil
	var replayed delivery
	f.Must(t, 202, "POST", "/api/v1/admin/webhooks/"+endpoints["/down"].ID+"/deliveries/"+down[0].ID+"/replay", apptest.AdminToken, nil, &replayed)
	if replayed.State != "pending" || replayed.Attempt != 5 {
		t.Errorf("replay queued %+v", replayed)
	}
	settled("/down", "failed,failed,failed,gave_up,delivered")
	if last := rc.messages("/down"); last[len(last)-1].ID != first {
		t.Errorf("replayed under %s, first sent as %s", last[len(last)-1].ID, first)
	}

	// Nothing is left running: the attempts' connections and goroutines
	// are gone once the receiver is.
	rc.Close()
	apptest.WaitFor(t, 10*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= before+10
	})
}

// TestWebhookDispatcherTakeover: a dispatcher killed while it sends an
// attempt; after its claim runs out another process records that attempt
// as failed and delivers the message; many changes through two
// dispatchers at once, no message in flight twice at the same time.
func TestWebhookDispatcherTakeover(t *testing.T) {
	t.Parallel()
	first := webhookServer(t)
	f := newFixtureOn(t, first)
	rc := newReceiver(t)
	held := make(chan struct{})
	var once sync.Once
	rc.handle = func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/held" && n == 1 {
			once.Do(func() { close(held) })
			<-r.Context().Done() // the dispatcher goes while it waits
			return
		}
		w.WriteHeader(http.StatusOK)
	}
	hook := f.newWebhook(t, f.workspace, rc.URL+"/held", []string{"run.accepted"})
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the first attempt was not sent within 20s")
	}
	first.Stop()
	second := webhookServer(t, apptest.OnDatabase(first.DatabaseURL))
	g := &fixture{App: second, workspace: f.workspace, tenantA: f.tenantA, owner: f.owner, connA: f.connA}
	apptest.WaitFor(t, 20*time.Second, "the message delivered by the second process", func() bool {
		return len(rc.messages("/held")) == 2
	})
	var list []delivery
	apptest.WaitFor(t, 10*time.Second, "the second attempt recorded", func() bool {
		list = g.deliveries(t, hook.ID)
		return len(list) == 2 && list[0].State == "delivered"
	})
	if list[1].State != "failed" || list[1].Error == nil || !strings.Contains(*list[1].Error, "stopped") || list[0].Attempt != 2 {
		t.Errorf("after the takeover: %+v, %+v", list[1], list[0])
	}
	if m := rc.messages("/held"); m[0].ID != m[1].ID {
		t.Errorf("taken over under webhook-id %s, first %s", m[1].ID, m[0].ID)
	}

	// Two dispatchers at once.
	third := webhookServer(t, apptest.OnDatabase(first.DatabaseURL), apptest.Roles(app.Roles{Worker: true}))
	_ = third
	many := g.newWebhook(t, f.workspace, rc.URL+"/many", []string{"run.accepted", "run.deduped"})
	conns := make([]string, 12)
	for i := range conns {
		conns[i] = g.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Busy %d", i)})
	}
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			g.Call(t, "POST", "/api/v1/provider-connections/"+conns[i%len(conns)]+"/inventory-sync", f.owner.Token, nil)
		})
	}
	wg.Wait()
	want := 0
	apptest.WaitFor(t, 20*time.Second, "every change of the burst delivered", func() bool {
		list := g.deliveries(t, many.ID)
		want = len(list)
		for _, d := range list {
			if d.State != "delivered" {
				return false
			}
		}
		return want == 24
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.overlaps) > 0 {
		t.Errorf("messages in flight twice at once: %v", rc.overlaps)
	}
}

// TestWebhookEnabledAgain: an endpoint disabled and enabled again is
// sent what happens from then on, not what happened while it was
// disabled.
func TestWebhookEnabledAgain(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, webhookServer(t))
	rc := newReceiver(t)
	hook := f.newWebhook(t, f.workspace, rc.URL+"/again", []string{"run.accepted"})
	var patched webhook
	f.Must(t, 200, "PATCH", "/api/v1/admin/webhooks/"+hook.ID, apptest.AdminToken, map[string]any{"enabled": false}, &patched)
	meanwhile := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	// The change is in the feed before the endpoint is enabled again.
	f.changesUntil(t, f.owner.Token, "", func(l []change) bool { return slices.Contains(typesOf(l, meanwhile), "run.accepted") })
	f.Must(t, 200, "PATCH", "/api/v1/admin/webhooks/"+hook.ID, apptest.AdminToken, map[string]any{"enabled": true}, &patched)
	second := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Graph again"})
	after := f.start(t, contractSurfaces[5], startArgs{conn: second}).ExpectStart(t, "accepted").Run.ID
	got := rc.waitFor(t, "the change after enabling delivered", "/again", func(m []message) bool {
		return slices.ContainsFunc(m, func(m message) bool { return strings.Contains(string(m.Data), after) })
	})
	for _, m := range got {
		if strings.Contains(string(m.Data), meanwhile) {
			t.Errorf("the change made while the endpoint was disabled was sent: %s", m.Data)
		}
	}
}

// TestWebhookStreamOfADeadHolder: a dispatcher that died holding an
// endpoint's stream, having read a change it may have sent; once its
// holding runs out another process takes the stream over, records that
// attempt as failed and sends the message again, under the same
// webhook-id. The backlog the metrics show counts the change meanwhile.
func TestWebhookStreamOfADeadHolder(t *testing.T) {
	t.Parallel()
	first := webhookServer(t, apptest.Roles(app.Roles{API: true, Projector: true}))
	f := newFixtureOn(t, first)
	rc := newReceiver(t)
	hook := f.newWebhook(t, f.workspace, rc.URL+"/dead", []string{"run.accepted"})
	run := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	f.changesUntil(t, f.owner.Token, "", func(l []change) bool { return slices.Contains(typesOf(l, run), "run.accepted") })
	// No dispatcher runs yet: the change waits in the stream.
	if oldest, _, err := f.Webhooks.Backlog(t.Context()); err != nil || oldest <= 0 || oldest > time.Minute {
		t.Errorf("the oldest pending delivery waited %s (%v), want the change's age", oldest, err)
	}
	// What a holder that died after reading the change leaves behind.
	if _, err := f.Pool.Exec(t.Context(), `UPDATE webhook_streams SET claimed = (SELECT max(seq) FROM changes),
		holder = 'dead', held_until = now() + interval '1 second' WHERE endpoint_id = $1`, hook.ID); err != nil {
		t.Fatal(err)
	}
	webhookServer(t, apptest.OnDatabase(first.DatabaseURL), apptest.Roles(app.Roles{Worker: true}))
	got := rc.waitFor(t, "the message sent by the process that took over", "/dead", func(m []message) bool { return len(m) == 1 })
	var list []delivery
	apptest.WaitFor(t, 10*time.Second, "the attempts recorded", func() bool {
		list = f.deliveries(t, hook.ID)
		return len(list) == 2 && list[0].State == "delivered"
	})
	if list[1].State != "failed" || list[1].Attempt != 1 || list[1].Error == nil || !strings.Contains(*list[1].Error, "stopped") ||
		list[0].Attempt != 2 || *list[0].ChangeID != got[0].ID {
		t.Errorf("after the takeover: %+v, %+v", list[1], list[0])
	}
	if oldest, _, err := f.Webhooks.Backlog(t.Context()); err != nil || oldest != 0 {
		t.Errorf("once delivered the oldest pending delivery waited %s (%v), want none", oldest, err)
	}
}

// TestWebhookStreamGivenBack: a dispatcher that gave its stream back had
// recorded the answer to a later change before sending an earlier one;
// the next holder sends the earlier change and passes over the later.
func TestWebhookStreamGivenBack(t *testing.T) {
	t.Parallel()
	first := webhookServer(t, apptest.Roles(app.Roles{API: true, Projector: true}))
	f := newFixtureOn(t, first)
	rc := newReceiver(t)
	hook := f.newWebhook(t, f.workspace, rc.URL+"/back", []string{"run.accepted"})
	second := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Graph back"})
	early := f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted").Run.ID
	late := f.start(t, contractSurfaces[5], startArgs{conn: second}).ExpectStart(t, "accepted").Run.ID
	f.changesUntil(t, f.owner.Token, "", func(l []change) bool {
		return slices.Contains(typesOf(l, early), "run.accepted") && slices.Contains(typesOf(l, late), "run.accepted")
	})
	// What a holder that gave the stream back leaves behind.
	_, err := f.Pool.Exec(t.Context(), `WITH c AS (SELECT seq, id FROM changes WHERE type = 'run.accepted' AND run_id = ANY($2)),
			recorded AS (
				INSERT INTO webhook_deliveries (id, endpoint_id, message_id, type, attempt, state, response_status, latency_ms, created_at)
				SELECT $3, $1, id, 'run.accepted', 1, 'delivered', 204, 1, now() FROM c WHERE seq = (SELECT max(seq) FROM c))
		UPDATE webhook_streams SET sent = (SELECT min(seq) FROM c) - 1, claimed = (SELECT min(seq) FROM c) - 1,
			recheck = (SELECT max(seq) FROM c), holder = NULL, held_until = NULL WHERE endpoint_id = $1`,
		hook.ID, []string{early, late}, journal.NewID())
	if err != nil {
		t.Fatal(err)
	}
	webhookServer(t, apptest.OnDatabase(first.DatabaseURL), apptest.Roles(app.Roles{Worker: true}))
	rc.waitFor(t, "the earlier change sent", "/back", func(m []message) bool { return len(m) >= 1 })
	apptest.WaitFor(t, 10*time.Second, "its attempt recorded", func() bool {
		list := f.deliveries(t, hook.ID)
		return len(list) == 2 && list[0].State == "delivered"
	})
	for _, m := range rc.messages("/back") {
		if strings.Contains(string(m.Data), late) {
			t.Errorf("the later change, recorded already, was sent again: %s", m.Data)
		}
	}
}

// TestSlowEndpointHoldsUpNoOther: an endpoint that answers nothing holds
// as many attempts as it may have in flight, and no other endpoint's.
func TestSlowEndpointHoldsUpNoOther(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, apptest.Start(t, apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.PerEndpoint = 20*time.Second, 2
	}))))
	rc := newReceiver(t)
	release := make(chan struct{})
	rc.handle = func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	}
	f.newWebhook(t, f.workspace, rc.URL+"/slow", []string{"run.accepted"})
	fast := f.newWebhook(t, f.workspace, rc.URL+"/fast", []string{"run.accepted"})
	const n = 8
	for i := range n {
		c := f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: fmt.Sprintf("Graph %d", i)})
		f.start(t, contractSurfaces[5], startArgs{conn: c}).ExpectStart(t, "accepted")
	}
	rc.waitFor(t, "every message at the fast endpoint", "/fast", func(m []message) bool { return len(m) == n })
	rc.mu.Lock()
	inFlight := 0
	for key, k := range rc.inFlight {
		if strings.HasPrefix(key, "/slow ") {
			inFlight += k
		}
	}
	rc.mu.Unlock()
	if inFlight != 2 {
		t.Errorf("%d attempts in flight at the slow endpoint, want its limit of 2", inFlight)
	}
	apptest.WaitFor(t, 10*time.Second, "the fast endpoint's attempts recorded delivered", func() bool {
		for _, d := range f.deliveries(t, fast.ID) {
			if d.State != "delivered" {
				return false
			}
		}
		return true
	})
	close(release)
	rc.waitFor(t, "every message at the slow endpoint once released", "/slow", func(m []message) bool { return len(m) == n })
}

// TestWebhookDatabaseDown: the database goes while an attempt is answered;
// its result waits for the database and is recorded once it is back: the
// message is delivered once, not lost and not sent again.
func TestWebhookDatabaseDown(t *testing.T) {
	t.Parallel()
	proxy, proxied := apptest.Proxy(t, "")
	f := newFixtureOn(t, webhookServer(t, apptest.OnDatabase(proxied), apptest.With(app.WithWebhookDispatcher(func(c *webhooks.DispatcherConfig) {
		c.Timeout, c.Lease = 2*time.Second, 30*time.Second
	}))))
	rc := newReceiver(t)
	arrived, answer, answered := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rc.handle = func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(arrived)
			<-answer
			defer close(answered)
		}
		w.WriteHeader(http.StatusOK)
	}
	hook := f.newWebhook(t, f.workspace, rc.URL+"/hold", []string{"run.accepted"})
	f.start(t, contractSurfaces[5], startArgs{conn: f.connA}).ExpectStart(t, "accepted")
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the attempt was not sent within 20s")
	}
	proxy.Cut()
	close(answer)
	<-answered
	f.Send(t, "GET", "/api/v1/admin/webhooks/"+hook.ID+"/deliveries", apptest.AdminToken, nil).ExpectProblem(t, 503, "database_unavailable")
	proxy.Restore()
	var list []delivery
	apptest.WaitFor(t, 20*time.Second, "the attempt recorded once the database is back", func() bool {
		r := f.Send(t, "GET", "/api/v1/admin/webhooks/"+hook.ID+"/deliveries", apptest.AdminToken, nil)
		if r.Status != 200 {
			return false
		}
		var p struct{ Items []delivery }
		r.Decode(t, &p)
		list = p.Items
		return len(list) == 1 && list[0].State == "delivered"
	})
	if got := len(rc.messages("/hold")); got != 1 {
		t.Errorf("the message was sent %d times", got)
	}
}
