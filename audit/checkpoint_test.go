package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testTenant = "01JABCDEFGHJKMNPQRSTVWXYZ0"

// testKey returns a note key named name, made from seed (deterministic:
// see TestCheckpointKeys for why), without ParseKey.
func testKey(t *testing.T, name string, seed byte) *Key {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.NewChaCha8([32]byte{seed, 'k', 'e', 'y'}), name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Signer: signer, Verifier: verifier, VerifierKey: vkey}
}

func sign(t *testing.T, k *Key, c Checkpoint) []byte {
	t.Helper()
	signed, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func rootBytes(h tlog.Hash) []byte { return h[:] }

func testRoot(b byte) tlog.Hash {
	var h tlog.Hash
	for i := range h {
		h[i] = b + byte(i)
	}
	return h
}

func TestCheckpointTextRoundTrip(t *testing.T) {
	for _, c := range []Checkpoint{
		{Origin: "opsgate/" + testTenant, Size: 1, Root: testRoot(1)},
		{Origin: "example.com/log", Size: 0, Root: testRoot(0)},
		{Origin: "o", Size: 1<<63 - 1, Root: testRoot(200)},
	} {
		text := c.Text()
		if want := fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:])); text != want {
			t.Errorf("Text() = %q, want %q", text, want)
		}
		got, err := ParseCheckpoint(text)
		if err != nil || got != c {
			t.Errorf("ParseCheckpoint(%q) = %+v, %v; want %+v", text, got, err, c)
		}
	}
}

func TestCheckpointParse(t *testing.T) {
	root := base64.StdEncoding.EncodeToString(rootBytes(testRoot(7)))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	long := base64.StdEncoding.EncodeToString(make([]byte, 33))
	for _, c := range []struct {
		name, text string
		ok         bool
		why        string // a word of the error
	}{
		{"well formed", "o\n5\n" + root + "\n", true, ""},
		{"size zero", "o\n0\n" + root + "\n", true, ""},
		{"an extension line", "o\n5\n" + root + "\nextension\n", true, ""},
		{"extension lines", "o\n5\n" + root + "\nfirst\nsecond\n", true, ""},
		{"leading zeros", "o\n007\n" + root + "\n", false, "second line"},
		{"a leading zero on zero", "o\n00\n" + root + "\n", false, "second line"},
		{"a plus sign", "o\n+5\n" + root + "\n", false, "second line"},
		{"negative", "o\n-5\n" + root + "\n", false, "second line"},
		{"negative zero", "o\n-0\n" + root + "\n", false, "second line"},
		{"non-numeric", "o\nfive\n" + root + "\n", false, "second line"},
		{"hex", "o\n0x5\n" + root + "\n", false, "second line"},
		{"an empty size", "o\n\n" + root + "\n", false, "second line"},
		{"a space in the size", "o\n 5\n" + root + "\n", false, "second line"},
		{"overflowing size", "o\n9223372036854775808\n" + root + "\n", false, "second line"},
		{"no trailing newline", "o\n5\n" + root, false, "newline"},
		{"no trailing newline after an extension", "o\n5\n" + root + "\next", false, "newline"},
		{"an empty origin", "\n5\n" + root + "\n", false, "origin"},
		{"a root not base64", "o\n5\nnot base64!\n", false, "third line"},
		{"a root of 31 bytes", "o\n5\n" + short + "\n", false, "third line"},
		{"a root of 33 bytes", "o\n5\n" + long + "\n", false, "third line"},
		{"a root in hex", "o\n5\n" + hex.EncodeToString(rootBytes(testRoot(7))) + "\n", false, "third line"},
		{"an empty root", "o\n5\n\n", false, ""},
		{"two lines", "o\n5\n", false, ""},
		{"one line", "o\n", false, ""},
		{"empty", "", false, ""},
		{"a blank extension line", "o\n5\n" + root + "\n\n", false, "line 4"},
		{"a blank line between extensions", "o\n5\n" + root + "\nfirst\n\nthird\n", false, "line 5"},
	} {
		got, err := ParseCheckpoint(c.text)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: ParseCheckpoint(%q): %v", c.name, c.text, err)
		case c.ok && (got.Origin != "o" || got.Root != testRoot(7)):
			t.Errorf("%s: ParseCheckpoint(%q) = %+v", c.name, c.text, got)
		case !c.ok && err == nil:
			t.Errorf("%s: ParseCheckpoint(%q) = %+v, want an error", c.name, c.text, got)
		case !c.ok && !strings.Contains(err.Error(), c.why):
			t.Errorf("%s: ParseCheckpoint(%q): %v; want it to name %q", c.name, c.text, err, c.why)
		}
	}
}

