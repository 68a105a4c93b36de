package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// exchange is one HTTP request of the load and its answer.
type exchange struct {
	sent, at time.Time
	kind     string // start, readback, read, list, cancel
	status   int    // 0: no answer (connection refused or dropped)
	code     string // the problem's code, if any
	outcome  string // a start's outcome
	runID    string
	replayed bool // an idempotent replay (no new decision)
	retryHdr bool // Retry-After was set
	err      string
}

// recorder keeps every exchange of the load.
type recorder struct {
	mu  sync.Mutex
	all []exchange
}

func (r *recorder) add(e exchange) {
	r.mu.Lock()
	r.all = append(r.all, e)
	r.mu.Unlock()
}

func (r *recorder) exchanges() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]exchange(nil), r.all...)
}

// api sends requests to the api processes in turn.
type api struct {
	addrs []string
	next  atomic.Int64
	http  *http.Client
	admin string
}

func newAPI(addrs []string, admin string) *api {
	return &api{addrs: addrs, admin: admin, http: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
	}}
}

// do sends one request to the next api process and decodes a JSON answer
// into out (when the status is 2xx and out is set).
func (a *api) do(ctx context.Context, method, path, token string, body any, hdr map[string]string, out any) exchange {
	base := a.addrs[int(a.next.Add(1))%len(a.addrs)]
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	ex := exchange{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+base+path, rd)
	if err != nil {
		ex.err, ex.at = err.Error(), time.Now()
		return ex
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := a.http.Do(req)
	ex.at = time.Now()
	if err != nil {
		ex.err = err.Error()
		return ex
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	ex.status = resp.StatusCode
	ex.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	ex.retryHdr = resp.Header.Get("Retry-After") != ""
	var shape struct {
		Code    string `json:"code"`
		Outcome string `json:"outcome"`
		ID      string `json:"id"`
		Run     struct {
			ID string `json:"id"`
		} `json:"run"`
	}
	_ = json.Unmarshal(raw, &shape)
	ex.code, ex.outcome, ex.runID = shape.Code, shape.Outcome, shape.Run.ID
	if ex.runID == "" {
		ex.runID = shape.ID
	}
	if out != nil && ex.status/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			ex.err = err.Error()
		}
	}
	return ex
}

// fixture is what the load works on: tenants with their owners' tokens
// and provider connections.
type fixture struct {
	tenants []tenantFx
}

type tenantFx struct {
	id    string
	as    caller
	conns []string
}

// caller is who sends a tenant's requests: its owner with their own
// token, or the platform's integration on the owner's behalf.
type caller struct {
	token, onBehalfOf string
}

// headers adds the caller's on-behalf-of header to hdr.
func (c caller) headers(hdr map[string]string) map[string]string {
	if c.onBehalfOf == "" {
		return hdr
	}
	out := map[string]string{"Opsgate-On-Behalf-Of": c.onBehalfOf}
	for k, v := range hdr {
		out[k] = v
	}
	return out
}

// as sends a request as c.
func (a *api) as(ctx context.Context, method, path string, c caller, body any, hdr map[string]string) exchange {
	return a.do(ctx, method, path, c.token, body, c.headers(hdr), nil)
}

