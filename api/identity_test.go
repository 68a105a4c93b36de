package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
)

// integration is an integration and its first token.
type integration struct {
	ID, Token string
}

// newIntegration creates an integration of workspace.
func (f *fixture) newIntegration(t *testing.T, workspace, name string) integration {
	t.Helper()
	var in struct {
		ID    string `json:"id"`
		Token struct {
			Token string `json:"token"`
		} `json:"token"`
	}
	f.Must(t, 201, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": workspace, "name": name}, &in)
	if !strings.HasPrefix(in.Token.Token, "ogi_") {
		t.Fatalf("integration %s: token %q, want one prefixed ogi_", name, in.Token.Token)
	}
	return integration{ID: in.ID, Token: in.Token.Token}
}

// onBehalfOf is the header of an integration's request for u.
func onBehalfOf(u user) apptest.Header { return apptest.Header{Key: api.OnBehalfOfHeader, Value: u.ID} }

// token is a token as the admin API lists it.
type token struct {
	ID         string     `json:"id"`
	Token      string     `json:"token"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// tokensOf lists the tokens of owner ("users/<id>", "integrations/<id>",
// "executors/<id>").
func (f *fixture) tokensOf(t *testing.T, owner string) []token {
	t.Helper()
	var list struct{ Items []token }
	r := f.Must(t, 200, "GET", "/api/v1/admin/"+owner+"/tokens", apptest.AdminToken, nil, &list)
	if bytes.Contains(r.Body, []byte(`"token"`)) {
		t.Errorf("the tokens of %s are listed with their values: %s", owner, r.Body)
	}
	return list.Items
}

// issue issues a token of owner with body.
func (f *fixture) issue(t *testing.T, owner string, body any) token {
	t.Helper()
	var tok token
	f.Must(t, 201, "POST", "/api/v1/admin/"+owner+"/tokens", apptest.AdminToken, body, &tok)
	if tok.ID == "" || tok.Token == "" {
		t.Fatalf("issued %+v, want an id and the token", tok)
	}
	return tok
}

// refusedBy waits until app answers 401 to token, and fails if a request
// sent more than within after since was still let through.
func refusedBy(t *testing.T, a *apptest.App, tok string, since time.Time, within time.Duration, what string) {
	t.Helper()
	apptest.WaitFor(t, 30*time.Second, what, func() bool {
		sent := time.Now()
		r := a.Send(t, "GET", "/api/v1/tenants", tok, nil)
		if r.Status == 401 {
			return true
		}
		if late := sent.Sub(since); late > within {
			t.Fatalf("%s: a request sent %v after was answered %s", what, late.Round(time.Millisecond), r)
		}
		return false
	})
}

// TestIntegrationActsForItsUsers: the platform's integration starts as the
// operator who clicked: decided, recorded, notified and shown as that
// user "via" the integration, and the audit chain covers via.
func TestIntegrationActsForItsUsers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var created struct {
		ID          string     `json:"id"`
		WorkspaceID string     `json:"workspace_id"`
		Name        string     `json:"name"`
		CreatedAt   time.Time  `json:"created_at"`
		Token       token      `json:"token"`
		LastUsedAt  *time.Time `json:"last_used_at"`
	}
	f.Call(t, "POST", "/api/v1/admin/integrations", f.owner.Token, map[string]any{"workspace_id": f.workspace, "name": "x"}).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": randomID(), "name": "x"}).ExpectProblem(t, 422, "validation_failed")
	f.Call(t, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": f.workspace}).ExpectProblem(t, 422, "validation_failed")
	f.Must(t, 201, "POST", "/api/v1/admin/integrations", apptest.AdminToken, map[string]any{"workspace_id": f.workspace, "name": "Laravel platform"}, &created)
	if created.WorkspaceID != f.workspace || created.Name != "Laravel platform" || created.CreatedAt.IsZero() ||
		!strings.HasPrefix(created.Token.Token, "ogi_") || created.Token.ExpiresAt != nil || created.Token.ID == "" {
		t.Fatalf("created %+v", created)
	}
	platform := integration{ID: created.ID, Token: created.Token.Token}
	as := func(u user) apptest.Header { return onBehalfOf(u) }

	// A start on behalf of the operator: the operator's run.
	sc := contractSurfaces[0]
	path, body := f.startPathBody(sc, startArgs{})
	res := f.Call(t, "POST", path, platform.Token, body, as(f.operator)).ExpectStart(t, "accepted")
	checkRunIs(t, res, sc, f.tenantA, f.connA, f.operator.ID)
	f.waitRun(t, res.Run.ID)
	var detail struct {
		InitiatedBy struct {
			UserID string `json:"user_id"`
			Via    *struct {
				ID, Name string
			} `json:"via"`
			Label string `json:"label"`
		} `json:"initiated_by"`
	}
	f.Must(t, 200, "GET", "/api/v1/operations/"+res.Run.ID, f.owner.Token, nil, &detail)
	if by := detail.InitiatedBy; by.UserID != f.operator.ID || by.Via == nil || by.Via.ID != platform.ID || by.Label != "operator via Laravel platform" {
		t.Errorf("the run is initiated by %+v, want the operator via the integration", by)
	}
	// The same start by the owner directly: deduped, and said so without via.
	f.start(t, sc, startArgs{}).ExpectStart(t, "deduped")
	var why struct {
		AskedBy struct {
			InitiatorID string  `json:"initiator_id"`
			Actor       string  `json:"actor"`
			Via         *string `json:"via"`
			Label       string  `json:"label"`
		} `json:"asked_by"`
		LaterStarts []struct {
			InitiatorID string  `json:"initiator_id"`
			Via         *string `json:"via"`
		} `json:"later_starts"`
	}
	apptest.WaitFor(t, 30*time.Second, "the deduped start in the explanation", func() bool {
		f.Must(t, 200, "GET", "/api/v1/operations/"+res.Run.ID+"/explain", f.auditor.Token, nil, &why)
		return len(why.LaterStarts) == 1
	})
	if a := why.AskedBy; a.InitiatorID != f.operator.ID || a.Actor != f.operator.ID || a.Via == nil || *a.Via != "integration:"+platform.ID ||
		a.Label != "operator via Laravel platform" {
		t.Errorf("explained as asked by %+v", a)
	}
	if l := why.LaterStarts[0]; l.InitiatorID != f.owner.ID || l.Via != nil {
		t.Errorf("the deduped start by the owner is explained as %+v", l)
	}

	// Every event the integration's requests recorded names the user and
	// the integration, and the chain, which covers via, verifies.
	f.Call(t, "POST", "/api/v1/operations/"+res.Run.ID+"/cancel", platform.Token, nil, as(f.operator)).ExpectStatus(t, 200)
	n := f.chained(t, f.tenantA)
	viaEvents := 0
	for _, e := range f.AuditTrail(t, f.tenantA, f.auditor.Token) {
		switch e.Metadata.Via {
		case "":
		case "integration:" + platform.ID:
			viaEvents++
			if e.Metadata.Actor != f.operator.ID {
				t.Errorf("event %d (%s) through the integration has actor %s, want the operator", e.Position, e.Type, e.Metadata.Actor)
			}
		default:
			t.Errorf("event %d (%s) via %q", e.Position, e.Type, e.Metadata.Via)
		}
	}
	if viaEvents < 2 {
		t.Errorf("%d events via the integration, want the acceptance and the cancellation at least", viaEvents)
	}
	export := f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA, f.auditor.Token, nil)
	if v, err := audit.VerifyFile(bytes.NewReader(export.Body)); err != nil || v.Events != n {
		t.Errorf("verify the export: %+v, %v; want %d events", v, err, n)
	}
	if !bytes.Contains(export.Body, []byte(`"via":"integration:`+platform.ID+`"`)) {
		t.Errorf("the export does not carry via")
	}
	if v, err := audit.NewHistory(f.Store).VerifyChain(f.Ctx, f.tenantA); err != nil || v.Events != n {
		t.Errorf("verify the chain: %+v, %v", v, err)
	}

	// The run is the operator's: they are notified, on their own token
	// and through the integration alike.
	for _, r := range []func() apptest.Reply{
		func() apptest.Reply { return f.Call(t, "GET", "/api/v1/me/notifications", f.operator.Token, nil) },
		func() apptest.Reply {
			return f.Call(t, "GET", "/api/v1/me/notifications", platform.Token, nil, as(f.operator))
		},
	} {
		apptest.WaitFor(t, 30*time.Second, "the operator's notification", func() bool {
			return bytes.Contains(r().Body, []byte(res.Run.ID))
		})
	}

	// The caller's tenants: the owner's two (A and C), with role and
	// capabilities, the same directly and through the integration.
	type tenants struct {
		Items []struct {
			ID           string   `json:"id"`
			Role         string   `json:"role"`
			Capabilities []string `json:"capabilities"`
		}
	}
	var direct, through tenants
	f.Must(t, 200, "GET", "/api/v1/tenants", f.owner.Token, nil, &direct)
	r := f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, as(f.owner))
	r.ExpectStatus(t, 200)
	r.Decode(t, &through)
	if len(direct.Items) != 2 || direct.Items[0].Role != "owner" || len(direct.Items[0].Capabilities) == 0 {
		t.Errorf("the owner's tenants: %+v", direct.Items)
	}
	if a, b := mustJSON(t, direct), mustJSON(t, through); a != b {
		t.Errorf("the owner's tenants differ through the integration:\n%s\n%s", a, b)
	}

	// Integration tokens are no admin or executor tokens, and user tokens
	// no integration tokens (the header means nothing to them).
	f.Call(t, "GET", "/api/v1/admin/integrations", platform.Token, nil, as(f.owner)).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "POST", "/api/v1/executor/claims", platform.Token, `{}`, as(f.owner)).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "GET", "/api/v1/operations/"+res.Run.ID, f.outsider.Token, nil, as(f.owner)).ExpectProblem(t, 404, "not_found")

	// Listed with when it was last used, without secrets.
	var list struct {
		Items []struct {
			ID         string     `json:"id"`
			LastUsedAt *time.Time `json:"last_used_at"`
			RevokedAt  *time.Time `json:"revoked_at"`
		}
	}
	lr := f.Must(t, 200, "GET", "/api/v1/admin/integrations", apptest.AdminToken, nil, &list)
	if len(list.Items) == 0 || bytes.Contains(lr.Body, []byte(platform.Token)) || bytes.Contains(lr.Body, []byte(`"token"`)) {
		t.Fatalf("integrations listed: %s", lr.Body)
	}
	for _, in := range list.Items {
		if in.ID == platform.ID && (in.LastUsedAt == nil || in.RevokedAt != nil) {
			t.Errorf("the integration is listed %+v, want last_used_at set and not revoked", in)
		}
	}

	// Requests are counted by the kind of their token.
	kinds := map[string]float64{}
	for _, m := range parseMetrics(t, string(f.Call(t, "GET", "/metrics", "", nil).Body)) {
		if m.name == "opsgate_authenticated_requests_total" {
			kinds[m.labels["kind"]] += m.value
		}
	}
	for _, k := range []string{"user", "integration", "admin"} {
		if kinds[k] == 0 {
			t.Errorf("opsgate_authenticated_requests_total{kind=%q} is %v: %v", k, kinds[k], kinds)
		}
	}

	// Revoking the integration revokes its tokens.
	f.Must(t, 204, "DELETE", "/api/v1/admin/integrations/"+platform.ID, apptest.AdminToken, nil, nil)
	f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, as(f.owner)).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "DELETE", "/api/v1/admin/integrations/"+platform.ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "POST", "/api/v1/admin/integrations/"+platform.ID+"/tokens", apptest.AdminToken, map[string]any{}).ExpectProblem(t, 404, "not_found")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOnBehalfRefusals: what an integration may not do answers with the
// codes of section 13, records nothing, and reveals nothing about
// tenants outside its workspace.
func TestOnBehalfRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	platform := f.newIntegration(t, f.workspace, "Platform")
	// Another workspace, with a member of its own and one of both.
	var other struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/admin/workspaces", apptest.AdminToken, map[string]any{"name": "Other MSP"}, &other)
	var foreign struct{ ID string }
	f.Must(t, 201, "POST", "/api/v1/admin/tenants", apptest.AdminToken, map[string]any{"workspace_id": other.ID, "name": "Elsewhere"}, &foreign)
	stranger := f.newUser(t, "stranger", foreign.ID, "owner")
	both := f.newUser(t, "both", f.tenantA, "owner")
	f.grant(t, both.ID, foreign.ID, "owner")
	foreignConn := f.newConnection(t, foreign.ID, stranger.Token, conn{Name: "Foreign", Default: true})
	lonely := f.newUser(t, "lonely", "", "")
	disabled := f.newUser(t, "disabled", f.tenantA, "operator")
	f.Must(t, 200, "PATCH", "/api/v1/admin/users/"+disabled.ID, apptest.AdminToken, map[string]any{"disabled": true}, nil)

	events := func(tenant string) int {
		return f.Count(t, `SELECT count(*) FROM events WHERE tenant_id = $1`, tenant)
	}
	beforeA, beforeForeign := events(f.tenantA), events(foreign.ID)
	path, body := f.startPathBody(contractSurfaces[0], startArgs{})
	for _, tc := range []struct {
		name   string
		header []apptest.Header
		status int
		code   string
	}{
		{"no header", nil, 400, "on_behalf_of_required"},
		{"a blank header", []apptest.Header{{Key: api.OnBehalfOfHeader, Value: "  "}}, 400, "on_behalf_of_required"},
		{"a malformed user id", []apptest.Header{{Key: api.OnBehalfOfHeader, Value: "not a user"}}, 403, "on_behalf_of_refused"},
		{"an unknown user", []apptest.Header{{Key: api.OnBehalfOfHeader, Value: randomID()}}, 403, "on_behalf_of_refused"},
		{"a user of another workspace", []apptest.Header{onBehalfOf(stranger)}, 403, "on_behalf_of_refused"},
		{"a user with no membership", []apptest.Header{onBehalfOf(lonely)}, 403, "on_behalf_of_refused"},
		{"a disabled user", []apptest.Header{onBehalfOf(disabled)}, 403, "on_behalf_of_refused"},
	} {
		for _, target := range []struct{ method, path string }{{"POST", path}, {"GET", "/api/v1/operations"}, {"GET", "/api/v1/tenants"}} {
			var b any
			if target.method == "POST" {
				b = body
			}
			p := f.Call(t, target.method, target.path, platform.Token, b, tc.header...).ExpectProblem(t, tc.status, tc.code)
			if strings.Contains(p.Detail, foreign.ID) || strings.Contains(p.Detail, "Elsewhere") {
				t.Errorf("%s: the refusal names a tenant: %s", tc.name, p.Detail)
			}
		}
	}

	// A user of both workspaces, through this workspace's integration:
	// the other workspace's tenant does not exist, byte for byte.
	unknown := f.Call(t, "GET", "/api/v1/tenants/"+randomID()+"/provider-connections", platform.Token, nil, onBehalfOf(both))
	unknown.ExpectProblem(t, 404, "not_found")
	for _, r := range []apptest.Reply{
		f.Call(t, "GET", "/api/v1/tenants/"+foreign.ID+"/provider-connections", platform.Token, nil, onBehalfOf(both)),
		f.Call(t, "GET", "/api/v1/provider-connections/"+foreignConn, platform.Token, nil, onBehalfOf(both)),
		f.Call(t, "POST", "/api/v1/tenants/"+foreign.ID+"/verify", platform.Token, map[string]any{}, onBehalfOf(both)),
		f.Call(t, "GET", "/api/v1/operations?tenant_id="+foreign.ID, platform.Token, nil, onBehalfOf(both)),
	} {
		r.ExpectProblem(t, 404, "not_found")
		if !bytes.Equal(r.Body, unknown.Body) {
			t.Errorf("%s: body %s differs from an unknown tenant's %s", r, r.Body, unknown.Body)
		}
	}
	// Their own token reaches it; the integration's lists only this
	// workspace's tenant.
	f.Must(t, 200, "GET", "/api/v1/tenants/"+foreign.ID+"/provider-connections", both.Token, nil, nil)
	var mine struct{ Items []struct{ ID string } }
	r := f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(both))
	r.Decode(t, &mine)
	if len(mine.Items) != 1 || mine.Items[0].ID != f.tenantA {
		t.Errorf("through the integration, the user of both workspaces lists %+v, want tenant A only", mine.Items)
	}
	var ops struct{ Items []struct{ TenantID string } }
	f.Call(t, "GET", "/api/v1/operations", platform.Token, nil, onBehalfOf(both)).Decode(t, &ops)
	for _, op := range ops.Items {
		if op.TenantID != f.tenantA {
			t.Errorf("through the integration, the operations list holds a run of tenant %s", op.TenantID)
		}
	}
	if a, b := events(f.tenantA), events(foreign.ID); a != beforeA || b != beforeForeign {
		t.Errorf("refused requests recorded events: tenant A %d -> %d, the foreign tenant %d -> %d", beforeA, a, beforeForeign, b)
	}
}

// TestTokenLifecycle: users', integrations' and executors' tokens are
// issued (several at once, with or without an expiry), listed without
// secrets, and revoked one by one; a revoked or expired token answers 401
// on a second process within a second; issuing and revoking are events
// that never hold a token's value.
func TestTokenLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	two := apptest.Start(t, apptest.OnDatabase(f.DatabaseURL), apptest.Roles(app.Roles{API: true}))
	owner := "users/" + f.operator.ID
	first := f.tokensOf(t, owner)
	if len(first) != 1 || first[0].ExpiresAt != nil {
		t.Fatalf("a new user holds tokens %+v, want the one it was created with", first)
	}

	// Bad input.
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"expires_at":"` + past + `"}`, 422, "validation_failed"},
		{`{"expires_at":"tomorrow"}`, 422, "validation_failed"},
		{`{"expires_at":"2031-01-02 03:04:05"}`, 422, "validation_failed"},
		{`{"expires_at":1893456000}`, 422, "validation_failed"},
		{`{"expires_in":60}`, 400, "unknown_field"},
		{`{"expires_at":`, 400, "malformed_json"},
	} {
		r := f.Call(t, "POST", "/api/v1/admin/"+owner+"/tokens", apptest.AdminToken, tc.body)
		r.ExpectProblem(t, tc.status, tc.code)
		if tc.status == 422 && !bytes.Contains(r.Body, []byte("expires_at")) {
			t.Errorf("%s: the problem does not name expires_at: %s", tc.body, r.Body)
		}
	}
	f.Call(t, "POST", "/api/v1/admin/users/"+randomID()+"/tokens", apptest.AdminToken, map[string]any{}).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/admin/users/"+randomID()+"/tokens", apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+randomID(), apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	// Another owner's token is not this owner's to revoke.
	ownersFirst := f.tokensOf(t, "users/"+f.owner.ID)[0]
	f.Call(t, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+ownersFirst.ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	f.Call(t, "GET", "/api/v1/admin/"+owner+"/tokens", f.operator.Token, nil).ExpectProblem(t, 401, "unauthorized")

	// Rotation without downtime: a second token, both valid on both
	// processes, then the first revoked.
	second := f.issue(t, owner, map[string]any{})
	if !strings.HasPrefix(second.Token, "ogu_") || second.ExpiresAt != nil {
		t.Fatalf("issued %+v, want an ogu_ token without expiry", second)
	}
	for _, a := range []*apptest.App{f.App, two} {
		for _, tok := range []string{f.operator.Token, second.Token} {
			a.Call(t, "GET", "/api/v1/tenants", tok, nil).ExpectStatus(t, 200)
		}
	}
	listed := f.tokensOf(t, owner)
	if len(listed) != 2 || listed[0].ID != first[0].ID || listed[1].ID != second.ID || listed[0].LastUsedAt == nil || listed[1].LastUsedAt == nil {
		t.Fatalf("listed %+v, want both tokens, oldest first, each used", listed)
	}
	f.Must(t, 204, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+first[0].ID, apptest.AdminToken, nil, nil)
	revoked := time.Now()
	f.Call(t, "GET", "/api/v1/tenants", f.operator.Token, nil).ExpectProblem(t, 401, "unauthorized")
	refusedBy(t, two, f.operator.Token, revoked, time.Second, "the revoked token refused by the second process")
	for _, a := range []*apptest.App{f.App, two} {
		a.Call(t, "GET", "/api/v1/tenants", second.Token, nil).ExpectStatus(t, 200)
	}
	f.Call(t, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+first[0].ID, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
	if got := f.tokensOf(t, owner); len(got) != 1 || got[0].ID != second.ID {
		t.Errorf("after revoking the first, listed %+v", got)
	}

	// Expiry, without a request to revoke: trusted until the moment, on
	// both processes, refused from then on.
	expiresAt := time.Now().Add(1500 * time.Millisecond).UTC()
	brief := f.issue(t, owner, map[string]any{"expires_at": expiresAt.Format(time.RFC3339Nano)})
	if brief.ExpiresAt == nil || brief.ExpiresAt.Sub(expiresAt).Abs() > time.Millisecond {
		t.Fatalf("issued %+v, want expires_at %s", brief, expiresAt)
	}
	if time.Now().Before(expiresAt) {
		for _, a := range []*apptest.App{f.App, two} {
			if r := a.Call(t, "GET", "/api/v1/tenants", brief.Token, nil); r.Status != 200 && time.Now().Before(expiresAt) {
				t.Errorf("the token before it expires: %s", r)
			}
		}
	}
	for _, a := range []*apptest.App{f.App, two} {
		refusedBy(t, a, brief.Token, expiresAt, 0, "the expired token refused")
	}

	// An integration's tokens, likewise.
	platform := f.newIntegration(t, f.workspace, "Platform")
	spare := f.issue(t, "integrations/"+platform.ID, map[string]any{})
	if !strings.HasPrefix(spare.Token, "ogi_") {
		t.Errorf("an integration's token %q, want ogi_", spare.Token)
	}
	f.Must(t, 204, "DELETE", "/api/v1/admin/integrations/"+platform.ID+"/tokens/"+spare.ID, apptest.AdminToken, nil, nil)
	f.Call(t, "GET", "/api/v1/tenants", spare.Token, nil, onBehalfOf(f.owner)).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(f.owner)).ExpectStatus(t, 200)

	// The events say who issued and revoked which token, never its value.
	var issued, revokedEvents int
	rows, err := f.Pool.Query(f.Ctx, `SELECT event_type, payload::text || metadata::text FROM events
		WHERE stream_id = $1 AND event_type IN ('TokenIssued', 'TokenRevoked')`, "user-"+f.operator.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ, text string
		if err := rows.Scan(&typ, &text); err != nil {
			t.Fatal(err)
		}
		if typ == "TokenIssued" {
			issued++
		} else {
			revokedEvents++
		}
		for _, tok := range []string{f.operator.Token, second.Token, brief.Token} {
			if strings.Contains(text, tok) || strings.Contains(text, tok[4:]) {
				t.Errorf("a %s event holds a token's value: %s", typ, text)
			}
		}
	}
	if rows.Err() != nil || issued != 3 || revokedEvents != 1 {
		t.Errorf("the operator's stream holds %d TokenIssued and %d TokenRevoked (%v), want 3 and 1", issued, revokedEvents, rows.Err())
	}
	// Nor do the logs of either process.
	for _, a := range []*apptest.App{f.App, two} {
		for _, tok := range []string{f.operator.Token, second.Token, brief.Token, platform.Token, spare.Token} {
			if strings.Contains(a.Logs.String(), tok[4:]) {
				t.Errorf("a log holds a token's value")
			}
		}
	}
}

