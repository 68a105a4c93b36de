package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// signedAt waits until tenant's latest checkpoint covers size events and
// returns it, signed and opened.
func (f *fixture) signedAt(t *testing.T, v note.Verifier, tenant string, size int) ([]byte, audit.Checkpoint) {
	t.Helper()
	var signed []byte
	var cp audit.Checkpoint
	apptest.WaitFor(t, 15*time.Second, fmt.Sprintf("a checkpoint of %d events", size), func() bool {
		r := f.Call(t, "GET", "/api/v1/audit/checkpoint?tenant_id="+tenant, f.auditor.Token, nil)
		if r.Status == 404 {
			return false
		}
		r.ExpectStatus(t, 200)
		if ct := r.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Fatalf("checkpoint content type %q", ct)
		}
		var err error
		if cp, err = audit.OpenCheckpoint(r.Body, v); err != nil {
			t.Fatalf("open the checkpoint: %v\n%s", err, r.Body)
		}
		signed = r.Body
		return cp.Size >= int64(size)
	})
	return signed, cp
}

func (f *fixture) verifier(t *testing.T) note.Verifier {
	t.Helper()
	var key api.AuditKey
	f.Must(t, 200, "GET", "/api/v1/audit/key", "", nil, &key)
	v, err := audit.NewVerifier(key.VerifierKey)
	if err != nil {
		t.Fatalf("verifier key %q: %v", key.VerifierKey, err)
	}
	return v
}

// A tenant's history is signed within seconds; every event's proof checks
// offline against the checkpoint it comes with, earlier checkpoints stay
// provable, and consistency proofs lead from one to the next.
func TestAuditProofsCheckOffline(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	v := f.verifier(t)
	f.busyHistory(t)
	first := f.chained(t, f.tenantA)
	_, older := f.signedAt(t, v, f.tenantA, first)
	if older.Origin != "opsgate/"+f.tenantA || older.Size != int64(first) {
		t.Fatalf("checkpoint %+v, want origin opsgate/%s and %d events", older, f.tenantA, first)
	}
	f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Later"})
	size := f.chained(t, f.tenantA)
	_, newer := f.signedAt(t, v, f.tenantA, size)

	for seq := 1; seq <= size; seq++ {
		r := f.Call(t, "GET", fmt.Sprintf("/api/v1/audit/proof?tenant_id=%s&seq=%d", f.tenantA, seq), f.auditor.Token, nil)
		r.ExpectStatus(t, 200)
		cp, err := audit.VerifyProof(r.Body, v)
		if err != nil || cp != newer {
			t.Fatalf("proof of seq %d: %v (checkpoint %+v, want %+v)\n%s", seq, err, cp, newer, r.Body)
		}
	}
	// A proof against the earlier checkpoint carries that checkpoint.
	var p audit.Proof
	f.Must(t, 200, "GET", fmt.Sprintf("/api/v1/audit/proof?tenant_id=%s&seq=1&size=%d", f.tenantA, older.Size), f.auditor.Token, nil, &p)
	if cp, err := audit.VerifyProof([]byte(mustJSON(t, p)), v); err != nil || cp != older {
		t.Fatalf("proof against the earlier checkpoint: %v (%+v)", err, cp)
	}
	// Altered in transit, it no longer checks.
	p.Event = json.RawMessage(strings.Replace(string(p.Event), `"seq":1`, `"seq":1,"extra":true`, 1))
	if _, err := audit.VerifyProof([]byte(mustJSON(t, p)), v); err == nil {
		t.Fatal("an altered event's proof verified")
	}

	var c audit.Consistency
	f.Must(t, 200, "GET", fmt.Sprintf("/api/v1/audit/consistency?tenant_id=%s&from=%d&to=%d", f.tenantA, older.Size, newer.Size), f.auditor.Token, nil, &c)
	if err := audit.CheckConsistency(older, newer, c.Hashes); err != nil || c.From != older.Size || c.To != newer.Size {
		t.Fatalf("consistency %+v: %v", c, err)
	}
	f.Must(t, 200, "GET", fmt.Sprintf("/api/v1/audit/consistency?tenant_id=%s&from=2&to=2", f.tenantA), f.auditor.Token, nil, &c)
	if len(c.Hashes) != 0 {
		t.Fatalf("consistency of a tree with itself: %d hashes", len(c.Hashes))
	}
	// The proof from the earlier root does not lead to a forged one.
	forged := newer
	forged.Root = tlog.RecordHash([]byte("forged"))
	if err := audit.CheckConsistency(older, forged, c.Hashes); err == nil {
		t.Fatal("a consistency proof checked against a forged root")
	}
}