// setup creates the fixture through the admin and tenant APIs, with a
// webhook endpoint of the workspace, subscribed to every type of change,
// that posts to hooks.
func setup(ctx context.Context, a *api, tenants, connsPer int, hooks *receiver) (*fixture, []string, error) {
	must := func(ex exchange, want int, what string) error {
		if ex.status != want {
			return fmt.Errorf("setup: %s answered %d %s %s", what, ex.status, ex.code, ex.err)
		}
		return nil
	}
	var ws struct{ ID string }
	if err := must(a.do(ctx, "POST", "/api/v1/admin/workspaces", a.admin, map[string]any{"name": "Soak MSP"}, nil, &ws), 201, "workspace"); err != nil {
		return nil, nil, err
	}
	var endpoint struct{ ID, Secret string }
	if err := must(a.do(ctx, "POST", "/api/v1/admin/webhooks", a.admin, map[string]any{"workspace_id": ws.ID, "url": hooks.url,
		"description": "the soak's receiver"}, nil, &endpoint), 201, "webhook endpoint"); err != nil {
		return nil, nil, err
	}
	if err := hooks.register(endpoint.ID, endpoint.Secret); err != nil {
		return nil, nil, err
	}
	// The platform's integration sends every other tenant's requests, on
	// behalf of the tenant's owner.
	var platform struct {
		Token struct{ Token string }
	}
	if err := must(a.do(ctx, "POST", "/api/v1/admin/integrations", a.admin, map[string]any{"workspace_id": ws.ID, "name": "Soak platform"}, nil, &platform), 201, "integration"); err != nil {
		return nil, nil, err
	}
	fx := &fixture{}
	tokens := []string{platform.Token.Token}
	for i := range tenants {
		var tn struct{ ID string }
		if err := must(a.do(ctx, "POST", "/api/v1/admin/tenants", a.admin, map[string]any{"workspace_id": ws.ID, "name": fmt.Sprintf("Tenant %d", i)}, nil, &tn), 201, "tenant"); err != nil {
			return nil, nil, err
		}
		var u struct{ ID, Token string }
		if err := must(a.do(ctx, "POST", "/api/v1/admin/users", a.admin, map[string]any{"email": fmt.Sprintf("owner-%d-%d@soak.example", i, time.Now().UnixNano()), "name": "Owner"}, nil, &u), 201, "user"); err != nil {
			return nil, nil, err
		}
		tokens = append(tokens, u.Token)
		if err := must(a.do(ctx, "POST", "/api/v1/admin/memberships", a.admin, map[string]any{"user_id": u.ID, "tenant_id": tn.ID, "role": "owner"}, nil, nil), 201, "membership"); err != nil {
			return nil, nil, err
		}
		t := tenantFx{id: tn.ID, as: caller{token: u.Token}}
		if i%2 == 1 {
			t.as = caller{token: platform.Token.Token, onBehalfOf: u.ID}
		}
		for j := range connsPer {
			sim := map[string]any{"latency_ms": 150 + (j*97)%900, "fail_with": nil}
			consent, enabled := "granted", true
			switch j {
			case 1, 5:
				sim["fail_with"] = "provider.unavailable"
			case 3:
				consent = "missing" // blocked
			case 4:
				enabled = false // blocked
			case 6:
				sim["latency_ms"] = 2500 // its starts allow a second: they time out
			}
			var c struct{ ID string }
			body := map[string]any{"provider": "simulated", "display_name": fmt.Sprintf("Graph %d", j), "is_default": j == 0,
				"consent": consent, "credentials": "valid", "enabled": enabled, "simulation": sim}
			if err := must(a.do(ctx, "POST", "/api/v1/tenants/"+tn.ID+"/provider-connections", u.Token, body, nil, &c), 201, "connection"); err != nil {
				return nil, nil, err
			}
			t.conns = append(t.conns, c.ID)
		}
		fx.tenants = append(fx.tenants, t)
	}
	return fx, tokens, nil
}

// recent is a small ring of accepted runs, for cancels and reads.
type recent struct {
	mu   sync.Mutex
	runs []recentRun
}

type recentRun struct {
	id string
	as caller
}

func (r *recent) add(id string, as caller) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, recentRun{id, as})
	if len(r.runs) > 200 {
		r.runs = r.runs[len(r.runs)-200:]
	}
}

func (r *recent) pick(rnd *rand.Rand) (recentRun, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.runs) == 0 {
		return recentRun{}, false
	}
	return r.runs[rnd.IntN(len(r.runs))], true
}