// TestExecutorTokens: an executor holds several tokens; revoking its last
// one ends the runs it holds, as revoking the executor does.
func TestExecutorTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme := f.newConnection(t, f.tenantA, f.owner.Token, conn{Provider: "acme"})
	ex := f.registerExecutor(t, "PHP jobs", []string{"acme"}, nil)
	owner := "executors/" + ex.ID
	old := f.tokensOf(t, owner)
	rotated := f.issue(t, owner, map[string]any{})
	if !strings.HasPrefix(rotated.Token, "oge_") || len(old) != 1 {
		t.Fatalf("issued %+v next to %+v", rotated, old)
	}
	f.Must(t, 204, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+old[0].ID, apptest.AdminToken, nil, nil)
	f.Call(t, "POST", "/api/v1/executor/claims", ex.Token, `{}`).ExpectProblem(t, 401, "unauthorized")
	ex.Token = rotated.Token

	run := f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted").Run.ID
	if got := f.claim(t, ex, 1, 0); len(got) != 1 || got[0].Run.ID != run {
		t.Fatalf("claimed %+v with the rotated token, want run %s", got, run)
	}
	f.Must(t, 204, "DELETE", "/api/v1/admin/"+owner+"/tokens/"+rotated.ID, apptest.AdminToken, nil, nil)
	var status, reason string
	err := f.Pool.QueryRow(context.Background(), `SELECT r.status, e.payload->'reason'->>'code' FROM runs r JOIN events e
		ON e.event_type = 'RunFailed' AND e.payload->>'run_id' = r.id WHERE r.id = $1`, run).Scan(&status, &reason)
	if err != nil || status != "failed" || reason != "execution.lost" {
		t.Errorf("the run of the executor left without a token is %s/%s (%v), want failed/execution.lost at once", status, reason, err)
	}
	f.Call(t, "POST", "/api/v1/executor/claims", ex.Token, `{}`).ExpectProblem(t, 401, "unauthorized")
	// Its scope is free again: the next start is accepted for a new
	// executor token.
	f.issue(t, owner, map[string]any{})
	f.start(t, contractSurfaces[5], startArgs{conn: acme}).ExpectStart(t, "accepted")
}

