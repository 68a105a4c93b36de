package api_test

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
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/faultproxy"
	"github.com/opsgate/opsgate/migrations"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
)

// testAdminToken is the admin token of the test server.
const testAdminToken = "oga_test-admin-token"

// testServer is the API wired the way cmd/opsgate/serve.go wires it (store
// with gate.Route and the notifier's commit hook, the gate, projector
// runners, a Reader with a 2s read-your-writes wait, metrics, the
// onboarding service), served by httptest. No worker runs, so accepted runs
// stay queued and keep their scope busy.
//
// One server on one fresh database serves every test of the package: each
// test works in tenants of its own (newFixture). A database per test would
// cost a CREATE DATABASE per test, and a running CREATE DATABASE holds a
// transaction id that stalls every projector of the cluster (see the
// report on pg_snapshot_xmin), which made read-your-writes flaky.
type testServer struct {
	URL    string
	Echo   *echo.Echo
	Pool   *pgxpool.Pool
	Store  *eventstore.Store
	Gate   *gate.Service
	client *http.Client
	doc    *apiDoc
	logs   *syncBuffer
}

// syncBuffer collects the server's logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// linesWith returns the logged lines that contain s.
func (b *syncBuffer) linesWith(s string) string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var shared struct {
	once    sync.Once
	server  *testServer
	err     error
	cleanup []func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(shared.cleanup) - 1; i >= 0; i-- {
		shared.cleanup[i]()
	}
	os.Exit(code)
}

// server returns the package's test server, starting it on first use.
func server(t *testing.T) *testServer {
	t.Helper()
	shared.once.Do(func() {
		shared.server, shared.err = startServer(serverOptions{projectors: true}, func(fn func()) { shared.cleanup = append(shared.cleanup, fn) })
	})
	if shared.err != nil {
		t.Fatalf("start test server: %v", shared.err)
	}
	return shared.server
}

// privateServer is a server of its own for t, with or without projector
// runners (without them it is an api-only process whose projectors are
// down or behind).
func privateServer(t *testing.T, projectors bool) *testServer {
	t.Helper()
	s, err := startServer(serverOptions{projectors: projectors}, t.Cleanup)
	if err != nil {
		t.Fatalf("start test server: %v", err)
	}
	return s
}

// serverOptions shape a test server.
type serverOptions struct {
	// projectors runs the projector runners.
	projectors bool
	// via, if set, is the proxy every connection of the server goes
	// through (the database itself is reached directly to create it).
	via *faultproxy.Proxy
}

// startServer creates and migrates a database and serves the API on it,
// with projector runners when asked; cleanup registers what stops
// everything and drops the database (last registered runs first).
func startServer(o serverOptions, cleanup func(func())) (*testServer, error) {
	projectors := o.projectors
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		return nil, errors.New("DATABASE_URL is not set: run the tests with `make test`, which starts a private PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", base, err)
	}
	name := fmt.Sprintf("opsgate_test_api_%d", time.Now().UnixNano())
	_, err = admin.Exec(ctx, `CREATE DATABASE `+name)
	admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, base); err == nil {
			_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
			conn.Close(ctx)
		}
	})
	cfg, err := pgxpool.ParseConfig(base)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = 40
	if o.via != nil {
		host, port, err := net.SplitHostPort(o.via.Addr())
		if err != nil {
			return nil, err
		}
		p, _ := strconv.Atoi(port)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cleanup(pool.Close)
	if err := migrations.Apply(ctx, pool, nil); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}

	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	notifier := eventstore.NewNotifier(pool, logger, 0)
	store := eventstore.New(pool, gate.NewRegistry(), eventstore.WithRoute(gate.Route),
		eventstore.WithLogger(logger), eventstore.WithCommitHook(notifier.Committed))
	svc := gate.New(store)
	metrics := api.NewMetrics(pool)

	bg, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); notifier.Run(bg) }()
	runner := &projections.Runner{
		Pool: pool, Registry: store.Registry(), Logger: logger,
		Wake: notifier.Subscribe, PollInterval: 100 * time.Millisecond,
		OnApplied: metrics.ObserveProjection,
	}
	for _, p := range projections.All() {
		if !projectors {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runner.Run(bg, p); err != nil && bg.Err() == nil {
				logger.Error("projector stopped", "projector", p.Name, "err", err)
			}
		}()
	}
	e := api.NewEcho(api.Config{
		Logger:  logger,
		Ready:   api.Health{Ping: pool.Ping},
		Metrics: metrics,
		Routes: api.Routes(api.Deps{
			Gate:       svc,
			Reader:     projections.NewReader(pool, 2*time.Second, store),
			Store:      store,
			AdminToken: testAdminToken,
			Metrics:    metrics,
			Onboarding: onboarding.New(svc),
		}),
	})
	hs := httptest.NewServer(e)
	cleanup(func() {
		hs.Close()
		stop()
		wg.Wait()
	})
	s := &testServer{URL: hs.URL, Echo: e, Pool: pool, Store: store, Gate: svc, client: hs.Client(), logs: logs}
	if s.doc, err = loadDoc(s); err != nil {
		return nil, err
	}
	return s, nil
}