// connection-scoped and tenant-scoped start paths the load uses.
var (
	connectionStarts = []string{"inventory-sync", "compliance-snapshot", "check"}
	tenantStarts     = []string{"verify", "directory/groups/sync", "directory/role-definitions/sync"}
)

// client is one load client: it starts, reads back, reads, lists and
// cancels, pausing between requests, until ctx ends.
func client(ctx context.Context, seed uint64, a *api, fx *fixture, rec *recorder, runs *recent, pause time.Duration) {
	rnd := rand.New(rand.NewPCG(seed, seed*7+1))
	for ctx.Err() == nil {
		t := fx.tenants[rnd.IntN(len(fx.tenants))]
		switch r := rnd.Float64(); {
		case r < 0.6:
			startOne(ctx, rnd, a, t, rec, runs)
		case r < 0.7:
			if run, ok := runs.pick(rnd); ok {
				ex := a.as(ctx, "POST", "/api/v1/operations/"+run.id+"/cancel", run.as, nil, nil)
				ex.kind = "cancel"
				rec.add(ex)
			}
		case r < 0.9:
			if run, ok := runs.pick(rnd); ok {
				ex := a.as(ctx, "GET", "/api/v1/operations/"+run.id, run.as, nil, nil)
				ex.kind, ex.runID = "read", run.id
				rec.add(ex)
			}
		default:
			ex := a.as(ctx, "GET", "/api/v1/operations?limit=20&tenant_id="+t.id, t.as, nil, nil)
			ex.kind = "list"
			rec.add(ex)
		}
		jitter := time.Duration(rnd.Int64N(int64(pause)))
		select {
		case <-ctx.Done():
		case <-time.After(pause/2 + jitter):
		}
	}
}

// startOne starts an operation on a random connection. A third of the
// starts carry an Idempotency-Key and are repeated with it after an
// answer that is no answer (503, a dropped connection), as a careful
// client does; the rest are sent once. An accepted start is read back at
// once (from the other api process, as the client alternates).
func startOne(ctx context.Context, rnd *rand.Rand, a *api, t tenantFx, rec *recorder, runs *recent) {
	j := rnd.IntN(len(t.conns))
	conn := t.conns[j]
	body := map[string]any{}
	var path string
	if rnd.IntN(2) == 0 {
		path = "/api/v1/provider-connections/" + conn + "/" + connectionStarts[rnd.IntN(len(connectionStarts))]
	} else {
		path = "/api/v1/tenants/" + t.id + "/" + tenantStarts[rnd.IntN(len(tenantStarts))]
		body["provider_connection_id"] = conn
	}
	switch j {
	case 6: // runs 2.5 s: a second's maximum duration ends them timed out
		body["limits"] = map[string]any{"max_duration_s": 1}
	case 7: // a two-second claim deadline: not picked up while no worker runs
		body["limits"] = map[string]any{"queue_ttl_s": 2}
	}
	var hdr map[string]string
	if rnd.IntN(3) == 0 {
		hdr = map[string]string{"Idempotency-Key": fmt.Sprintf("soak-%d", rnd.Uint64())}
	}
	for attempt := 0; ; attempt++ {
		ex := a.as(ctx, "POST", path, t.as, body, hdr)
		ex.kind = "start"
		rec.add(ex)
		if ctx.Err() != nil {
			return
		}
		if hdr != nil && (ex.status == 0 || ex.status == 503) && attempt < 30 {
			wait := 500 * time.Millisecond
			if ex.retryHdr {
				wait = 2 * time.Second
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		if ex.outcome == "accepted" && !ex.replayed {
			runs.add(ex.runID, t.as)
			back := a.as(ctx, "GET", "/api/v1/operations/"+ex.runID, t.as, nil, nil)
			back.kind, back.runID = "readback", ex.runID
			rec.add(back)
		}
		return
	}
}

// statusName is a status for the table ("no answer" for 0).
func statusName(s int) string {
	if s == 0 {
		return "no answer"
	}
	return strconv.Itoa(s)
}