func TestCheckpointOpen(t *testing.T) {
	k := testKey(t, "opsgate.example", 1)
	sameName := testKey(t, "opsgate.example", 2)
	otherName := testKey(t, "other.example", 3)
	another := testKey(t, "third.example", 4)
	cp := Checkpoint{Origin: "opsgate/" + testTenant, Size: 42, Root: testRoot(3)}
	signed := sign(t, k, cp)

	if got, err := OpenCheckpoint(signed, k.Verifier); err != nil || got != cp {
		t.Fatalf("a note signed by the key: %+v, %v", got, err)
	}

	cosigned, err := note.Sign(&note.Note{Text: cp.Text()}, otherName.Signer, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenCheckpoint(cosigned, k.Verifier); err != nil || got != cp {
		t.Errorf("a note signed by the key and by an unknown one: %+v, %v", got, err)
	}

	// A note with the right signature line added by hand to another's.
	appended := append(bytes.Clone(sign(t, otherName, cp)), signed[len(cp.Text())+1:]...)
	if got, err := OpenCheckpoint(appended, k.Verifier); err != nil || got != cp {
		t.Errorf("a note with the key's signature line appended: %+v, %v", got, err)
	}

	altered := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if bytes.Equal(altered, signed) {
		t.Fatal("the size is not in the note")
	}
	// A signature line naming the key, with bytes that are no signature.
	forged := append([]byte(cp.Text()+"\n"), fmt.Sprintf("— %s %s\n", k.Verifier.Name(),
		base64.StdEncoding.EncodeToString(append(be32(k.Verifier.KeyHash()), make([]byte, 64)...)))...)

	for _, c := range []struct {
		name   string
		signed []byte
		why    string
	}{
		{"signed by another key", sign(t, another, cp), "not signed by"},
		{"signed by a key of the same name (another key hash)", sign(t, sameName, cp), fmt.Sprintf("%08x", sameName.Verifier.KeyHash())},
		{"signed by a key of another name", sign(t, otherName, cp), "other.example"},
		{"altered after signing", altered, "invalid"},
		{"a forged signature", forged, "invalid"},
	} {
		got, err := OpenCheckpoint(c.signed, k.Verifier)
		if !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %+v, %v; want ErrSignature", c.name, got, err)
		} else if !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v; want it to say %q", c.name, err, c.why)
		}
	}
	if sameName.Verifier.KeyHash() == k.Verifier.KeyHash() {
		t.Fatal("two generated keys have the same key hash")
	}

	// Not a note at all.
	for _, bad := range []string{"", "opsgate/T\n5\n", cp.Text(), string(signed[:len(signed)-1])} {
		if _, err := OpenCheckpoint([]byte(bad), k.Verifier); err == nil || errors.Is(err, ErrSignature) {
			t.Errorf("%q: %v; want a malformed note", bad, err)
		}
	}

	// A properly signed note that is not a checkpoint.
	for _, c := range []struct{ text, why string }{
		{"opsgate/T\n007\n" + base64.StdEncoding.EncodeToString(cp.Root[:]) + "\n", "second line"},
		{"opsgate/T\n7\nroot\n", "third line"},
		{"opsgate/T\n7\n", "a checkpoint has"},
	} {
		signed, err := note.Sign(&note.Note{Text: c.text}, k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenCheckpoint(signed, k.Verifier)
		if err == nil || errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("a signed note %q: %+v, %v; want a parse error naming %q", c.text, got, err, c.why)
		}
	}
}

func be32(x uint32) []byte { return []byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)} }

