package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// The verifiable audit of contract section 17 seen from outside: the
// commands an auditor runs (audit verify, verify-proof, watch, keygen)
// against a real application whose history someone with the database's
// superuser has tampered with, and the checkpoint signer facing such a
// history.

// auditKit is an application with a workspace and one user who owns
// every tenant the test makes (owner holds audit.read), talked to over
// the HTTP API as an operator and an auditor would.
type auditKit struct {
	*apptest.App
	workspace string
	userID    string
	token     string
	// verifierKey is the deployment's note verifier key, as GET
	// /api/v1/audit/key answers it ("" when the application signs nothing).
	verifierKey string
}

func newAuditKit(t *testing.T, a *apptest.App) *auditKit {
	t.Helper()
	k := &auditKit{App: a}
	var ws struct{ ID string }
	a.Must(t, 201, "POST", "/api/v1/admin/workspaces", apptest.AdminToken, map[string]any{"name": "Contoso MSP"}, &ws)
	k.workspace = ws.ID
	var u struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	email := fmt.Sprintf("auditor-%d@example.test", time.Now().UnixNano())
	a.Must(t, 201, "POST", "/api/v1/admin/users", apptest.AdminToken, map[string]any{"email": email, "name": "Auditing owner"}, &u)
	if u.Token == "" {
		t.Fatal("the new user's answer has no token")
	}
	k.userID, k.token = u.ID, u.Token
	if r := a.Call(t, "GET", "/api/v1/audit/key", "", nil); r.Status == 200 {
		var key struct {
			VerifierKey string `json:"verifier_key"`
		}
		r.Decode(t, &key)
		k.verifierKey = key.VerifierKey
	}
	return k
}

// tenant creates a tenant the kit's user owns.
func (k *auditKit) tenant(t *testing.T, name string) string {
	t.Helper()
	var tn struct{ ID string }
	k.Must(t, 201, "POST", "/api/v1/admin/tenants", apptest.AdminToken, map[string]any{"workspace_id": k.workspace, "name": name}, &tn)
	k.Must(t, 201, "POST", "/api/v1/admin/memberships", apptest.AdminToken,
		map[string]any{"user_id": k.userID, "tenant_id": tn.ID, "role": "owner"}, nil)
	return tn.ID
}

// connection creates a simulated connection on tenant with the consent
// given; its starts are blocked unless consent is granted.
func (k *auditKit) connection(t *testing.T, tenant, name, consent string, isDefault bool) string {
	t.Helper()
	var c struct{ ID string }
	k.Must(t, 201, "POST", "/api/v1/tenants/"+tenant+"/provider-connections", k.token, map[string]any{
		"provider": "simulated", "display_name": name, "is_default": isDefault,
		"consent": consent, "credentials": "valid", "enabled": true,
	}, &c)
	return c.ID
}

// blocked sends a start that the gate must block.
func (k *auditKit) blocked(t *testing.T, path string, body any) {
	t.Helper()
	k.Call(t, "POST", path, k.token, body).ExpectStart(t, "blocked")
}

// history records on tenant two connections, a readiness change and
// five blocked starts: eleven events with the tenant's own, nothing a worker
// would add to later (no start is accepted), so the history stays as the
// test leaves it.
func (k *auditKit) history(t *testing.T, tenant string) {
	t.Helper()
	ready := k.connection(t, tenant, "Graph", "granted", true)
	pending := k.connection(t, tenant, "Graph awaiting consent", "missing", false)
	for _, op := range []string{"check", "inventory-sync", "compliance-snapshot"} {
		k.blocked(t, "/api/v1/provider-connections/"+pending+"/"+op, nil)
	}
	k.blocked(t, "/api/v1/tenants/"+tenant+"/verify", map[string]any{"provider_connection_id": pending})
	k.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+ready, k.token, map[string]any{"consent": "revoked"}, nil)
	k.blocked(t, "/api/v1/tenants/"+tenant+"/directory/groups/sync", nil)
}

// grow adds an event (a connection) to tenant's history.
func (k *auditKit) grow(t *testing.T, tenant string) {
	t.Helper()
	k.connection(t, tenant, fmt.Sprintf("Later %d", time.Now().UnixNano()), "missing", false)
}

