package eventstore_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockKeyWrittenOnce: two writers exclude each other only while they
// compute a stream's lock key the same way, so the key's SQL is written in
// one place, eventstore/lock.go: no other Go file of the module may
// contain it (nor take a transaction advisory lock of its own making).
func TestLockKeyWrittenOnce(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Spelt in two parts, so that this file does not contain them.
	needles := []string{"hashtext" + "extended", "advisory_" + "xact_lock"}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bench") && path != root {
			return filepath.SkipDir // .data, .git; bench/river is a module of its own
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel == filepath.Join("eventstore", "lock.go") {
			return nil
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, needle := range needles {
			if strings.Contains(string(body), needle) {
				t.Errorf("%s contains %q: take stream locks through eventstore.QueueLocks or Tx.Lock", rel, needle)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !t.Failed() {
		body, err := os.ReadFile("lock.go")
		if err != nil || !strings.Contains(string(body), needles[0]) {
			t.Fatalf("eventstore/lock.go does not compute the lock key (%v): the test looks for the wrong text", err)
		}
	}
}
