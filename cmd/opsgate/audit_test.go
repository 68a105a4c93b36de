package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	cases := []struct {
		name, file string
		status     int
		says       string
	}{
		{"a whole export", write("ok.ndjson", export), 0, "verified"},
		{"an altered event", write("altered.ndjson", strings.Replace(export, `"actor":"U"`, `"actor":"V"`, 1)), 1, "line 1, event at position 42 (seq 1): its content does not match its hash"},
		{"a removed event", write("removed.ndjson", lines[1]), 0, "taken on trust"},
		{"not NDJSON", write("notjson.ndjson", "id,type\n1,StartAccepted\n"), 2, "line 1 is not an exported event"},
		{"no such file", filepath.Join(dir, "missing.ndjson"), 2, "no such file"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		got := run([]string{"audit", "verify", "--file", c.file}, &stdout, &stderr)
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