// chained waits until the audit chain links every stored event of tenant
// and returns the seq of its head: the size of its tree (more than the
// links counted once a link was deleted).
func (k *auditKit) chained(t *testing.T, tenant string) int64 {
	t.Helper()
	var stored, linked int64
	// Polled rather than waited on with k.Fed.Until: the feed tells Fed
	// before it commits the batch (eventstore.Feed's Observe runs in
	// BeforeAck), so the batch that links the last event is told while its
	// links are not visible yet, and Until would wait for its deadline.
	apptest.WaitFor(t, 30*time.Second, "the audit chain to link every event of tenant "+tenant, func() bool {
		err := k.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events WHERE tenant_id = $1),
			(SELECT count(*) FROM audit_chain WHERE chain = $1)`, tenant).Scan(&stored, &linked)
		if err != nil {
			t.Fatalf("count events: %v", err)
		}
		return stored == linked
	})
	var head int64
	if err := k.Pool.QueryRow(context.Background(), `SELECT coalesce(max(seq), 0) FROM audit_chain_heads WHERE chain = $1`, tenant).Scan(&head); err != nil {
		t.Fatal(err)
	}
	return head
}

// served answers tenant's latest checkpoint as GET
// /api/v1/audit/checkpoint serves it, opened with the deployment's key
// (nil before the first).
func (k *auditKit) served(t *testing.T, tenant string) ([]byte, audit.Checkpoint) {
	t.Helper()
	r := k.Call(t, "GET", "/api/v1/audit/checkpoint?tenant_id="+tenant, k.token, nil)
	if r.Status == 404 {
		return nil, audit.Checkpoint{}
	}
	r.ExpectStatus(t, 200)
	v, err := audit.NewVerifier(k.verifierKey)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := audit.OpenCheckpoint(r.Body, v)
	if err != nil {
		t.Fatalf("the served checkpoint of %s does not open: %v\n%s", tenant, err, r.Body)
	}
	return r.Body, cp
}

// signedAt waits until the served checkpoint of tenant is of size leaves.
func (k *auditKit) signedAt(t *testing.T, tenant string, size int64) ([]byte, audit.Checkpoint) {
	t.Helper()
	var note []byte
	var cp audit.Checkpoint
	apptest.WaitFor(t, 20*time.Second, fmt.Sprintf("a checkpoint of tenant %s at size %d", tenant, size), func() bool {
		note, cp = k.served(t, tenant)
		return note != nil && cp.Size >= size
	})
	if cp.Size != size || cp.Origin != "opsgate/"+tenant {
		t.Fatalf("checkpoint %+v, want origin opsgate/%s at size %d", cp, tenant, size)
	}
	return note, cp
}

// refused waits until the application's own signer logged that it
// refused to sign tenant's tree, and returns the lines saying so.
func (k *auditKit) refused(t *testing.T, tenant string) string {
	t.Helper()
	var lines string
	apptest.WaitFor(t, 20*time.Second, "the application's signer to refuse the tree of tenant "+tenant, func() bool {
		lines = ""
		for _, l := range strings.Split(k.Logs.With("audit checkpoint refused"), "\n") {
			if strings.Contains(l, tenant) {
				lines += l + "\n"
			}
		}
		return lines != ""
	})
	return lines
}

// cli runs the opsgate command line and returns its exit status and
// everything it wrote.
func cli(args ...string) (int, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

func (k *auditKit) watch(tenant, state string) (int, string) {
	return cli("audit", "watch", "--url", k.URL, "--token", k.token, "--tenant", tenant, "--key", k.verifierKey, "--state", state)
}

// verifyTenant runs `opsgate audit verify --tenant` against the database
// named by DATABASE_URL (the test sets it to the application's).
func verifyTenant(tenant string) (int, string) {
	return cli("audit", "verify", "--tenant", tenant)
}

// expect fails the test unless a command exited with code and said every
// phrase.
func expect(t *testing.T, what string, code int, out string, wantCode int, phrases ...string) {
	t.Helper()
	t.Logf("%s: exit %d\n%s", what, code, out)
	if code != wantCode {
		t.Errorf("%s: exit %d, want %d; output:\n%s", what, code, wantCode, out)
		return
	}
	for _, p := range phrases {
		if !strings.Contains(out, p) {
			t.Errorf("%s: the output does not say %q:\n%s", what, p, out)
		}
	}
}

// link is one event of a chain as the database holds it.
type link struct {
	seq, position int64
	hash          []byte
}

func (k *auditKit) links(t *testing.T, tenant string) []link {
	t.Helper()
	rows, err := k.Pool.Query(context.Background(), `SELECT seq, position, hash FROM audit_chain WHERE chain = $1 ORDER BY seq`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	var out []link
	var l link
	if _, err := pgx.ForEachRow(rows, []any{&l.seq, &l.position, &l.hash}, func() error {
		out = append(out, link{l.seq, l.position, append([]byte(nil), l.hash...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// asSuperuser runs statements in one transaction in which the append-only
// triggers do not fire, as the database's superuser could: with
// session_replication_role = replica rather than ALTER TABLE ... DISABLE
// TRIGGER, so that the running application's own writes stay guarded
// throughout and no table lock races its chainer and signer.
func asSuperuser(t *testing.T, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, fn func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if err := fn(ctx, tx); err != nil {
		t.Fatalf("superuser change: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("superuser change: %v", err)
	}
}

func execAll(ctx context.Context, tx pgx.Tx, statements ...string) error {
	for _, s := range statements {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// rechain rewrites tenant's whole history as someone who can write the
// database and has read the README could: every link's seq (numbered
// again from 1, in chain order), prev_hash and hash recomputed from the
// events as they are now, the tree recomputed from those hashes, the head
// moved, and (clear) the tenant's signed checkpoints removed. What is left
// verifies: only a checkpoint kept outside tells. It returns the new
// tree's size and root.
func (k *auditKit) rechain(t *testing.T, tenant string, clear bool) (int64, tlog.Hash) {
	t.Helper()
	ctx := context.Background()
	var positions, seqs []int64
	var prevs, hashes, trees [][]byte
	b := audit.NewBuilder()
	prev := audit.ZeroHash
	for l, err := range audit.NewHistory(k.Store).Lines(ctx, tenant, 0) {
		if err != nil {
			t.Fatal(err)
		}
		l.Seq, l.PrevHash, l.Hash = int64(len(seqs)+1), prev, ""
		sum, err := l.Sum()
		if err != nil {
			t.Fatal(err)
		}
		hash, _ := hex.DecodeString(sum)
		stored, err := b.Add(audit.LeafHash(hash))
		if err != nil {
			t.Fatal(err)
		}
		var tree []byte
		for _, h := range stored {
			tree = append(tree, h[:]...)
		}
		p, _ := hex.DecodeString(prev)
		positions, seqs = append(positions, l.Position), append(seqs, l.Seq)
		prevs, hashes, trees = append(prevs, p), append(hashes, hash), append(trees, tree)
		prev = sum
	}
	n := len(seqs)
	if n == 0 {
		t.Fatalf("tenant %s has no chain to rewrite", tenant)
	}
	asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
		// Out of the way first: (chain, seq) is unique.
		if _, err := tx.Exec(ctx, `UPDATE audit_chain SET seq = seq + 1000000 WHERE chain = $1`, tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_chain c SET seq = r.seq, prev_hash = r.prev, hash = r.hash, tree_hashes = r.tree
			FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[]) AS r(position, seq, prev, hash, tree)
			WHERE c.position = r.position`, positions, seqs, prevs, hashes, trees); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_chain_heads SET seq = $2, position = $3, hash = $4 WHERE chain = $1`,
			tenant, seqs[n-1], positions[n-1], hashes[n-1]); err != nil {
			return err
		}
		if clear {
			_, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE chain = $1`, tenant)
			return err
		}
		return nil
	})
	return int64(n), b.Root()
}