// TestUsersAndMemberships: a disabled user's tokens stop at once (here,
// and within a second on a second process) and work again once enabled;
// a changed role takes effect at once; a removed membership makes the
// tenant not found at once.
func TestUsersAndMemberships(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	two := apptest.Start(t, apptest.OnDatabase(f.DatabaseURL), apptest.Roles(app.Roles{API: true}))
	platform := f.newIntegration(t, f.workspace, "Platform")
	u := f.newUser(t, "leaver", f.tenantA, "operator")
	path := "/api/v1/admin/users/" + u.ID
	f.Call(t, "PATCH", path, apptest.AdminToken, map[string]any{}).ExpectProblem(t, 422, "validation_failed")
	f.Call(t, "PATCH", path, apptest.AdminToken, map[string]any{"disabled": "yes"}).ExpectProblem(t, 400, "invalid_field_type")
	f.Call(t, "PATCH", "/api/v1/admin/users/"+randomID(), apptest.AdminToken, map[string]any{"disabled": true}).ExpectProblem(t, 404, "not_found")
	for _, a := range []*apptest.App{f.App, two} {
		a.Call(t, "GET", "/api/v1/tenants", u.Token, nil).ExpectStatus(t, 200)
	}

	var got struct {
		ID       string `json:"id"`
		Disabled bool   `json:"disabled"`
	}
	f.Must(t, 200, "PATCH", path, apptest.AdminToken, map[string]any{"disabled": true}, &got)
	disabled := time.Now()
	if got.ID != u.ID || !got.Disabled {
		t.Fatalf("disabled: %+v", got)
	}
	f.Call(t, "GET", "/api/v1/tenants", u.Token, nil).ExpectProblem(t, 401, "unauthorized")
	f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(u)).ExpectProblem(t, 403, "on_behalf_of_refused")
	refusedBy(t, two, u.Token, disabled, time.Second, "the disabled user's token refused by the second process")
	f.Must(t, 200, "PATCH", path, apptest.AdminToken, map[string]any{"disabled": true}, nil) // as asked already
	f.Must(t, 200, "PATCH", path, apptest.AdminToken, map[string]any{"disabled": false}, &got)
	if got.Disabled {
		t.Errorf("enabled: %+v", got)
	}
	for _, a := range []*apptest.App{f.App, two} {
		a.Call(t, "GET", "/api/v1/tenants", u.Token, nil).ExpectStatus(t, 200)
	}
	f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(u)).ExpectStatus(t, 200)
	if n := f.Count(t, `SELECT count(*) FROM events WHERE stream_id = $1 AND event_type IN ('UserDisabled', 'UserEnabled')`, "user-"+u.ID); n != 2 {
		t.Errorf("%d UserDisabled/UserEnabled events, want 2 (asking twice records once)", n)
	}

	// A role changed: the operator made readonly may no longer start.
	membership := "/api/v1/admin/users/" + u.ID + "/memberships/" + f.tenantA
	verify := func() apptest.Reply { return f.start(t, contractSurfaces[0], startArgs{token: u.Token}) }
	f.Call(t, "PUT", membership, apptest.AdminToken, map[string]any{"role": "root"}).ExpectProblem(t, 422, "validation_failed")
	f.Call(t, "PUT", "/api/v1/admin/users/"+randomID()+"/memberships/"+f.tenantA, apptest.AdminToken, map[string]any{"role": "owner"}).ExpectProblem(t, 404, "not_found")
	f.Call(t, "PUT", "/api/v1/admin/users/"+u.ID+"/memberships/"+randomID(), apptest.AdminToken, map[string]any{"role": "owner"}).ExpectProblem(t, 404, "not_found")
	var m struct {
		UserID   string `json:"user_id"`
		TenantID string `json:"tenant_id"`
		Role     string `json:"role"`
	}
	f.Must(t, 200, "PUT", membership, apptest.AdminToken, map[string]any{"role": "readonly"}, &m)
	if m.UserID != u.ID || m.TenantID != f.tenantA || m.Role != "readonly" {
		t.Errorf("membership %+v", m)
	}
	verify().ExpectProblem(t, 403, "forbidden")
	f.Must(t, 200, "PUT", membership, apptest.AdminToken, map[string]any{"role": "operator"}, nil)
	if r := verify(); r.Status/100 != 2 {
		t.Errorf("the operator again: %s", r)
	}
	var mine struct{ Items []struct{ ID, Role string } }
	f.Must(t, 200, "GET", "/api/v1/tenants", u.Token, nil, &mine)
	if len(mine.Items) != 1 || mine.Items[0].ID != f.tenantA || mine.Items[0].Role != "operator" {
		t.Errorf("tenants %+v, want A as operator", mine.Items)
	}

	// Removed: the tenant is not found at once, on both processes.
	f.Must(t, 204, "DELETE", membership, apptest.AdminToken, nil, nil)
	for _, a := range []*apptest.App{f.App, two} {
		a.Call(t, "GET", "/api/v1/tenants/"+f.tenantA+"/provider-connections", u.Token, nil).ExpectProblem(t, 404, "not_found")
		a.Call(t, "GET", "/api/v1/operations?tenant_id="+f.tenantA, u.Token, nil).ExpectProblem(t, 404, "not_found")
	}
	verify().ExpectProblem(t, 404, "not_found")
	f.Must(t, 200, "GET", "/api/v1/tenants", u.Token, nil, &mine)
	if len(mine.Items) != 0 {
		t.Errorf("tenants after the removal: %+v", mine.Items)
	}
	f.Call(t, "GET", "/api/v1/tenants", platform.Token, nil, onBehalfOf(u)).ExpectProblem(t, 403, "on_behalf_of_refused")
	f.Call(t, "DELETE", membership, apptest.AdminToken, nil).ExpectProblem(t, 404, "not_found")
}