// TestCheckpointKeys checks ParseKey and NewVerifier on many keys: a
// key's base64 holds a '+' about half the time, so one key proves little.
func TestCheckpointKeys(t *testing.T) {
	dir := t.TempDir()
	cp := Checkpoint{Origin: "opsgate/" + testTenant, Size: 9, Root: testRoot(9)}
	var parseFailed, verifierFailed []string
	const keys = 16
	for seed := range byte(keys) {
		skey, vkey, err := note.GenerateKey(rand.NewChaCha8([32]byte{seed, 'k', 'e', 'y'}), "opsgate.example")
		if err != nil {
			t.Fatal(err)
		}
		// A key file usually ends with a newline.
		k, err := ParseKey(skey + "\n")
		if err != nil {
			parseFailed = append(parseFailed, fmt.Sprintf("ParseKey(%q): %v", skey, err))
		} else {
			if k.VerifierKey != vkey || k.Verifier.Name() != "opsgate.example" || k.Signer.KeyHash() != k.Verifier.KeyHash() {
				t.Errorf("ParseKey(%q) derives %q (name %q), GenerateKey said %q", skey, k.VerifierKey, k.Verifier.Name(), vkey)
			}
			signed := sign(t, k, cp)
			if got, err := OpenCheckpoint(signed, k.Verifier); err != nil || got != cp {
				t.Errorf("ParseKey(%q): its verifier does not open what its signer signs: %+v, %v", skey, got, err)
			}
		}

		file := filepath.Join(dir, fmt.Sprintf("audit-%d.vkey", seed))
		if err := os.WriteFile(file, []byte(vkey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		signer, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := note.Sign(&note.Note{Text: cp.Text()}, signer)
		if err != nil {
			t.Fatal(err)
		}
		for _, keyOrFile := range []string{vkey, file} {
			v, err := NewVerifier(keyOrFile)
			if err != nil {
				verifierFailed = append(verifierFailed, fmt.Sprintf("NewVerifier(%q): %v", keyOrFile, err))
				continue
			}
			if got, err := OpenCheckpoint(signed, v); err != nil || got != cp {
				t.Errorf("NewVerifier(%q) opens %+v, %v", keyOrFile, got, err)
			}
		}
	}
	// A key's base64 holds a '+' about half the time.
	if len(parseFailed) > 0 {
		t.Errorf("ParseKey refuses %d of %d valid keys, e.g. %s", len(parseFailed), keys, parseFailed[0])
	}
	if len(verifierFailed) > 0 {
		t.Errorf("NewVerifier refuses %d of %d valid verifier keys, e.g. %s", len(verifierFailed), keys, verifierFailed[0])
	}

	skey, _, err := GenerateKey("opsgate.example")
	if err != nil || !strings.HasPrefix(skey, "PRIVATE+KEY+opsgate.example+") {
		t.Fatalf("GenerateKey: %q, %v", skey, err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "garbage", "a+b+c", "opsgate.example+12345678+AQID", skey, garbage, filepath.Join(dir, "missing")} {
		if v, err := NewVerifier(bad); err == nil {
			t.Errorf("NewVerifier(%q) = %v, want an error", bad, v.Name())
		}
	}
	for _, bad := range []string{"", "garbage", "opsgate.example+12345678+AQID", "PRIVATE+KEY+x+12345678+AQID"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q): want an error", bad)
		}
	}
}

// testLines returns a chain of n events of tenant, their data salted.
func testLines(t *testing.T, n int, tenant, salt string) []Line {
	t.Helper()
	prev := ZeroHash
	var lines []Line
	for i := 1; i <= n; i++ {
		l := Line{Seq: int64(i), PrevHash: prev, Record: Record{
			Position: int64(100 + 3*i), EventID: fmt.Sprintf("01JEVENT%018d", i), Stream: "run-" + salt, Version: int64(i),
			Type: "StepFinished", SchemaVersion: 1, RecordedAt: time.Date(2026, 3, 1, 12, 0, i, 1000*i, time.UTC),
			Data:     json.RawMessage(fmt.Sprintf(`{"n":%d,"salt":%q}`, i, salt)),
			Metadata: Metadata{Actor: "U", TenantID: tenant, CorrelationID: "C", RequestID: "R"},
		}}
		sum, err := l.Sum()
		if err != nil {
			t.Fatal(err)
		}
		l.Hash, prev = sum, sum
		lines = append(lines, l)
	}
	return lines
}

// treeOf builds the tree of lines, keeping every stored hash.
func treeOf(t *testing.T, lines []Line) *storedTree {
	t.Helper()
	tree := newStoredTree()
	for _, l := range lines {
		hash, err := hex.DecodeString(l.Hash)
		if err != nil {
			t.Fatal(err)
		}
		tree.add(t, LeafHash(hash))
	}
	return tree
}

func ndjson(t *testing.T, lines []Line) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	return &b
}