// testKey is the application's own signing key (apptest.TestKey derives
// it from the database), as a second signer process would read it.
func testKey(t *testing.T, databaseURL string) *audit.Key {
	t.Helper()
	key, err := audit.ReadKey(apptest.TestKey(t, t.TempDir(), databaseURL))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// latest is tenant's latest checkpoint in the database, opened with key
// (ok false when there is none).
func latest(t *testing.T, a *apptest.App, key *audit.Key, tenant string) (note []byte, cp audit.Checkpoint, ok bool) {
	t.Helper()
	s, err := audit.NewHistory(a.Store).LatestCheckpoint(context.Background(), tenant)
	if errors.Is(err, audit.ErrNoCheckpoint) {
		return nil, audit.Checkpoint{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	cp, err = audit.OpenCheckpoint(s.Note, key.Verifier)
	if err != nil {
		t.Fatalf("the latest checkpoint of %s does not open: %v\n%s", tenant, err, s.Note)
	}
	return s.Note, cp, true
}

// signWithoutState signs tenant's tree as the rewritten database stands,
// with a second signer that has the deployment's key but none of the
// application signer's local state (a fresh StateDir): what an attacker
// with the database and the key file gets. It waits until the checkpoint
// of size and root is the tenant's latest (the application's signer holds
// the signing lock a moment every second).
func signWithoutState(t *testing.T, k *auditKit, tenant string, size int64, root tlog.Hash) []byte {
	t.Helper()
	key := testKey(t, k.DatabaseURL)
	signer := audit.NewCheckpointSigner(k.Pool, audit.SignerConfig{Key: key, StateDir: t.TempDir()}, slog.New(slog.NewTextHandler(&apptest.Logs{}, nil)))
	var note []byte
	apptest.WaitFor(t, 20*time.Second, "a signer without state to sign the rewritten tree of "+tenant, func() bool {
		if _, err := signer.Pass(context.Background()); err != nil {
			t.Fatalf("pass: %v", err)
		}
		var cp audit.Checkpoint
		var ok bool
		note, cp, ok = latest(t, k.App, key, tenant)
		return ok && cp.Size == size && cp.Root == root
	})
	return note
}

// expectInconsistent checks watch's exit 3 and that it printed both the
// kept checkpoint and the one served now.
func expectInconsistent(t *testing.T, what string, code int, out, tenant string, kept, served []byte, why string) {
	t.Helper()
	expect(t, what, code, out, 3, "INCONSISTENT opsgate/"+tenant, why,
		"the checkpoint kept in", "the checkpoint served now:", string(kept), string(served))
	if bytes.Equal(kept, served) {
		t.Errorf("%s: the kept and the served checkpoints are the same note", what)
	}
}

// TestWatchCatchesEveryTamper tampers with five tenants' histories as the
// database's superuser could (alter an event, delete one, swap two,
// truncate, rewrite everything with a recomputed chain and tree), and
// checks what `opsgate audit verify --tenant` and `opsgate audit watch`
// (with the checkpoint kept before the tamper) say about each.
func TestWatchCatchesEveryTamper(t *testing.T) {
	a := apptest.Start(t)
	// `audit verify --tenant` reads DATABASE_URL, as the command does.
	t.Setenv("DATABASE_URL", a.DatabaseURL)
	k := newAuditKit(t, a)
	if k.verifierKey == "" {
		t.Fatal("the application serves no verifier key")
	}

	names := []string{"main", "altered", "deleted", "swapped", "truncated", "rewritten"}
	tenants, states, sizes, kept := map[string]string{}, map[string]string{}, map[string]int64{}, map[string][]byte{}
	for _, name := range names {
		tenants[name] = k.tenant(t, name)
		k.history(t, tenants[name])
	}
	for _, name := range names {
		id := tenants[name]
		sizes[name] = k.chained(t, id)
		if sizes[name] < 10 {
			t.Fatalf("tenant %s has a history of %d events, want at least 10", name, sizes[name])
		}
		kept[name], _ = k.signedAt(t, id, sizes[name])
		states[name] = t.TempDir()
		code, out := k.watch(id, states[name])
		expect(t, "the first watch of "+name, code, out, 0, fmt.Sprintf("kept the first checkpoint of opsgate/%s: %d events", id, sizes[name]))
		if got, err := os.ReadFile(filepath.Join(states[name], id+".checkpoint")); err != nil || !bytes.Equal(got, kept[name]) {
			t.Fatalf("the watch of %s kept %q (%v), want the served checkpoint %q", name, got, err, kept[name])
		}
		code, out = verifyTenant(id)
		expect(t, "verify "+name+" before any change", code, out, 0, fmt.Sprintf("verified tenant %s: %d event(s), seq 1 to %d", id, sizes[name], sizes[name]))
	}

	t.Run("untouched", func(t *testing.T) {
		id := tenants["main"]
		code, out := k.watch(id, states["main"])
		expect(t, "watch again", code, out, 0, fmt.Sprintf("unchanged: opsgate/%s still has %d events", id, sizes["main"]))
		k.grow(t, id)
		k.grow(t, id)
		n := k.chained(t, id)
		grown, _ := k.signedAt(t, id, n)
		code, out = k.watch(id, states["main"])
		expect(t, "watch a grown history", code, out, 0, fmt.Sprintf("consistent: opsgate/%s grew from %d to %d events; kept the new checkpoint", id, sizes["main"], n))
		if got, _ := os.ReadFile(filepath.Join(states["main"], id+".checkpoint")); !bytes.Equal(got, grown) {
			t.Errorf("the watch kept %q, want the new checkpoint %q", got, grown)
		}
		code, out = verifyTenant(id)
		expect(t, "verify the grown history", code, out, 0, fmt.Sprintf("verified tenant %s: %d event(s)", id, n))
	})

	// coverUp is the attacker's next step after a tamper verify names:
	// the chain and the tree recomputed over the tampered history, the
	// checkpoints removed, and the rewritten tree signed by a signer
	// without the application signer's state (which refuses it). verify
	// alone no longer sees anything; watch does.
	coverUp := func(t *testing.T, name, why string) {
		t.Helper()
		id := tenants[name]
		keptNote, err := os.ReadFile(filepath.Join(states[name], id+".checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		size, root := k.rechain(t, id, true)
		code, out := verifyTenant(id)
		expect(t, "verify after the cover-up", code, out, 0, fmt.Sprintf("verified tenant %s: %d event(s)", id, size))
		refusal := k.refused(t, id)
		if !strings.Contains(refusal, "kept in") {
			t.Errorf("the application's signer refused for another reason than its kept checkpoint:\n%s", refusal)
		}
		served := signWithoutState(t, k, id, size, root)
		code, out = k.watch(id, states[name])
		expectInconsistent(t, "watch after the cover-up", code, out, id, keptNote, served, why)
		if got, _ := os.ReadFile(filepath.Join(states[name], id+".checkpoint")); !bytes.Equal(got, keptNote) {
			t.Errorf("an inconsistent watch replaced the kept checkpoint with %q", got)
		}
	}

	// proofOf runs verify-proof on the proof of seq the application serves.
	proofOf := func(t *testing.T, id string, seq int64) (int, string, []byte) {
		t.Helper()
		r := k.Call(t, "GET", fmt.Sprintf("/api/v1/audit/proof?tenant_id=%s&seq=%d", id, seq), k.token, nil)
		r.ExpectStatus(t, 200)
		file := filepath.Join(t.TempDir(), "proof.json")
		if err := os.WriteFile(file, r.Body, 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := cli("audit", "verify-proof", "--key", k.verifierKey, "--proof", file)
		return code, out, r.Body
	}

	// watchSeesEvents checks that watch, whose checkpoints are still
	// consistent (the tamper left every stored hash alone), finds the
	// events served are not the ones the checkpoint signed, and prints
	// both checkpoints.
	watchSeesEvents := func(t *testing.T, name, why string) {
		t.Helper()
		id := tenants[name]
		code, out := k.watch(id, states[name])
		expect(t, "watch after a tamper that left the tree alone", code, out, 3,
			"INCONSISTENT opsgate/"+id+": the events served are not the history signed", why,
			"the checkpoint kept in", "the checkpoint served now")
	}

	t.Run("an event altered", func(t *testing.T) {
		id := tenants["altered"]
		l := k.links(t, id)[2]
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE events SET payload = (payload::jsonb || '{"forged": true}')::json WHERE position = $1`, l.position)
			return err
		})
		code, out := verifyTenant(id)
		expect(t, "verify after altering seq 3", code, out, 1,
			fmt.Sprintf("FAILED tenant %s: event at position %d (seq 3): its content does not match its hash", id, l.position),
			"2 event(s) before it verified")
		watchSeesEvents(t, "altered", "its content does not match its hash")
		code, out, _ = proofOf(t, id, 3)
		expect(t, "verify-proof of the altered event", code, out, 1, "FAILED", "the event does not hash to its hash", "it was changed")
		coverUp(t, "altered", "different roots")
	})

	t.Run("an event deleted", func(t *testing.T) {
		id := tenants["deleted"]
		links := k.links(t, id)
		gone, next := links[1], links[2]
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			return execAll(ctx, tx, fmt.Sprintf(`DELETE FROM audit_chain WHERE position = %d`, gone.position),
				fmt.Sprintf(`DELETE FROM events WHERE position = %d`, gone.position))
		})
		code, out := verifyTenant(id)
		expect(t, "verify after deleting seq 2", code, out, 1,
			fmt.Sprintf("FAILED tenant %s: event at position %d (seq 3): seq jumps from 1 to 3: 1 event(s) after position %d are missing", id, next.position, links[0].position))
		watchSeesEvents(t, "deleted", "seq jumps from 1 to 3")
		// The proof of the deleted seq is not served.
		k.Call(t, "GET", fmt.Sprintf("/api/v1/audit/proof?tenant_id=%s&seq=2", id), k.token, nil).ExpectProblem(t, 404, "not_in_tree")
		coverUp(t, "deleted", "fewer than the")
	})

	t.Run("two events swapped", func(t *testing.T) {
		id := tenants["swapped"]
		var first, second int64
		err := k.Pool.QueryRow(context.Background(), `WITH kind AS (SELECT event_type FROM events WHERE tenant_id = $1
				GROUP BY event_type HAVING count(*) >= 2 ORDER BY count(*) DESC, event_type LIMIT 1)
			SELECT min(position), max(position) FROM events WHERE tenant_id = $1 AND event_type = (SELECT event_type FROM kind)`, id).Scan(&first, &second)
		if err != nil {
			t.Fatal(err)
		}
		var seq int64
		for _, l := range k.links(t, id) {
			if l.position == first {
				seq = l.seq
			}
		}
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE events e SET payload = o.payload, metadata = o.metadata FROM events o
				WHERE (e.position, o.position) IN (($1, $2), ($2, $1))`, first, second)
			return err
		})
		code, out := verifyTenant(id)
		expect(t, "verify after swapping two events", code, out, 1,
			fmt.Sprintf("FAILED tenant %s: event at position %d (seq %d): its content does not match its hash", id, first, seq))
		watchSeesEvents(t, "swapped", "its content does not match its hash")
		code, out, _ = proofOf(t, id, seq)
		expect(t, "verify-proof of a swapped event", code, out, 1, "FAILED", "the event does not hash to its hash")
		coverUp(t, "swapped", "different roots")
	})

	t.Run("the end truncated", func(t *testing.T) {
		id := tenants["truncated"]
		links := k.links(t, id)
		n := int64(len(links))
		const cut = 3
		last := links[n-cut-1]
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			for _, l := range links[n-cut:] {
				if err := execAll(ctx, tx, fmt.Sprintf(`DELETE FROM audit_chain WHERE position = %d`, l.position),
					fmt.Sprintf(`DELETE FROM events WHERE position = %d`, l.position)); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `UPDATE audit_chain_heads SET seq = $2, position = $3, hash = $4 WHERE chain = $1`, id, last.seq, last.position, last.hash)
			return err
		})
		// The database still holds the checkpoint signed over the n events
		// (and the kept one says n): the chain now ends before it.
		code, out := verifyTenant(id)
		expect(t, "verify after truncating the end", code, out, 1, "FAILED tenant "+id,
			fmt.Sprintf("the chain ends at seq %d, before the checkpoint's tree size %d", n-cut, n))

		// Nothing newer is served yet: the checkpoint of n events stays,
		// and the events served end before it.
		code, out = k.watch(id, states["truncated"])
		expect(t, "watch right after the truncation", code, out, 3, "the events served are not the history signed",
			fmt.Sprintf("the chain ends at seq %d, before the checkpoint's tree size %d", n-cut, n))

		// The truncated history grows past where it was: neither the
		// application's signer nor a signer without state signs it while
		// the database holds the checkpoint of n events.
		for k.chained(t, id) <= n {
			k.grow(t, id)
		}
		size := k.chained(t, id)
		if refusal := k.refused(t, id); !strings.Contains(refusal, "does not extend the last checkpoint") {
			t.Errorf("the application's signer refused for another reason:\n%s", refusal)
		}
		var refusedWithoutState atomic.Int64
		key := testKey(t, k.DatabaseURL)
		stateless := audit.NewCheckpointSigner(k.Pool, audit.SignerConfig{Key: key, StateDir: t.TempDir(),
			OnRefused: func() { refusedWithoutState.Add(1) }}, slog.New(slog.NewTextHandler(&apptest.Logs{}, nil)))
		apptest.WaitFor(t, 20*time.Second, "a signer without state to meet the truncated tree", func() bool {
			if _, err := stateless.Pass(context.Background()); err != nil {
				t.Fatalf("pass: %v", err)
			}
			return refusedWithoutState.Load() > 0
		})
		if _, cp, _ := latest(t, k.App, key, id); cp.Size != n {
			t.Fatalf("after the truncation the latest checkpoint is of size %d, want still %d", cp.Size, n)
		}

		// With the checkpoints removed too, a signer without state signs
		// the grown, truncated tree; watch proves it does not extend the
		// kept one.
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE chain = $1`, id)
			return err
		})
		b := audit.NewBuilder()
		for _, l := range k.links(t, id) {
			if _, err := b.Add(audit.LeafHash(l.hash)); err != nil {
				t.Fatal(err)
			}
		}
		if b.Size() != size {
			t.Fatalf("the truncated chain has %d links, want %d", b.Size(), size)
		}
		served := signWithoutState(t, k, id, size, b.Root())
		code, out = k.watch(id, states["truncated"])
		expectInconsistent(t, "watch after the truncation", code, out, id, kept["truncated"], served,
			fmt.Sprintf("the tree of %d leaves does not extend the tree of %d leaves", size, n))
	})

	t.Run("the whole history rewritten", func(t *testing.T) {
		id := tenants["rewritten"]
		l := k.links(t, id)[1]
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE events SET payload = (payload::jsonb || '{"forged": true}')::json WHERE position = $1`, l.position)
			return err
		})
		size, root := k.rechain(t, id, true)
		if size != sizes["rewritten"] {
			t.Fatalf("the rewritten chain has %d links, want %d", size, sizes["rewritten"])
		}
		// A consistent rewrite is invisible to verify alone.
		code, out := verifyTenant(id)
		expect(t, "verify after a whole rewrite", code, out, 0, fmt.Sprintf("verified tenant %s: %d event(s), seq 1 to %d", id, size, size))
		if refusal := k.refused(t, id); !strings.Contains(refusal, "both trees have") {
			t.Errorf("the application's signer refused for another reason:\n%s", refusal)
		}
		served := signWithoutState(t, k, id, size, root)
		code, out = k.watch(id, states["rewritten"])
		expectInconsistent(t, "watch after a whole rewrite", code, out, id, kept["rewritten"], served,
			fmt.Sprintf("both trees have %d leaves but different roots", size))
		// The kept checkpoint stays the evidence: watch says so again.
		code, out = k.watch(id, states["rewritten"])
		expectInconsistent(t, "watch after a whole rewrite, again", code, out, id, kept["rewritten"], served, "different roots")
	})
}