// A deployment without a signing key serves no key and no checkpoint.
func TestAuditWithoutSigningKey(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: true}),
		apptest.Configure(func(c *config.Config) { c.AuditSigningKeyFile = "" })))
	f.Call(t, "GET", "/api/v1/audit/key", "", nil).ExpectProblem(t, 404, "audit_signing_off")
	f.busyHistory(t)
	f.chained(t, f.tenantA)
	f.Call(t, "GET", "/api/v1/audit/checkpoint?tenant_id="+f.tenantA, f.auditor.Token, nil).ExpectProblem(t, 404, "checkpoint_not_found")
	f.Call(t, "GET", "/api/v1/audit/proof?tenant_id="+f.tenantA+"&seq=1", f.auditor.Token, nil).ExpectProblem(t, 404, "checkpoint_not_found")
	// The tree is there all the same: consistency proofs need no checkpoint.
	var c audit.Consistency
	f.Must(t, 200, "GET", "/api/v1/audit/consistency?tenant_id="+f.tenantA+"&from=1&to=3", f.auditor.Token, nil, &c)
	if len(c.Hashes) == 0 {
		t.Fatal("no consistency proof from 1 to 3 leaves")
	}
}

func TestAuditProofBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	v := f.verifier(t)
	f.busyHistory(t)
	size := f.chained(t, f.tenantA)
	_, cp := f.signedAt(t, v, f.tenantA, size)
	q := func(path string, args ...any) string {
		return fmt.Sprintf("/api/v1/audit/"+path, append([]any{f.tenantA}, args...)...)
	}
	cases := []struct {
		path   string
		token  string
		status int
		code   string
	}{
		{q("proof?tenant_id=%s"), f.auditor.Token, 400, "invalid_query"},
		{q("proof?tenant_id=%s&seq=0"), f.auditor.Token, 400, "invalid_query"},
		{q("proof?tenant_id=%s&seq=abc"), f.auditor.Token, 400, "invalid_query"},
		{q("proof?tenant_id=%s&seq=1&size=-3"), f.auditor.Token, 400, "invalid_query"},
		{q("proof?tenant_id=%s&seq=1&size=1.5"), f.auditor.Token, 400, "invalid_query"},
		{q("proof?tenant_id=%s&seq=%d", cp.Size+1), f.auditor.Token, 404, "not_in_tree"},
		{q("proof?tenant_id=%s&seq=3&size=2"), f.auditor.Token, 404, "not_in_tree"},
		{q("proof?tenant_id=%s&seq=1&size=%d", cp.Size+50), f.auditor.Token, 404, "checkpoint_not_found"},
		{q("consistency?tenant_id=%s&from=3&to=2"), f.auditor.Token, 422, "invalid_range"},
		{q("consistency?tenant_id=%s&from=0&to=2"), f.auditor.Token, 400, "invalid_query"},
		{q("consistency?tenant_id=%s&from=x&to=2"), f.auditor.Token, 400, "invalid_query"},
		{q("consistency?tenant_id=%s&to=2"), f.auditor.Token, 400, "invalid_query"},
		{q("consistency?tenant_id=%s&from=1&to=%d", size+1000), f.auditor.Token, 404, "not_in_tree"},
		{q("checkpoint?tenant_id=%s"), f.outsider.Token, 404, "not_found"},
		{q("proof?tenant_id=%s&seq=1"), f.outsider.Token, 404, "not_found"},
		{q("consistency?tenant_id=%s&from=1&to=2"), f.outsider.Token, 404, "not_found"},
		{q("checkpoint?tenant_id=%s"), f.readonly.Token, 403, "forbidden"},
		{"/api/v1/audit/checkpoint", f.auditor.Token, 400, "invalid_query"},
		{q("checkpoint?tenant_id=%s"), "", 401, "unauthorized"},
	}
	for _, c := range cases {
		f.Call(t, "GET", c.path, c.token, nil).ExpectProblem(t, c.status, c.code)
	}
}

