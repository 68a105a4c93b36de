package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/audit"
)

// A chain of two events (audit/record_test.go computes the same hashes
// outside Go).
const export = `{"seq":1,"position":42,"event_id":"01J00000000000000000000000","stream":"scope-connection-X","version":3,"type":"StartDeduped","schema_version":1,"recorded_at":"2026-12-01T09:30:00.123456Z","data":{"run_id":"R","b":2,"a":"é<>\n"},"metadata":{"actor":"U","tenant_id":"T","correlation_id":"R","causation_id":"","request_id":"req"},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"4377e55720eb6ad060593425060e96bffa6b0eee8235337ffe5b7bdc6abc8580"}
{"seq":2,"position":43,"event_id":"01J00000000000000000000000","stream":"scope-connection-X","version":3,"type":"StartDeduped","schema_version":1,"recorded_at":"2026-12-01T09:30:00.123456Z","data":{"run_id":"R","b":2,"a":"é<>\n"},"metadata":{"actor":"U","tenant_id":"T","correlation_id":"R","causation_id":"","request_id":"req"},"prev_hash":"4377e55720eb6ad060593425060e96bffa6b0eee8235337ffe5b7bdc6abc8580","hash":"df9d8d60ddb1836df71d807d83537b34e76307759eb5fb0238162c3d6f57e5f7"}
`

func TestAuditVerifyFileExitStatus(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lines := strings.SplitAfter(export, "\n")
	const head1 = "1:4377e55720eb6ad060593425060e96bffa6b0eee8235337ffe5b7bdc6abc8580"
	const head2 = "2:df9d8d60ddb1836df71d807d83537b34e76307759eb5fb0238162c3d6f57e5f7"
	rewritten := write("rewritten.ndjson", rewrite(t, export))
	cases := []struct {
		name, file string
		status     int
		says       string
		flags      []string
	}{
		{"a whole export", write("ok.ndjson", export), 0, "verified", nil},
		{"a whole export against the digest of its head", write("ok.ndjson", export), 0, "the kept digest holds: seq 2", []string{"--digest", head2}},
		{"a whole export against an earlier digest", write("ok.ndjson", export), 0, "the kept digest holds: seq 1", []string{"--digest", head1}},
		{"a chain rewritten whole, alone", rewritten, 0, "verified", nil},
		{"a chain rewritten whole, against the kept digest", rewritten, 1, "line 2, event at position 43 (seq 2): the kept digest says seq 2 hashes to df9d8d60", []string{"--digest", head2}},
		{"events removed from the end since the digest", write("cut.ndjson", lines[0]), 1, "seq 2: the chain ends at seq 1, before the kept digest's seq 2", []string{"--digest", head2}},
		{"an export that starts after the digest", write("later.ndjson", lines[1]), 1, "the export starts at seq 2, after the kept digest's seq 1", []string{"--digest", head1}},
		{"a digest that is not SEQ:HASH", write("ok.ndjson", export), 2, "want SEQ:HASH", []string{"--digest", "df9d8d60"}},
		{"a digest with a short hash", write("ok.ndjson", export), 2, "64 lowercase hex digits", []string{"--digest", "2:df9d8d60"}},
		{"an altered event", write("altered.ndjson", strings.Replace(export, `"actor":"U"`, `"actor":"V"`, 1)), 1, "line 1, event at position 42 (seq 1): its content does not match its hash", nil},
		{"a removed event", write("removed.ndjson", lines[1]), 0, "taken on trust", nil},
		{"not NDJSON", write("notjson.ndjson", "id,type\n1,StartAccepted\n"), 2, "line 1 is not an exported event", nil},
		{"no such file", filepath.Join(dir, "missing.ndjson"), 2, "no such file", nil},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		got := run(append([]string{"audit", "verify", "--file", c.file}, c.flags...), &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if got != c.status || !strings.Contains(out, c.says) {
			t.Errorf("%s: exit %d, want %d; output %q should say %q", c.name, got, c.status, out, c.says)
		}
	}
	var stdout, stderr bytes.Buffer
	if got := run([]string{"audit", "verify"}, &stdout, &stderr); got != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("no flag: exit %d, %q", got, stderr.String())
	}
}

// rewrite changes the first event of an export and recomputes every hash
// and link after it, as whoever can write the database could: the result
// verifies on its own, and only a digest kept earlier tells.
func rewrite(t *testing.T, export string) string {
	t.Helper()
	var out strings.Builder
	prev := audit.ZeroHash
	for i, raw := range strings.Split(strings.TrimSpace(export), "\n") {
		var l audit.Line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			l.Metadata.Actor = "someone else"
		}
		l.PrevHash = prev
		sum, err := l.Sum()
		if err != nil {
			t.Fatal(err)
		}
		l.Hash, prev = sum, sum
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(append(b, '\n'))
	}
	return out.String()
}
