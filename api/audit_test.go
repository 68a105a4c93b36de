package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/apptest"
)

// chained waits until the audit chain links every stored event of tenant.
func (f *fixture) chained(t *testing.T, tenant string) int {
	t.Helper()
	var stored, linked int
	// Polled rather than woken by the feed's batches: the batch that links
	// the last events may have been told before this began.
	apptest.WaitFor(t, 30*time.Second, "the audit chain to link every event of the tenant", func() bool {
		err := f.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events WHERE tenant_id = $1),
			(SELECT count(*) FROM audit_chain WHERE chain = $1)`, tenant).Scan(&stored, &linked)
		if err != nil {
			t.Fatalf("count events: %v", err)
		}
		return stored == linked
	})
	return linked
}

// exportLines splits an export into its lines, decoded.
func exportLines(t *testing.T, r apptest.Reply) []audit.Line {
	t.Helper()
	r.ExpectStatus(t, 200)
	if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("%s: content type %q, want application/x-ndjson", r, ct)
	}
	var lines []audit.Line
	for i, raw := range bytes.Split(bytes.TrimSuffix(r.Body, []byte("\n")), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var l audit.Line
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("export line %d: %v: %s", i+1, err, raw)
		}
		lines = append(lines, l)
	}
	return lines
}

// busyHistory records on tenant A, on a connection of its own, an
// accepted start by the operator, a deduped and a scope_busy start by the
// owner, and a start blocked by revoked consent; it returns the
// connection and the accepted and blocked runs.
func (f *fixture) busyHistory(t *testing.T) (connID, accepted, blocked string) {
	t.Helper()
	connID = f.newConnection(t, f.tenantA, f.owner.Token, conn{Name: "Audited"})
	accepted = f.start(t, contractSurfaces[5], startArgs{conn: connID, token: f.operator.Token}).ExpectStart(t, "accepted").Run.ID
	f.start(t, contractSurfaces[5], startArgs{conn: connID}).ExpectStart(t, "deduped")
	f.start(t, contractSurfaces[6], startArgs{conn: connID}).ExpectStart(t, "scope_busy")
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+connID, f.owner.Token, map[string]any{"consent": "revoked"}, nil)
	blocked = f.start(t, contractSurfaces[6], startArgs{conn: connID}).ExpectStart(t, "blocked").Run.ID
	return connID, accepted, blocked
}

func TestAuditExportVerifies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.busyHistory(t)
	n := f.chained(t, f.tenantA)

	lines := exportLines(t, f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA, f.auditor.Token, nil))
	if len(lines) != n {
		t.Fatalf("export holds %d events, the tenant has %d", len(lines), n)
	}
	for i, l := range lines {
		if l.Seq != int64(i+1) || l.Metadata.TenantID != f.tenantA || len(l.Hash) != 64 {
			t.Fatalf("line %d: seq %d tenant %s hash %q", i+1, l.Seq, l.Metadata.TenantID, l.Hash)
		}
	}
	if lines[0].PrevHash != audit.ZeroHash {
		t.Errorf("the first event links to %s, want the zero hash", lines[0].PrevHash)
	}
	body := f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA, f.auditor.Token, nil).Body
	v, err := audit.VerifyFile(bytes.NewReader(body))
	if err != nil || v.Events != n || v.Head != lines[n-1].Hash {
		t.Fatalf("verify the export: %+v, %v; want %d events up to %s", v, err, n, lines[n-1].Hash)
	}

	// The trail shows the same hashes, and the digest the chain's head.
	var trail struct {
		Items []struct {
			Position int64   `json:"position"`
			Hash     *string `json:"hash"`
		} `json:"items"`
	}
	f.Must(t, 200, "GET", "/api/v1/audit/events?limit=200&tenant_id="+f.tenantA, f.auditor.Token, nil, &trail)
	byPosition := map[int64]string{}
	for _, l := range lines {
		byPosition[l.Position] = l.Hash
	}
	for _, e := range trail.Items {
		if e.Hash == nil || *e.Hash != byPosition[e.Position] {
			t.Errorf("trail event %d has hash %v, the export %s", e.Position, e.Hash, byPosition[e.Position])
		}
	}
	var digest struct {
		TenantID string `json:"tenant_id"`
		Seq      int64  `json:"seq"`
		Hash     string `json:"hash"`
	}
	f.Must(t, 200, "GET", "/api/v1/audit/digest?tenant_id="+f.tenantA, f.auditor.Token, nil, &digest)
	if digest.Seq != int64(n) || digest.Hash != lines[n-1].Hash || digest.TenantID != f.tenantA {
		t.Errorf("digest %+v, want seq %d hash %s", digest, n, lines[n-1].Hash)
	}

	// after: the rest of the chain, which verifies on its own.
	k := n / 2
	rest := f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA+"&after="+strconv.FormatInt(lines[k-1].Position, 10), f.auditor.Token, nil)
	tail := exportLines(t, rest)
	if len(tail) != n-k || tail[0].Seq != int64(k+1) || tail[0].PrevHash != lines[k-1].Hash {
		t.Fatalf("export after seq %d: %d lines from seq %d", k, len(tail), tail[0].Seq)
	}
	if v, err := audit.VerifyFile(bytes.NewReader(rest.Body)); err != nil || v.FirstSeq != int64(k+1) {
		t.Errorf("verify the rest: %+v, %v", v, err)
	}
}

func TestAuditExportBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.newConnection(t, f.tenantB, f.outsider.Token, conn{})
	f.chained(t, f.tenantB)
	var other int64
	if err := f.Pool.QueryRow(context.Background(), `SELECT max(position) FROM events WHERE tenant_id = $1`, f.tenantB).Scan(&other); err != nil {
		t.Fatal(err)
	}
	export := "/api/v1/audit/export?tenant_id="
	f.Call(t, "GET", "/api/v1/audit/export", f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
	for _, after := range []string{"abc", "-1", "1.5"} {
		f.Call(t, "GET", export+f.tenantA+"&after="+after, f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
	}
	// A position of another tenant's chain is not one of this one.
	f.Call(t, "GET", export+f.tenantA+"&after="+strconv.FormatInt(other, 10), f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
	unknown := f.Call(t, "GET", export+randomID(), f.owner.Token, nil)
	unknown.ExpectProblem(t, 404, "not_found")
	notMember := f.Call(t, "GET", export+f.tenantB, f.owner.Token, nil)
	notMember.ExpectProblem(t, 404, "not_found")
	if !bytes.Equal(unknown.Body, notMember.Body) {
		t.Errorf("404 bodies differ: %s vs %s", unknown.Body, notMember.Body)
	}
	f.Call(t, "GET", export+f.tenantA, f.operator.Token, nil).ExpectProblem(t, 403, "forbidden")
	f.Call(t, "GET", export+f.tenantA, "", nil).ExpectProblem(t, 401, "unauthorized")
}

// TestVerifyCatchesWhatASuperuserChanged alters an event and removes
// another with the append-only triggers disabled, as someone with the
// database's superuser could, and expects verification (against the
// database and of an export) to name each.
func TestVerifyCatchesWhatASuperuserChanged(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.busyHistory(t)
	f.chained(t, f.tenantA)
	ctx := context.Background()
	history := audit.NewHistory(f.Store)
	if v, err := history.VerifyChain(ctx, f.tenantA); err != nil || v.Events == 0 {
		t.Fatalf("verify before any change: %+v, %v", v, err)
	}
	// A digest kept outside holds while nothing changed; one the chain does
	// not hold is named.
	kept, err := history.HeadOf(ctx, f.tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := history.VerifyChainAgainst(ctx, f.tenantA, kept); err != nil || v.Head != kept.Hash {
		t.Fatalf("verify against the kept digest: %+v, %v", v, err)
	}
	var m *audit.Mismatch
	forged := audit.Head{Seq: kept.Seq, Hash: strings.Repeat("0", 64)}
	if _, err := history.VerifyChainAgainst(ctx, f.tenantA, forged); !errors.As(err, &m) || m.Seq != kept.Seq || !strings.Contains(m.Why, "rewritten") {
		t.Errorf("verify against a digest the chain does not hold: %v", err)
	}
	if _, err := history.VerifyChainAgainst(ctx, f.tenantA, audit.Head{Seq: kept.Seq + 1, Hash: kept.Hash}); !errors.As(err, &m) || !strings.Contains(m.Why, "are gone") {
		t.Errorf("verify against a digest beyond the chain's end: %v", err)
	}
	var altered int64
	if err := f.Pool.QueryRow(ctx, `SELECT position FROM events WHERE tenant_id = $1 AND event_type = 'StartDeduped'`, f.tenantA).Scan(&altered); err != nil {
		t.Fatal(err)
	}
	superuser(t, f, `ALTER TABLE events DISABLE TRIGGER events_append_only`,
		`UPDATE events SET payload = replace(payload::text, '`+f.owner.ID+`', 'forged')::json WHERE position = `+strconv.FormatInt(altered, 10),
		`ALTER TABLE events ENABLE TRIGGER events_append_only`)
	var payload string
	_ = f.Pool.QueryRow(ctx, `SELECT payload::text FROM events WHERE position = $1`, altered).Scan(&payload)
	if !strings.Contains(payload, "forged") {
		t.Fatalf("the payload was not altered: %s", payload)
	}
	_, err = history.VerifyChain(ctx, f.tenantA)
	if !errors.As(err, &m) || m.Position != altered || !strings.Contains(m.Why, "does not match its hash") {
		t.Fatalf("verify after altering event %d: %v", altered, err)
	}
	body := f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA, f.owner.Token, nil).Body
	if _, err := audit.VerifyFile(bytes.NewReader(body)); !errors.As(err, &m) || m.Position != altered {
		t.Fatalf("verify the export after altering event %d: %v", altered, err)
	}

	// Tenant C: an event removed with its link.
	f.newConnection(t, f.tenantC, f.owner.Token, conn{})
	f.newConnection(t, f.tenantC, f.owner.Token, conn{})
	f.chained(t, f.tenantC)
	var removed, seq int64
	if err := f.Pool.QueryRow(ctx, `SELECT position, seq FROM audit_chain WHERE chain = $1 AND seq = 2`, f.tenantC).Scan(&removed, &seq); err != nil {
		t.Fatal(err)
	}
	p := strconv.FormatInt(removed, 10)
	superuser(t, f, `ALTER TABLE audit_chain DISABLE TRIGGER ALL`, `ALTER TABLE events DISABLE TRIGGER ALL`,
		`DELETE FROM audit_chain WHERE position = `+p, `DELETE FROM events WHERE position = `+p,
		`ALTER TABLE events ENABLE TRIGGER ALL`, `ALTER TABLE audit_chain ENABLE TRIGGER ALL`)
	_, err = history.VerifyChain(ctx, f.tenantC)
	if !errors.As(err, &m) || m.Seq != seq+1 || !strings.Contains(m.Why, "missing") {
		t.Fatalf("verify after removing event %d (seq %d): %v", removed, seq, err)
	}
}

// superuser runs statements as the database's owner would, one
// transaction each.
func superuser(t *testing.T, f *fixture, statements ...string) {
	t.Helper()
	for _, s := range statements {
		if _, err := f.Pool.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestVerifyFileNamesTheFirstBadLine(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.busyHistory(t)
	f.chained(t, f.tenantA)
	body := f.Call(t, "GET", "/api/v1/audit/export?tenant_id="+f.tenantA, f.auditor.Token, nil).Body
	lines := strings.SplitAfter(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("export of %d lines", len(lines))
	}
	join := func(ls ...[]string) string {
		var b strings.Builder
		for _, l := range ls {
			for _, s := range l {
				b.WriteString(strings.TrimSuffix(s, "\n") + "\n")
			}
		}
		return b.String()
	}
	cases := []struct {
		name   string
		file   string
		line   int
		reason string
	}{
		{"a line removed", join(lines[:2], lines[3:]), 3, "missing"},
		{"a line altered", join(lines[:1], []string{strings.Replace(lines[1], `"version":`, `"version":1`, 1)}, lines[2:]), 2, "does not match its hash"},
		{"two lines swapped", join(lines[:1], lines[2:3], lines[1:2], lines[3:]), 2, "seq jumps"},
		{"the first line removed", join(lines[1:]), 0, ""},
	}
	for _, c := range cases {
		v, err := audit.VerifyFile(strings.NewReader(c.file))
		var m *audit.Mismatch
		if c.line == 0 {
			// An export may start anywhere (after): the chain from there on verifies.
			if err != nil || v.FirstSeq != 2 {
				t.Errorf("%s: %+v, %v; want it verified from seq 2", c.name, v, err)
			}
			continue
		}
		if !errors.As(err, &m) || m.Line != c.line || !strings.Contains(m.Why, c.reason) {
			t.Errorf("%s: %v; want a mismatch at line %d (%s)", c.name, err, c.line, c.reason)
		}
	}
	for name, file := range map[string]string{
		"not JSON":         "hello\n",
		"a JSON array":     "[1,2]\n",
		"no hash":          `{"seq":1,"position":1,"prev_hash":"` + audit.ZeroHash + `"}` + "\n",
		"a truncated line": join(lines[:2]) + lines[2][:len(lines[2])/2],
	} {
		var fe *audit.FormatError
		if _, err := audit.VerifyFile(strings.NewReader(file)); !errors.As(err, &fe) {
			t.Errorf("%s: %v; want a format error", name, err)
		}
	}
}

func TestExplainAStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	connID, accepted, blocked := f.busyHistory(t)
	f.waitRun(t, blocked)
	// Consent comes back: the explanation stays as of the decision.
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+connID, f.owner.Token, map[string]any{"consent": "granted"}, nil)

	type explanation struct {
		RunID    string `json:"run_id"`
		Decision struct {
			Outcome string          `json:"outcome"`
			Message apptest.Message `json:"message"`
			Reason  *apptest.Reason `json:"reason"`
			Event   struct {
				Type string `json:"type"`
			} `json:"event"`
		} `json:"decision"`
		AskedBy struct {
			InitiatorID string `json:"initiator_id"`
			Surface     string `json:"surface"`
		} `json:"asked_by"`
		Facts struct {
			Connection *struct {
				ID      string `json:"id"`
				Consent string `json:"consent"`
			} `json:"provider_connection"`
			ScopeHeldBy *apptest.Run `json:"scope_held_by"`
		} `json:"facts"`
		LaterStarts []struct {
			Outcome     string `json:"outcome"`
			InitiatorID string `json:"initiator_id"`
			Surface     string `json:"surface"`
		} `json:"later_starts"`
	}
	var x explanation
	f.Must(t, 200, "GET", "/api/v1/operations/"+accepted+"/explain", f.readonly.Token, nil, &x)
	if x.Decision.Outcome != "accepted" || x.Decision.Event.Type != "StartAccepted" || !strings.HasSuffix(x.Decision.Message.Title, "accepted") {
		t.Errorf("decision %+v", x.Decision)
	}
	if x.AskedBy.InitiatorID != f.operator.ID || x.AskedBy.Surface != "inventory_sync" {
		t.Errorf("asked by %+v, want the operator through inventory.sync", x.AskedBy)
	}
	if c := x.Facts.Connection; c == nil || c.ID != connID || c.Consent != "granted" || x.Facts.ScopeHeldBy != nil {
		t.Errorf("facts %+v, want the connection with consent granted and a free scope", x.Facts)
	}
	if len(x.LaterStarts) != 2 || x.LaterStarts[0].Outcome != "deduped" || x.LaterStarts[1].Outcome != "scope_busy" ||
		x.LaterStarts[0].InitiatorID != f.owner.ID || x.LaterStarts[1].Surface != "compliance_snapshot" {
		t.Errorf("later starts %+v, want the owner's deduped then scope_busy starts", x.LaterStarts)
	}

	x = explanation{}
	f.Must(t, 200, "GET", "/api/v1/operations/"+blocked+"/explain", f.owner.Token, nil, &x)
	if x.Decision.Outcome != "blocked" || x.Decision.Reason == nil || x.Decision.Reason.Code != "provider_connection.consent_missing" {
		t.Errorf("blocked decision %+v", x.Decision)
	}
	if c := x.Facts.Connection; c == nil || c.Consent != "revoked" {
		t.Errorf("facts of the blocked start %+v, want consent revoked as it was then", x.Facts.Connection)
	}
	if h := x.Facts.ScopeHeldBy; h == nil || h.ID != accepted || h.Status != "queued" {
		t.Errorf("the scope was held by %+v, want run %s queued", h, accepted)
	}

	unknown := f.Call(t, "GET", "/api/v1/operations/"+randomID()+"/explain", f.owner.Token, nil)
	unknown.ExpectProblem(t, 404, "not_found")
	outsider := f.Call(t, "GET", "/api/v1/operations/"+accepted+"/explain", f.outsider.Token, nil)
	outsider.ExpectProblem(t, 404, "not_found")
	if !bytes.Equal(unknown.Body, outsider.Body) {
		t.Errorf("404 bodies differ: %s vs %s", unknown.Body, outsider.Body)
	}
}

func TestAsOfAMoment(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	before := time.Now().UTC().Add(-time.Second)
	connID, accepted, _ := f.busyHistory(t)
	positionOf := func(eventType, correlation string) string {
		var p int64
		if err := f.Pool.QueryRow(context.Background(), `SELECT max(position) FROM events WHERE event_type = $1
			AND metadata->>'correlation_id' = $2`, eventType, correlation).Scan(&p); err != nil {
			t.Fatalf("position of %s: %v", eventType, err)
		}
		return strconv.FormatInt(p, 10)
	}
	created := positionOf("ProviderConnectionCreated", connID)
	f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+connID, f.owner.Token, map[string]any{"display_name": "Renamed"}, nil)

	type connection struct {
		DisplayName string `json:"display_name"`
		Consent     string `json:"consent"`
	}
	var then, now connection
	f.Must(t, 200, "GET", "/api/v1/provider-connections/"+connID+"?as_of="+created, f.readonly.Token, nil, &then)
	f.Must(t, 200, "GET", "/api/v1/provider-connections/"+connID, f.readonly.Token, nil, &now)
	if then.DisplayName != "Audited" || then.Consent != "granted" || now.DisplayName != "Renamed" || now.Consent != "revoked" {
		t.Errorf("as of its creation %+v, now %+v", then, now)
	}
	f.Must(t, 200, "GET", "/api/v1/provider-connections/"+connID+"?as_of="+time.Now().UTC().Format(time.RFC3339Nano), f.readonly.Token, nil, &then)
	if then != now {
		t.Errorf("as of now %+v, want %+v", then, now)
	}

	var queued, current struct {
		Status         string `json:"status"`
		DedupedCount   int    `json:"deduped_count"`
		ScopeBusyCount int    `json:"scope_busy_count"`
	}
	f.waitRun(t, accepted)
	f.Must(t, 200, "POST", "/api/v1/operations/"+accepted+"/cancel", f.owner.Token, nil, nil)
	f.Must(t, 200, "GET", "/api/v1/operations/"+accepted+"?as_of="+positionOf("StartAccepted", accepted), f.readonly.Token, nil, &queued)
	f.Must(t, 200, "GET", "/api/v1/operations/"+accepted, f.readonly.Token, nil, &current)
	if queued.Status != "queued" || queued.DedupedCount != 0 || current.Status != "cancelled" || current.DedupedCount != 1 || current.ScopeBusyCount != 1 {
		t.Errorf("as of its acceptance %+v, now %+v", queued, current)
	}

	for _, path := range []string{"/api/v1/provider-connections/" + connID, "/api/v1/operations/" + accepted} {
		f.Call(t, "GET", path+"?as_of="+before.Format(time.RFC3339Nano), f.owner.Token, nil).ExpectProblem(t, 404, "not_found")
		for _, bad := range []string{"yesterday", "0", "-3", "2026-13-01T00:00:00Z"} {
			f.Call(t, "GET", path+"?as_of="+bad, f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
		}
		f.Call(t, "GET", path+"?as_of=9000000000000", f.owner.Token, nil).ExpectProblem(t, 400, "invalid_query")
		f.Call(t, "GET", path+"?as_of="+created, f.outsider.Token, nil).ExpectProblem(t, 404, "not_found")
	}
}

// TestConnectionHistoryFoldsToItsRow: every change of a connection is an
// event, so the connection folded from its history equals its row.
func TestConnectionHistoryFoldsToItsRow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	first := f.newConnection(t, f.tenantC, f.owner.Token, conn{Default: true})
	second := f.newConnection(t, f.tenantC, f.owner.Token, conn{Consent: "missing"})
	for _, patch := range []map[string]any{
		{"display_name": "Primary"}, {"consent": "revoked"}, {"credentials": "expired"}, {"enabled": false},
		{"simulation": map[string]any{"latency_ms": 5, "fail_with": nil}},
	} {
		f.Must(t, 200, "PATCH", "/api/v1/provider-connections/"+first, f.owner.Token, patch, nil)
	}
	f.Must(t, 200, "POST", "/api/v1/provider-connections/"+second+"/make-default", f.owner.Token, nil, nil)
	asOf := time.Now().UTC().Format(time.RFC3339Nano)
	for _, id := range []string{first, second} {
		row := f.Call(t, "GET", "/api/v1/provider-connections/"+id, f.owner.Token, nil).Object(t)
		folded := f.Call(t, "GET", "/api/v1/provider-connections/"+id+"?as_of="+asOf, f.owner.Token, nil).Object(t)
		a, _ := json.Marshal(row)
		b, _ := json.Marshal(folded)
		if !bytes.Equal(a, b) {
			t.Errorf("connection %s\nrow:    %s\nfolded: %s", id, a, b)
		}
	}
}