func TestVerifyProof(t *testing.T) {
	const n = 13
	k := testKey(t, "opsgate.example", 1)
	lines := testLines(t, n, testTenant, "a")
	tree := treeOf(t, lines)
	cp := Checkpoint{Origin: "opsgate/" + testTenant, Size: n, Root: tree.b.Root()}
	signed := string(sign(t, k, cp))

	proofOf := func(seq int64, size int64, checkpoint string) Proof {
		hashes, err := tlog.ProveRecord(size, seq-1, tree)
		if err != nil {
			t.Fatal(err)
		}
		event, err := json.Marshal(lines[seq-1])
		if err != nil {
			t.Fatal(err)
		}
		return Proof{Event: event, LeafIndex: seq - 1, TreeSize: size, Hashes: hashes, Checkpoint: checkpoint}
	}
	encode := func(p Proof) []byte {
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}

	// Every event's proof verifies, against the latest checkpoint and an
	// earlier one.
	const k5 = 5
	cp5 := Checkpoint{Origin: cp.Origin, Size: k5, Root: mustTreeHash(t, k5, tree)}
	signed5 := string(sign(t, k, cp5))
	for seq := int64(1); seq <= n; seq++ {
		if got, err := VerifyProof(encode(proofOf(seq, n, signed)), k.Verifier); err != nil || got != cp {
			t.Errorf("the proof of seq %d: %+v, %v", seq, got, err)
		}
		if seq <= k5 {
			if got, err := VerifyProof(encode(proofOf(seq, k5, signed5)), k.Verifier); err != nil || got != cp5 {
				t.Errorf("the proof of seq %d at size %d: %+v, %v", seq, k5, got, err)
			}
		}
	}

	const seq = 6
	good := proofOf(seq, n, signed)
	other := testKey(t, "other.example", 3)
	otherTenant := Checkpoint{Origin: "opsgate/01JZZZZZZZZZZZZZZZZZZZZZZZ", Size: n, Root: cp.Root}
	tenantPrefix := Checkpoint{Origin: "opsgate/X" + testTenant, Size: n, Root: cp.Root}
	for _, c := range []struct {
		name   string
		change func(p *Proof)
		why    string
	}{
		{"altered data", func(p *Proof) {
			p.Event = bytes.Replace(p.Event, []byte(`"n":6`), []byte(`"n":7`), 1)
		}, "does not hash"},
		{"an altered tenant", func(p *Proof) {
			p.Event = bytes.Replace(p.Event, []byte(testTenant), []byte("01JZZZZZZZZZZZZZZZZZZZZZZZ"), 1)
		}, "origin"},
		{"another leaf index", func(p *Proof) { p.LeafIndex++ }, "leaf"},
		{"the leaf index of the seq", func(p *Proof) { p.LeafIndex = seq }, "leaf"},
		{"another event (its own leaf index) with this proof", func(p *Proof) {
			q := proofOf(seq+1, n, signed)
			p.Event, p.LeafIndex = q.Event, q.LeafIndex
		}, "not in that tree"},
		{"a checkpoint of another tenant", func(p *Proof) { p.Checkpoint = string(sign(t, k, otherTenant)) }, "origin"},
		{"a checkpoint of a tenant ending in this one", func(p *Proof) { p.Checkpoint = string(sign(t, k, tenantPrefix)) }, "origin"},
		{"a tree size not the checkpoint's", func(p *Proof) { p.TreeSize = n - 1 }, "leaves"},
		{"the proof at another size", func(p *Proof) {
			hashes, err := tlog.ProveRecord(n-1, seq-1, tree)
			if err != nil {
				t.Fatal(err)
			}
			p.Hashes = hashes
		}, "not in that tree"},
		{"a checkpoint signed by another key", func(p *Proof) { p.Checkpoint = string(sign(t, other, cp)) }, "not signed by"},
		{"a checkpoint altered after signing", func(p *Proof) {
			p.Checkpoint = strings.Replace(p.Checkpoint, fmt.Sprintf("\n%d\n", n), fmt.Sprintf("\n%d\n", n+1), 1)
			p.TreeSize = n + 1
		}, "not signed by"},
		{"a truncated hashes list", func(p *Proof) { p.Hashes = p.Hashes[:len(p.Hashes)-1] }, "not in that tree"},
		{"no hashes", func(p *Proof) { p.Hashes = nil }, "not in that tree"},
		{"an altered hash", func(p *Proof) {
			p.Hashes = append([]tlog.Hash(nil), p.Hashes...)
			p.Hashes[0][0] ^= 1
		}, "not in that tree"},
		{"an event without hash", func(p *Proof) {
			l := lines[seq-1]
			l.Hash = ""
			p.Event, _ = json.Marshal(l)
		}, "no hash"},
		{"no event", func(p *Proof) { p.Event = nil }, "event"},
		{"no checkpoint", func(p *Proof) { p.Checkpoint = "" }, "not a proof"},
	} {
		p := good
		c.change(&p)
		got, err := VerifyProof(encode(p), k.Verifier)
		if err == nil {
			t.Errorf("%s: verified %+v", c.name, got)
		} else if !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v; want it to say %q", c.name, err, c.why)
		}
		if strings.Contains(c.why, "not signed by") && !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v; want ErrSignature", c.name, err)
		}
	}

	for _, raw := range []string{"", "garbage", "{", `[]`, `{"event": 5}`, `{}`} {
		if got, err := VerifyProof([]byte(raw), k.Verifier); err == nil {
			t.Errorf("%q: verified %+v", raw, got)
		}
	}
}