// noKeyApp starts an application that signs no checkpoint itself, so that
// the test's signers are the only ones.
func noKeyApp(t *testing.T) *auditKit {
	t.Helper()
	a := apptest.Start(t, apptest.Configure(func(c *config.Config) { c.AuditSigningKeyFile = "" }))
	return newAuditKit(t, a)
}

// signerOf returns a signer with the deployment's key and its own state
// directory, counting what it signs and refuses, logging into logs.
func signerOf(k *auditKit, key *audit.Key, state string, signed, refused *atomic.Int64, logs *apptest.Logs) *audit.CheckpointSigner {
	return audit.NewCheckpointSigner(k.Pool, audit.SignerConfig{Key: key, StateDir: state,
		OnSigned: func() { signed.Add(1) }, OnRefused: func() { refused.Add(1) }}, slog.New(slog.NewTextHandler(logs, nil)))
}

// consistentChain checks that every checkpoint of tenant in the database
// opens, is of a distinct size, and extends the one before it (a
// consistency proof of the tree as it is now).
func consistentChain(t *testing.T, k *auditKit, key *audit.Key, tenant string) []audit.Checkpoint {
	t.Helper()
	ctx := context.Background()
	rows, err := k.Pool.Query(ctx, `SELECT size, note FROM audit_checkpoints WHERE chain = $1 ORDER BY size`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	var cps []audit.Checkpoint
	var size int64
	var note string
	if _, err := pgx.ForEachRow(rows, []any{&size, &note}, func() error {
		cp, err := audit.OpenCheckpoint([]byte(note), key.Verifier)
		if err != nil {
			return fmt.Errorf("the checkpoint at size %d does not open: %w", size, err)
		}
		if cp.Size != size || cp.Origin != "opsgate/"+tenant {
			return fmt.Errorf("the row of size %d holds the checkpoint %+v", size, cp)
		}
		cps = append(cps, cp)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	history := audit.NewHistory(k.Store)
	for i := 1; i < len(cps); i++ {
		proof, err := history.ProveConsistency(ctx, tenant, cps[i-1].Size, cps[i].Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.CheckConsistency(cps[i-1], cps[i], proof.Hashes); err != nil {
			t.Errorf("checkpoint %d does not extend checkpoint %d: %v", cps[i].Size, cps[i-1].Size, err)
		}
	}
	return cps
}

// noTempFiles checks that a signer's state directory holds nothing but
// its kept checkpoints: no file half-written is left behind.
func noTempFiles(t *testing.T, key *audit.Key, state string, tenants ...string) {
	t.Helper()
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range tenants {
		want[id] = true
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("the state directory holds %s, not a kept checkpoint", e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(state, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.OpenCheckpoint(b, key.Verifier); err != nil {
			t.Errorf("the kept checkpoint of %s does not open: %v\n%s", e.Name(), err, b)
		}
	}
}

// TestSignerRefusesInconsistentTree drives audit.CheckpointSigner
// directly against a real application's database: a signer that kept the
// last checkpoint refuses a consistently rewritten tree, one whose kept
// file is ahead of the database (killed between keeping and inserting)
// continues, and concurrent passes sign each tree once.
func TestSignerRefusesInconsistentTree(t *testing.T) {
	t.Run("a rewritten tree", func(t *testing.T) {
		k := noKeyApp(t)
		key := testKey(t, k.DatabaseURL)
		id := k.tenant(t, "rewritten")
		k.history(t, id)
		n := k.chained(t, id)
		state := t.TempDir()
		var signed, refused atomic.Int64
		logs := &apptest.Logs{}
		s := signerOf(k, key, state, &signed, &refused, logs)
		if got, err := s.Pass(context.Background()); err != nil || got != 1 {
			t.Fatalf("the first pass signed %d, %v; want 1", got, err)
		}
		oldNote, old, ok := latest(t, k.App, key, id)
		if !ok || old.Size != n {
			t.Fatalf("after the first pass the latest checkpoint is %+v, want size %d", old, n)
		}
		if kept, _ := os.ReadFile(filepath.Join(state, id)); !bytes.Equal(kept, oldNote) {
			t.Fatalf("the signer kept %q, the database holds %q", kept, oldNote)
		}

		// Rewritten consistently (chain and tree recomputed), then grown:
		// the tree no longer extends what was signed.
		l := k.links(t, id)[3]
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE events SET payload = (payload::jsonb || '{"forged": true}')::json WHERE position = $1`, l.position)
			return err
		})
		k.rechain(t, id, false)
		k.grow(t, id)
		grown := k.chained(t, id)
		signed.Store(0)
		if got, err := s.Pass(context.Background()); err != nil || got != 0 || signed.Load() != 0 {
			t.Fatalf("a pass over the rewritten tree signed %d (%d counted), %v; want none", got, signed.Load(), err)
		}
		if refused.Load() != 1 {
			t.Fatalf("OnRefused was called %d times, want 1", refused.Load())
		}
		if !strings.Contains(logs.String(), "audit checkpoint refused") || !strings.Contains(logs.String(), id) {
			t.Errorf("the refusal was not logged with the tenant:\n%s", logs.String())
		}
		if note, _, _ := latest(t, k.App, key, id); !bytes.Equal(note, oldNote) {
			t.Fatalf("the latest checkpoint became %q, want still the old one %q", note, oldNote)
		}

		// The database's checkpoints removed too: the kept file alone
		// still refuses it, pass after pass.
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE chain = $1`, id)
			return err
		})
		for range 2 {
			if got, err := s.Pass(context.Background()); err != nil || got != 0 {
				t.Fatalf("a pass over the rewritten tree without checkpoints signed %d, %v; want none", got, err)
			}
		}
		if refused.Load() != 3 {
			t.Errorf("OnRefused was called %d times, want 3", refused.Load())
		}
		if _, _, ok := latest(t, k.App, key, id); ok {
			t.Fatal("a checkpoint of the rewritten tree was signed by the signer that kept the old one")
		}
		if !strings.Contains(logs.String(), "kept in "+state) {
			t.Errorf("the refusal does not say the kept checkpoint caught it:\n%s", logs.String())
		}
		if kept, _ := os.ReadFile(filepath.Join(state, id)); !bytes.Equal(kept, oldNote) {
			t.Errorf("a refusal changed the kept checkpoint to %q", kept)
		}
		// Whereas a signer without that state signs it: which is why the
		// state is kept outside the database, and why auditors watch.
		var otherSigned, otherRefused atomic.Int64
		other := signerOf(k, key, t.TempDir(), &otherSigned, &otherRefused, &apptest.Logs{})
		if got, err := other.Pass(context.Background()); err != nil || got != 1 {
			t.Fatalf("a signer without state signed %d, %v; want 1", got, err)
		}
		if _, cp, _ := latest(t, k.App, key, id); cp.Size != grown {
			t.Fatalf("the signer without state signed %+v, want size %d", cp, grown)
		}
		noTempFiles(t, key, state, id)
	})

	t.Run("killed after keeping, before inserting", func(t *testing.T) {
		k := noKeyApp(t)
		key := testKey(t, k.DatabaseURL)
		id := k.tenant(t, "continued")
		k.history(t, id)
		first := k.chained(t, id)
		state := t.TempDir()
		var signed, refused atomic.Int64
		s := signerOf(k, key, state, &signed, &refused, &apptest.Logs{})
		if got, err := s.Pass(context.Background()); err != nil || got != 1 {
			t.Fatalf("the first pass signed %d, %v", got, err)
		}
		k.grow(t, id)
		second := k.chained(t, id)
		if got, err := s.Pass(context.Background()); err != nil || got != 1 {
			t.Fatalf("the second pass signed %d, %v", got, err)
		}
		secondNote, _, _ := latest(t, k.App, key, id)
		// The kill: the kept file says second, the insert never committed.
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE chain = $1 AND size = $2`, id, second)
			return err
		})
		if _, cp, _ := latest(t, k.App, key, id); cp.Size != first {
			t.Fatalf("after the kill the latest checkpoint is of size %d, want %d", cp.Size, first)
		}
		if kept, _ := os.ReadFile(filepath.Join(state, id)); !bytes.Equal(kept, secondNote) {
			t.Fatalf("the kept file is %q, want the checkpoint of size %d", kept, second)
		}
		// The same signer (restarted, same state) continues: it signs the
		// tree again, consistent with the database's and its own.
		s = signerOf(k, key, state, &signed, &refused, &apptest.Logs{})
		if got, err := s.Pass(context.Background()); err != nil || got != 1 || refused.Load() != 0 {
			t.Fatalf("the pass after the kill signed %d (%d refused), %v; want 1", got, refused.Load(), err)
		}
		if note, cp, _ := latest(t, k.App, key, id); cp.Size != second || !bytes.Equal(note, secondNote) {
			t.Fatalf("after the kill the signer signed %+v:\n%s\nwant again\n%s", cp, note, secondNote)
		}
		k.grow(t, id)
		third := k.chained(t, id)
		if got, err := s.Pass(context.Background()); err != nil || got != 1 || refused.Load() != 0 {
			t.Fatalf("the next pass signed %d (%d refused), %v; want 1", got, refused.Load(), err)
		}
		cps := consistentChain(t, k, key, id)
		if len(cps) != 3 || cps[0].Size != first || cps[1].Size != second || cps[2].Size != third {
			t.Fatalf("checkpoints %+v, want sizes %d, %d, %d", cps, first, second, third)
		}
		// Ahead without a later tree: the kept file ahead of the database
		// and the tree not grown since, once more with a fresh insert lost.
		asSuperuser(t, k.Pool, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM audit_checkpoints WHERE chain = $1 AND size = $2`, id, third)
			return err
		})
		if got, err := s.Pass(context.Background()); err != nil || got != 1 || refused.Load() != 0 {
			t.Fatalf("the pass after the second kill signed %d (%d refused), %v; want 1", got, refused.Load(), err)
		}
		if _, cp, _ := latest(t, k.App, key, id); cp.Size != third {
			t.Fatalf("after the second kill the latest is %+v, want size %d", cp, third)
		}
		noTempFiles(t, key, state, id)
	})

	t.Run("concurrent passes", func(t *testing.T) {
		k := noKeyApp(t)
		key := testKey(t, k.DatabaseURL)
		ids := []string{k.tenant(t, "first"), k.tenant(t, "second")}
		for _, id := range ids {
			k.history(t, id)
			k.chained(t, id)
		}
		states := []string{t.TempDir(), t.TempDir()}
		var signed, refused atomic.Int64
		signers := []*audit.CheckpointSigner{
			signerOf(k, key, states[0], &signed, &refused, &apptest.Logs{}),
			signerOf(k, key, states[1], &signed, &refused, &apptest.Logs{}),
		}
		const rounds, goroutines = 4, 16
		for round := range rounds {
			if round > 0 {
				// One tenant grows per round, the other every second round.
				k.grow(t, ids[0])
				if round%2 == 0 {
					k.grow(t, ids[1])
				}
			}
			for _, id := range ids {
				k.chained(t, id)
			}
			want := int64(2)
			if round > 0 && round%2 == 1 {
				want = 1
			}
			signed.Store(0)
			var wg sync.WaitGroup
			var total atomic.Int64
			var mu sync.Mutex
			var errs []error
			start := make(chan struct{})
			for g := range goroutines {
				wg.Go(func() {
					<-start
					n, err := signers[g%2].Pass(context.Background())
					total.Add(int64(n))
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("round %d: concurrent passes failed: %v", round, errs)
			}
			if total.Load() != want || signed.Load() != want {
				t.Fatalf("round %d: concurrent passes signed %d (%d counted), want %d: each grown tree once", round, total.Load(), signed.Load(), want)
			}
			if refused.Load() != 0 {
				t.Fatalf("round %d: %d refusals of a tree that only grew", round, refused.Load())
			}
		}
		for _, id := range ids {
			var rows, sizes int
			if err := k.Pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT size) FROM audit_checkpoints WHERE chain = $1`, id).Scan(&rows, &sizes); err != nil {
				t.Fatal(err)
			}
			if rows != sizes {
				t.Errorf("tenant %s has %d checkpoint rows for %d sizes", id, rows, sizes)
			}
			cps := consistentChain(t, k, key, id)
			if _, cp, _ := latest(t, k.App, key, id); len(cps) == 0 || cp.Size != k.chained(t, id) {
				t.Errorf("tenant %s: latest checkpoint %+v, want the whole tree signed", id, cp)
			}
		}
		for _, state := range states {
			entries, err := os.ReadDir(state)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			for _, name := range names {
				if name != ids[0] && name != ids[1] {
					t.Errorf("state directory %s holds %s", state, name)
				}
			}
			noTempFiles(t, key, state, ids...)
		}
	})
}

// TestAuditCommandsOffline runs the auditor's offline commands on what a
// real application serves: keygen, verify-proof, and verify --file with a
// checkpoint.
func TestAuditCommandsOffline(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, content []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// keygen writes a pair, the secret half private, and never overwrites.
	code, out := cli("audit", "keygen", "--dir", dir, "other")
	expect(t, "keygen", code, out, 0, filepath.Join(dir, "other.key"), filepath.Join(dir, "other.pub"))
	private, public := filepath.Join(dir, "other.key"), filepath.Join(dir, "other.pub")
	info, err := os.Stat(private)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", private, info.Mode().Perm())
	}
	skey, _ := os.ReadFile(private)
	vkey, _ := os.ReadFile(public)
	otherKey, err := audit.ParseKey(string(skey))
	if err != nil {
		t.Fatalf("the written signer key does not parse: %v", err)
	}
	if otherKey.VerifierKey != strings.TrimSpace(string(vkey)) || !strings.HasPrefix(otherKey.VerifierKey, "other+") {
		t.Errorf("other.pub holds %q, the signer key's verifier key is %q", vkey, otherKey.VerifierKey)
	}
	if !strings.Contains(out, otherKey.VerifierKey) {
		t.Errorf("keygen did not print the verifier key:\n%s", out)
	}
	code, out = cli("audit", "keygen", "--dir", dir, "other")
	expect(t, "keygen over an existing pair", code, out, 2, "exists")
	if again, _ := os.ReadFile(private); !bytes.Equal(again, skey) {
		t.Error("keygen overwrote the existing signer key")
	}
	if again, _ := os.ReadFile(public); !bytes.Equal(again, vkey) {
		t.Error("keygen overwrote the existing verifier key")
	}
	code, out = cli("audit", "keygen", "--dir", dir, "bad+name")
	expect(t, "keygen of a name with +", code, out, 2, "not a key name")

	a := apptest.Start(t)
	k := newAuditKit(t, a)
	keyFile := write("deployment.pub", []byte(k.verifierKey+"\n"))
	tenant, other := k.tenant(t, "Fabrikam"), k.tenant(t, "Northwind")
	k.history(t, tenant)
	k.history(t, other)
	k.grow(t, other)
	size, otherSize := k.chained(t, tenant), k.chained(t, other)
	checkpoint, _ := k.signedAt(t, tenant, size)
	otherCheckpoint, _ := k.signedAt(t, other, otherSize)

	// verify-proof: a proof as served checks with the key as text and as
	// a file.
	r := k.Call(t, "GET", "/api/v1/audit/proof?tenant_id="+tenant+"&seq=3", k.token, nil)
	r.ExpectStatus(t, 200)
	proof := write("proof.json", r.Body)
	for _, key := range []string{k.verifierKey, keyFile} {
		code, out = cli("audit", "verify-proof", "--key", key, "--proof", proof)
		expect(t, "verify-proof with --key "+key, code, out, 0,
			fmt.Sprintf("verified: the event of seq 3 (position %d) is leaf 2 of the tree of %d events of opsgate/%s", k.links(t, tenant)[2].position, size, tenant))
	}
	// The event changed after it was served.
	var p map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	var event map[string]any
	if err := json.Unmarshal(p["event"], &event); err != nil {
		t.Fatal(err)
	}
	event["metadata"].(map[string]any)["actor"] = "someone else"
	p["event"], _ = json.Marshal(event)
	tampered, _ := json.Marshal(p)
	code, out = cli("audit", "verify-proof", "--key", k.verifierKey, "--proof", write("tampered.json", tampered))
	expect(t, "verify-proof of a changed event", code, out, 1, "FAILED", "the event does not hash to its hash", "it was changed")
	// Checked with another key: the checkpoint is not signed by it.
	code, out = cli("audit", "verify-proof", "--key", public, "--proof", proof)
	expect(t, "verify-proof with another key", code, out, 1, "FAILED", "not signed by the verifier key other")
	code, out = cli("audit", "verify-proof", "--key", otherKey.VerifierKey, "--proof", proof)
	expect(t, "verify-proof with another key as text", code, out, 1, "FAILED", "not signed by the verifier key other")
	// A file that cannot be read, one that is not JSON, a key that is none.
	code, out = cli("audit", "verify-proof", "--key", k.verifierKey, "--proof", filepath.Join(dir, "missing.json"))
	expect(t, "verify-proof of a missing file", code, out, 2, "no such file")
	code, out = cli("audit", "verify-proof", "--key", k.verifierKey, "--proof", dir)
	expect(t, "verify-proof of a directory", code, out, 2, "is a directory")
	code, out = cli("audit", "verify-proof", "--key", k.verifierKey, "--proof", write("notjson.json", []byte("seq,hash\n3,abc\n")))
	expect(t, "verify-proof of a file that is not JSON", code, out, 1, "FAILED", "not a proof")
	code, out = cli("audit", "verify-proof", "--key", filepath.Join(dir, "nokey.pub"), "--proof", proof)
	expect(t, "verify-proof with a key file that does not exist", code, out, 2, "--key")

	// verify --file --checkpoint: the export ends in the checkpoint's root.
	export := write("export.ndjson", k.Call(t, "GET", "/api/v1/audit/export?tenant_id="+tenant, k.token, nil).Body)
	cpFile := write("checkpoint.txt", checkpoint)
	for _, key := range []string{k.verifierKey, keyFile} {
		code, out = cli("audit", "verify", "--file", export, "--checkpoint", cpFile, "--key", key)
		expect(t, "verify an export against its checkpoint with --key "+key, code, out, 0,
			fmt.Sprintf("verified %s: %d event(s)", export, size),
			fmt.Sprintf("the checkpoint holds: the first %d events are the tree of opsgate/%s", size, tenant))
	}
	code, out = cli("audit", "verify", "--file", export, "--checkpoint", write("other-checkpoint.txt", otherCheckpoint), "--key", k.verifierKey)
	t.Logf("verify an export against another tenant's checkpoint: exit %d\n%s", code, out)
	expect(t, "verify an export against another tenant's checkpoint", code, out, 1, "FAILED "+export)
	code, out = cli("audit", "verify", "--file", export, "--checkpoint", cpFile, "--key", public)
	expect(t, "verify an export against a checkpoint with another key", code, out, 1, "FAILED", "not signed by the verifier key other")
	code, out = cli("audit", "verify", "--file", export, "--checkpoint", filepath.Join(dir, "missing.txt"), "--key", k.verifierKey)
	expect(t, "verify an export against a missing checkpoint file", code, out, 2, "no such file")
}
