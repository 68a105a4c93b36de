package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSoakShort runs the short soak (make soak SHORT=1): fewer faults and
// a shorter load than make soak, with every check of the full run.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes about a minute; it is skipped with -short")
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	runSoak(t, shortConfig(filepath.Dir(strings.TrimSpace(string(gomod)))))
}

// runSoak runs the soak of cfg, logs its table, and fails t on any breach.
func runSoak(t *testing.T, cfg config) {
	t.Helper()
	var table strings.Builder
	cfg.out, cfg.progress = &table, testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := soak(ctx, cfg)
	if err != nil {
		t.Fatalf("soak: %v", err)
	}
	t.Log(table.String())
	if n := rep.breaches(); n > 0 {
		t.Fatalf("%d check(s) breached; the table and the logs' location are above", n)
	}
}

// TestFailoverSoakShort runs the short failover soak of both variants
// (make soak FAILOVER=1 SHORT=1): a primary and its synchronous standby,
// the primary killed (then, in a second soak, frozen) and the standby
// promoted, with every check of the full failover soak. The two take
// about two minutes, more than make test affords: it runs only with
// OPSGATE_FAILOVER_SOAK=1 (CI runs make soak FAILOVER=1 SHORT=1 instead).
func TestFailoverSoakShort(t *testing.T) {
	if testing.Short() || os.Getenv("OPSGATE_FAILOVER_SOAK") != "1" {
		t.Skip("the failover soak takes about a minute a variant; OPSGATE_FAILOVER_SOAK=1 runs it")
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	for _, variant := range []string{"kill", "freeze"} {
		t.Run(variant, func(t *testing.T) {
			runSoak(t, failoverConfig(filepath.Dir(strings.TrimSpace(string(gomod))), variant, true))
		})
	}
}

// testLog writes progress lines to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
