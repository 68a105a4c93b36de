package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand"
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

// generalSum is the hash by its definition: the whole line through
// encoding/json and the general RFC 8785 transform.
func generalSum(l Line) (string, error) {
	l.Hash = ""
	raw, err := json.Marshal(l)
	if err != nil {
		return "", err
	}
	return sumCanonical(raw)
}

// awkward are pieces of strings that a canonical form must treat right:
// escapes, control characters, HTML characters encoding/json escapes,
// line separators, astral characters, bytes that are not UTF-8.
var awkward = []string{"", "a", `"`, `\`, "\x00", "\x07", "\b", "\t", "\n", "\f", "\r", "\x1f", "\x7f", "é", "<>&",
	"\u2028\u2029", "😀", "\ufeff", "\xff", "\xe2\x82", "\xed\xa0\x80", "/", "A\u0308"}

func awkwardString(r *rand.Rand) string {
	var b strings.Builder
	for n := r.Intn(5); n > 0; n-- {
		b.WriteString(awkward[r.Intn(len(awkward))])
	}
	return b.String()
}

// awkwardData are event payloads as clients and older code wrote them:
// white space, escapes, numbers in every spelling, keys whose UTF-16 order
// differs from their UTF-8 order.
var awkwardData = []string{`{}`, `null`, `{"b": 2, "a": 1}`, `{"n": [1.0, 1e2, -0, 0.1, 1E+2, 123456789012345678, 5e-324]}`,
	`{"s": "\u00e9\ud83d\ude00\u2028\/"}`, `{"\ue000": 1, "😀": 2, "z": {"y": [true, false, null]}}`, ` { "a" : [ ] } `}

func randomLine(r *rand.Rand) Line {
	data := json.RawMessage(awkwardData[r.Intn(len(awkwardData))])
	if r.Intn(2) == 0 {
		generated, _ := json.Marshal(map[string]any{awkwardString(r): awkwardString(r), "n": r.NormFloat64() * 1e6, "i": r.Int63()})
		data = generated
	}
	l := Line{Seq: r.Int63n(1 << 40), PrevHash: ZeroHash, Record: Record{
		Position: r.Int63n(1 << 53), EventID: awkwardString(r), Stream: awkwardString(r), Version: r.Int63n(1000),
		Type: awkwardString(r), SchemaVersion: r.Intn(3), RecordedAt: time.Unix(r.Int63n(4e9), r.Int63n(1e9)).UTC(),
		Data: data, Metadata: Metadata{Actor: awkwardString(r), TenantID: awkwardString(r),
			CorrelationID: awkwardString(r), CausationID: awkwardString(r), RequestID: awkwardString(r)},
	}}
	if r.Intn(2) == 0 { // an event recorded through an integration
		l.Metadata.Via = awkwardString(r)
	}
	return l
}

func TestSumIsTheCanonicalForm(t *testing.T) {
	seed := time.Now().UnixNano()
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < 5000; i++ {
		l := randomLine(r)
		want, err := generalSum(l)
		if err != nil {
			t.Fatalf("seed %d: general form of %+v: %v", seed, l, err)
		}
		if got, err := l.Sum(); got != want {
			t.Fatalf("seed %d: %+v hashes to %s (%v), its general canonical form to %s", seed, l, got, err, want)
		}
	}
	for _, l := range []Line{{Record: Record{Position: 1<<53 + 1}}, {Record: Record{Data: json.RawMessage(`{"a":1,"a":2}`)}}} {
		if _, err := l.Sum(); err == nil {
			t.Errorf("%+v has no canonical form, yet it hashed", l)
		}
	}
}

func BenchmarkLineSum(b *testing.B) {
	l := sample()[0]
	l.Data = json.RawMessage(`{"run_id":"01J00000000000000000000000","operation_type":"inventory.sync","surface":"inventory_sync",` +
		`"scope":"connection:01J00000000000000000000001","provider_connection":{"id":"01J00000000000000000000001","provider":"simulated",` +
		`"display_name":"Graph (prod)"},"requested_by":"01J00000000000000000000002","idempotency_key":"k-1"}`)
	for _, bc := range []struct {
		name string
		sum  func(Line) (string, error)
	}{{"direct", Line.Sum}, {"general", generalSum}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := bc.sum(l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