// reply is an HTTP answer.
type reply struct {
	Method, Path string
	Status       int
	Header       http.Header
	Body         []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%s %s -> %d %s", r.Method, r.Path, r.Status, r.Body)
}

// object decodes the body as a JSON object.
func (r reply) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s: body is not a JSON object: %v", r, err)
	}
	return m
}

// decode decodes the body into dst.
func (r reply) decode(t *testing.T, dst any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, dst); err != nil {
		t.Fatalf("%s: decode: %v", r, err)
	}
}

// problemBody is an application/problem+json body.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// expectProblem checks r is a problem with status and code.
func (r reply) expectProblem(t *testing.T, status int, code string) problemBody {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want status %d (%s)", r, status, code)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s: content type %q, want application/problem+json", r, ct)
	}
	var p problemBody
	r.decode(t, &p)
	if p.Code != code || p.Status != status || p.Title == "" || p.Detail == "" || p.Type == "" {
		t.Fatalf("%s: want problem code %q status %d with type, title and detail", r, code, status)
	}
	return p
}

func (r reply) expectStatus(t *testing.T, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want status %d", r, status)
	}
}

// header is an extra request header.
type header struct{ key, value string }

// call sends a request (see send) and fails the test on a 5xx answer or
// one without a request id. The answer is checked against the OpenAPI
// document.
func (s *testServer) call(t *testing.T, method, path, token string, body any, headers ...header) reply {
	t.Helper()
	r := s.send(t, method, path, token, body, headers...)
	if r.Status >= 500 {
		t.Errorf("%s: server error; its log:\n%s\ntransactions holding the xmin horizon:\n%s",
			r, s.logs.linesWith(r.Header.Get(echo.HeaderXRequestID)), s.horizonHolders())
	}
	if r.Header.Get(echo.HeaderXRequestID) == "" {
		t.Errorf("%s: no X-Request-Id", r)
	}
	s.doc.check(t, r)
	return r
}

// send sends a request and returns the answer. body is nil (none), []byte
// or string (sent as is), io.Reader (sent chunked) or anything else (sent
// as JSON).
func (s *testServer) send(t *testing.T, method, path, token string, body any, headers ...header) reply {
	t.Helper()
	var rd io.Reader
	length := int64(0)
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, length = bytes.NewReader(b), int64(len(b))
	case string:
		rd, length = strings.NewReader(b), int64(len(b))
	case io.Reader:
		rd, length = b, -1
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode body: %v", err)
		}
		rd, length = bytes.NewReader(raw), int64(len(raw))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.ContentLength = length
	if length < 0 {
		req.TransferEncoding = []string{"chunked"}
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		req.Header.Set(h.key, h.value)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{Method: method, Path: path, Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// mustJSON decodes a successful answer with status into dst (may be nil).
func (s *testServer) mustJSON(t *testing.T, status int, method, path, token string, body, dst any) reply {
	t.Helper()
	r := s.call(t, method, path, token, body)
	if r.Status != status {
		t.Fatalf("%s: want %d", r, status)
	}
	if dst != nil {
		r.decode(t, dst)
	}
	return r
}

// eventCount is the number of events in the store.
func (s *testServer) eventCount(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatalf("count events: %v", err)
	}
	return n
}

func randomID() string { return ulid.Make().String() }

// user is a user and its token.
type user struct {
	ID, Token, Name string
}

// fixture is a server with, created over HTTP: a workspace; tenant A with
// an owner, operator, auditor and readonly member and a ready default
// connection; tenant B whose owner (outsider) is no member of A, with a
// ready default connection; and tenant C with no connection at all.
type fixture struct {
	*testServer
	// exclusive: no other test runs meanwhile (the test is not parallel).
	exclusive                                    bool
	workspace                                    string
	tenantA, tenantB, tenantC                    string
	owner, operator, auditor, readonly, outsider user
	connA, connB                                 string
}

var userSeq atomic.Int64

// newExclusiveFixture is newFixture for a test that does not call
// t.Parallel, so that it may also check that nothing at all was recorded.
func newExclusiveFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.exclusive = true
	return f
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, server(t))
}