// Links chained before the tree existed get their trees from the
// backfill, which resumes where it stopped; the chainer continues the
// tree of a chain it finds incomplete.
func TestTreeBackfill(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.busyHistory(t)
	size := f.chained(t, f.tenantA)
	ctx := context.Background()
	history := audit.NewHistory(f.Store)
	forget := func() {
		superuser(t, f, `ALTER TABLE audit_chain DISABLE TRIGGER audit_chain_append_only`,
			`UPDATE audit_chain SET tree_hashes = NULL WHERE chain = '`+f.tenantA+`' AND seq > 1`,
			`ALTER TABLE audit_chain ENABLE TRIGGER audit_chain_append_only`)
	}
	forget()
	var m *audit.Mismatch
	if _, err := history.VerifyChain(ctx, f.tenantA); !errors.As(err, &m) || m.Seq != 2 || !strings.Contains(m.Why, "no tree hashes") {
		t.Fatalf("verify a chain whose tree is not built: %v", err)
	}
	// A backfill cut short after one transaction of 3 leaves: the tree is
	// built up to seq 4, and the rest is resumed from there.
	if n, err := history.BuildTree(ctx, f.tenantA, 3); err != nil || n != 3 {
		t.Fatalf("build 3 leaves of the tree: %d, %v", n, err)
	}
	if _, err := history.VerifyChain(ctx, f.tenantA); !errors.As(err, &m) || m.Seq != 5 || !strings.Contains(m.Why, "no tree hashes") {
		t.Fatalf("verify a chain whose tree is built up to seq 4: %v", err)
	}
	n, err := history.BackfillTrees(ctx)
	if err != nil || n < int64(size-4) {
		t.Fatalf("backfill: %d leaves, %v; want at least %d", n, err, size-4)
	}
	if v, err := history.VerifyChain(ctx, f.tenantA); err != nil || v.Events != size {
		t.Fatalf("verify after the backfill: %+v, %v", v, err)
	}
	// Incomplete again, as links chained by a process of the version
	// before the tree leave it, and a process of this version starts: the
	// tree is built (by its backfill, or by its chainer, whichever meets
	// the chain first) before new events are linked. (A chainer that has
	// grown the chain itself keeps its frontier and reads none: hence a
	// new process.)
	url := f.DatabaseURL
	f.App.Stop()
	f.App = apptest.Start(t, apptest.OnDatabase(url), apptest.Roles(app.Roles{API: true, Projector: true}))
	history = audit.NewHistory(f.Store)
	forget()
	f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "After"})
	grown := f.chained(t, f.tenantA)
	if v, err := history.VerifyChain(ctx, f.tenantA); err != nil || v.Events != grown || grown <= size {
		t.Fatalf("verify after the chainer met an incomplete tree: %+v, %v (%d events)", v, err, grown)
	}
	// Only the tree may be filled in, once.
	_, err = f.Pool.Exec(ctx, `UPDATE audit_chain SET tree_hashes = tree_hashes WHERE chain = $1 AND seq = 1`, f.tenantA)
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("rewriting a link's tree: %v", err)
	}
}