func mustTreeHash(t *testing.T, size int64, r tlog.HashReader) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(size, r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestVerifyFileCheckpoint(t *testing.T) {
	const n = 11
	lines := testLines(t, n, testTenant, "a")
	tree := treeOf(t, lines)
	origin := "opsgate/" + testTenant
	at := func(size int64) Checkpoint {
		return Checkpoint{Origin: origin, Size: size, Root: mustTreeHash(t, size, tree)}
	}

	for _, size := range []int64{n, 1, 5, 8, n - 1} {
		v, err := VerifyFileCheckpoint(ndjson(t, lines), at(size))
		if err != nil || v.Events != n || v.LastSeq != n || v.Head != lines[n-1].Hash {
			t.Errorf("the whole export against the checkpoint at %d: %+v, %v", size, v, err)
		}
	}
	// An export that ends at the checkpoint's size.
	if v, err := VerifyFileCheckpoint(ndjson(t, lines[:5]), at(5)); err != nil || v.Events != 5 {
		t.Errorf("an export of 5 events against the checkpoint at 5: %+v, %v", v, err)
	}

	rewritten := testLines(t, n, testTenant, "b")
	otherTree := treeOf(t, rewritten)
	// The same history but for the event of seq 4 (and so the hashes after).
	forked := append(append([]Line(nil), lines[:3]...), testLines(t, n, testTenant, "c")[3:]...)
	forked[3].PrevHash = lines[2].Hash
	for i := 3; i < n; i++ {
		if i > 3 {
			forked[i].PrevHash = forked[i-1].Hash
		}
		forked[i].Hash = ""
		sum, err := forked[i].Sum()
		if err != nil {
			t.Fatal(err)
		}
		forked[i].Hash = sum
	}
	if _, err := VerifyFile(ndjson(t, forked)); err != nil {
		t.Fatalf("the forked chain is a valid chain: %v", err)
	}

	for _, c := range []struct {
		name  string
		lines []Line
		cp    Checkpoint
		seq   int64
	}{
		{"a checkpoint of another history", lines, Checkpoint{Origin: origin, Size: n, Root: mustTreeHash(t, n, otherTree)}, n},
		{"a checkpoint of another history at 3", lines, Checkpoint{Origin: origin, Size: 3, Root: mustTreeHash(t, 3, otherTree)}, 3},
		{"a history forked at seq 4, before the checkpoint's size", forked, at(n), n},
		{"a root altered", lines, func() Checkpoint { c := at(7); c.Root[5] ^= 1; return c }(), 7},
		{"an export shorter than the checkpoint", lines[:n-2], at(n), n},
		{"an export of one event against a checkpoint at 2", lines[:1], at(2), 2},
	} {
		v, err := VerifyFileCheckpoint(ndjson(t, c.lines), c.cp)
		var m *Mismatch
		if !errors.As(err, &m) {
			t.Errorf("%s: %+v, %v; want a *Mismatch", c.name, v, err)
		} else if m.Seq != c.seq {
			t.Errorf("%s: %v; want it at seq %d", c.name, err, c.seq)
		}
	}
	// A history forked after the checkpoint's size still reaches it.
	if _, err := VerifyFileCheckpoint(ndjson(t, forked), at(3)); err != nil {
		t.Errorf("a history forked after the checkpoint: %v", err)
	}
	// An export that does not start at the first event cannot be checked.
	var m *Mismatch
	if _, err := VerifyFileCheckpoint(ndjson(t, lines[2:]), at(n)); !errors.As(err, &m) {
		t.Errorf("an export from seq 3: %v; want a *Mismatch", err)
	}
}