func newFixtureOn(t *testing.T, s *testServer) *fixture {
	t.Helper()
	f := &fixture{testServer: s}
	var ws struct{ ID string }
	s.mustJSON(t, 201, "POST", "/api/v1/admin/workspaces", testAdminToken, map[string]any{"name": "Contoso MSP"}, &ws)
	f.workspace = ws.ID
	f.tenantA = f.newTenant(t, "Fabrikam")
	f.tenantB = f.newTenant(t, "Northwind")
	f.tenantC = f.newTenant(t, "Tailspin")
	f.owner = f.newUser(t, "owner", f.tenantA, "owner")
	f.operator = f.newUser(t, "operator", f.tenantA, "operator")
	f.auditor = f.newUser(t, "auditor", f.tenantA, "auditor")
	f.readonly = f.newUser(t, "readonly", f.tenantA, "readonly")
	f.grant(t, f.owner.ID, f.tenantC, "owner")
	f.outsider = f.newUser(t, "outsider", f.tenantB, "owner")
	f.connA = f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Graph A", Default: true})
	f.connB = f.newConnection(t, f.tenantB, f.outsider.Token, conn{Name: "Graph B", Default: true})
	return f
}

func (f *fixture) newTenant(t *testing.T, name string) string {
	t.Helper()
	var tn struct{ ID string }
	f.mustJSON(t, 201, "POST", "/api/v1/admin/tenants", testAdminToken, map[string]any{"workspace_id": f.workspace, "name": name}, &tn)
	return tn.ID
}

// newUser creates a user with role on tenant (none when tenant is "").
func (f *fixture) newUser(t *testing.T, name, tenant, role string) user {
	t.Helper()
	var u struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	email := fmt.Sprintf("%s-%d@example.test", name, userSeq.Add(1))
	f.mustJSON(t, 201, "POST", "/api/v1/admin/users", testAdminToken, map[string]any{"email": email, "name": name}, &u)
	if u.Token == "" {
		t.Fatalf("user %s: no token in the answer", name)
	}
	if tenant != "" {
		f.grant(t, u.ID, tenant, role)
	}
	return user{ID: u.ID, Token: u.Token, Name: name}
}

func (f *fixture) grant(t *testing.T, userID, tenant, role string) {
	t.Helper()
	f.mustJSON(t, 201, "POST", "/api/v1/admin/memberships", testAdminToken,
		map[string]any{"user_id": userID, "tenant_id": tenant, "role": role}, nil)
}

// conn describes a connection to create; zero values make a ready one.
type conn struct {
	Name        string
	Default     bool
	Consent     string // granted unless set
	Credentials string // valid unless set
	Disabled    bool
}

func (f *fixture) newConnection(t *testing.T, tenant, token string, c conn) string {
	t.Helper()
	if c.Consent == "" {
		c.Consent = "granted"
	}
	if c.Credentials == "" {
		c.Credentials = "valid"
	}
	if c.Name == "" {
		c.Name = "Graph " + strconv.FormatInt(userSeq.Add(1), 10)
	}
	var out struct{ ID string }
	f.mustJSON(t, 201, "POST", "/api/v1/tenants/"+tenant+"/provider-connections", token, map[string]any{
		"provider": "simulated", "display_name": c.Name, "is_default": c.Default,
		"consent": c.Consent, "credentials": c.Credentials, "enabled": !c.Disabled,
	}, &out)
	return out.ID
}

// newRestoreRun drafts a restore run on tenant A, previewed when asked.
func (f *fixture) newRestoreRun(t *testing.T, items string, preview bool) string {
	t.Helper()
	var r struct{ ID string }
	f.mustJSON(t, 201, "POST", "/api/v1/tenants/"+f.tenantA+"/restore-runs", f.owner.Token,
		json.RawMessage(`{"name":"Mailbox restore","items":`+items+`}`), &r)
	if preview {
		f.mustJSON(t, 200, "POST", "/api/v1/restore-runs/"+r.ID+"/preview", f.owner.Token, nil, nil)
	}
	return r.ID
}

