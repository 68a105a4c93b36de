package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// sample is a chain of two lines whose hashes were computed outside Go,
// with Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) and hashlib.sha256, as the README tells an auditor.
func sample() []Line {
	first := Line{Seq: 1, PrevHash: ZeroHash, Record: Record{
		Position: 42, EventID: "01J00000000000000000000000", Stream: "scope-connection-X", Version: 3,
		Type: "StartDeduped", SchemaVersion: 1, RecordedAt: time.Date(2026, 12, 1, 9, 30, 0, 123456000, time.UTC),
		Data:     json.RawMessage(`{"run_id": "R", "b": 2, "a": "é<>\n"}`),
		Metadata: Metadata{Actor: "U", TenantID: "T", CorrelationID: "R", RequestID: "req"},
	}}
	first.Hash = "4377e55720eb6ad060593425060e96bffa6b0eee8235337ffe5b7bdc6abc8580"
	second := first
	second.Seq, second.Position, second.PrevHash = 2, 43, first.Hash
	second.Hash = "df9d8d60ddb1836df71d807d83537b34e76307759eb5fb0238162c3d6f57e5f7"
	return []Line{first, second}
}

func TestLineHashIsTheDocumentedEncoding(t *testing.T) {
	for _, l := range sample() {
		got, err := l.Sum()
		if err != nil || got != l.Hash {
			t.Errorf("seq %d: hash %s (%v), computed outside Go: %s", l.Seq, got, err, l.Hash)
		}
	}
}

func encode(t *testing.T, lines []Line) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestVerifyFile(t *testing.T) {
	lines := sample()
	v, err := VerifyFile(strings.NewReader(encode(t, lines)))
	if err != nil || v.Events != 2 || v.Head != lines[1].Hash || v.FirstSeq != 1 {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	if v, err := VerifyFile(strings.NewReader("")); err != nil || v.Events != 0 {
		t.Errorf("an empty export: %+v, %v", v, err)
	}
	altered := sample()
	altered[1].Metadata.Actor = "someone else"
	var m *Mismatch
	if _, err := VerifyFile(strings.NewReader(encode(t, altered))); !errors.As(err, &m) || m.Line != 2 || m.Position != 43 {
		t.Errorf("an altered line: %v", err)
	}
	badStart := sample()[:1]
	badStart[0].PrevHash = strings.Repeat("1", 64)
	if _, err := VerifyFile(strings.NewReader(encode(t, badStart))); !errors.As(err, &m) || !strings.Contains(m.Why, "zero hash") {
		t.Errorf("a first event not linked to the zero hash: %v", err)
	}
	// A member added to a line changes its hash.
	extra := strings.Replace(encode(t, sample()), `"seq":2,`, `"seq":2,"note":"x",`, 1)
	if _, err := VerifyFile(strings.NewReader(extra)); !errors.As(err, &m) || m.Line != 2 {
		t.Errorf("a line with a member added: %v", err)
	}
}

func TestCheckCanonical(t *testing.T) {
	for raw, ok := range map[string]bool{`{"a":1,"b":[true,null,"x"]}`: true, `{"a":1,"a":2}`: false, `{"n":1e400}`: false} {
		if err := CheckCanonical(json.RawMessage(raw)); (err == nil) != ok {
			t.Errorf("%s: %v", raw, err)
		}
	}
}