// auditCount is the number of tenant's events the audit API lists.
func (f *fixture) auditCount(t *testing.T, tenant, token string) int {
	t.Helper()
	n := 0
	after := ""
	for {
		path := "/api/v1/audit/events?limit=200&tenant_id=" + tenant
		if after != "" {
			path += "&after=" + after
		}
		var page struct {
			Items     []json.RawMessage `json:"items"`
			NextAfter *int64            `json:"next_after"`
		}
		f.mustJSON(t, 200, "GET", path, token, nil, &page)
		n += len(page.Items)
		if page.NextAfter == nil {
			return n
		}
		after = strconv.FormatInt(*page.NextAfter, 10)
	}
}

// unchanged runs fn and fails if it recorded any event of tenant A, in
// the store and through the audit API; for a fixture of a test that runs
// alone (newExclusiveFixture), any event at all.
func (f *fixture) unchanged(t *testing.T, what string, fn func()) {
	t.Helper()
	before := f.eventCount(t)
	audit := f.settledAuditCount(t, f.tenantA, f.owner.Token)
	fn()
	if after := f.eventCount(t); after != before && f.exclusive {
		t.Errorf("%s recorded %d event(s)", what, after-before)
	}
	if got := f.settledAuditCount(t, f.tenantA, f.owner.Token); got != audit {
		t.Errorf("%s: tenant A's audit trail went from %d to %d events", what, audit, got)
	}
}

// settledAuditCount is auditCount once the audit API lists every event of
// tenant the store holds. The audit API only lists events below the
// oldest transaction still in progress anywhere in the cluster (so that
// paging never skips one), and tests of other packages share the cluster,
// so it may briefly lag.
func (f *fixture) settledAuditCount(t *testing.T, tenant, token string) int {
	t.Helper()
	var stored, listed int
	waitFor(t, "the audit API to list every stored event", 20*time.Second, func() bool {
		if err := f.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE tenant_id = $1`, tenant).Scan(&stored); err != nil {
			t.Fatalf("count events: %v", err)
		}
		listed = f.auditCount(t, tenant, token)
		return listed == stored
	})
	return listed
}

// waitRun waits until run id can be read; tests that are not about
// read-your-writes use it before they act on a run they just started, so
// that a projector held back by other tests' transactions (see
// horizonHolders) does not fail them.
func (f *fixture) waitRun(t *testing.T, id string, token ...string) {
	t.Helper()
	waitFor(t, "run "+id+" to be readable", 30*time.Second, func() bool {
		req, _ := http.NewRequest("GET", f.URL+"/api/v1/operations/"+id, nil)
		tok := f.owner.Token
		if len(token) > 0 {
			tok = token[0]
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatalf("get run: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// horizonHolders lists the transactions of the whole cluster that hold a
// transaction id for more than 200ms. The event store's readers only see
// events below the oldest of them (pg_snapshot_xmin), whatever database
// it runs in, so these explain a projector or the audit API lagging.
func (s *testServer) horizonHolders() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := s.Pool.Query(ctx, `SELECT coalesce(datname, ''), state, extract(epoch FROM now() - xact_start)::float8,
		left(regexp_replace(query, '\s+', ' ', 'g'), 80)
		FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND now() - xact_start > interval '200 milliseconds'
		ORDER BY xact_start`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var db, state, query string
		var age float64
		if rows.Scan(&db, &state, &age, &query) == nil {
			out = append(out, fmt.Sprintf("  db=%s %s for %.2fs: %s", db, state, age, query))
		}
	}
	if len(out) == 0 {
		return "  (none now)"
	}
	return strings.Join(out, "\n")
}

// foreignHorizonHolders is horizonHolders limited to other databases.
func (s *testServer) foreignHorizonHolders() string {
	var own string
	_ = s.Pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&own)
	var out []string
	for _, l := range strings.Split(s.horizonHolders(), "\n") {
		if strings.HasPrefix(l, "  db=") && !strings.HasPrefix(l, "  db="+own+" ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // a polling pause, not synchronisation
	}
}
