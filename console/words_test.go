package console

import (
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// TestEveryReasonAndSurfaceHasALabel: the console names every reason of
// the catalog and every surface in words, never by its code.
func TestEveryReasonAndSurfaceHasALabel(t *testing.T) {
	for _, code := range domain.ReasonCodes() {
		if l := domain.ReasonLabel(code); l == "" || strings.ContainsAny(l, "_.") {
			t.Errorf("reason %s is labelled %q", code, l)
		}
	}
	names := []string{domain.RerunSurfaceName}
	for _, s := range domain.Surfaces() {
		names = append(names, s.Name)
	}
	for _, name := range names {
		if l := surfaceLabel(name); l == "" || strings.ContainsAny(l, "_.") || l == name {
			t.Errorf("surface %s is labelled %q", name, l)
		}
	}
	blocked := domain.MustReason(domain.ReasonConsentMissing)
	cancelled := domain.MustReason(domain.ReasonCancelled)
	timedOut := domain.MustReason(domain.ReasonTimedOut)
	for _, c := range []struct {
		run  domain.Run
		want string
	}{
		{domain.Run{Status: domain.StatusSucceeded}, "Accepted"},
		{domain.Run{Status: domain.StatusBlocked, Reason: &blocked}, "Blocked: consent missing"},
		{domain.Run{Status: domain.StatusCancelled, Reason: &cancelled}, "Cancelled by an operator"},
		{domain.Run{Status: domain.StatusFailed, Reason: &timedOut}, "Failed: timed out"},
	} {
		if got := runOutcome(c.run); got != c.want {
			t.Errorf("the outcome of a %s run reads %q, want %q", c.run.Status, got, c.want)
		}
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for d, want := range map[time.Duration]string{time.Second: "just now", 42 * time.Second: "42 s ago", 2*time.Minute + 10*time.Second: "2 min ago", 5 * time.Hour: "5 h ago"} {
		if got := ago(now.Add(-d), now); got != want {
			t.Errorf("%v ago reads %q, want %q", d, got, want)
		}
	}
	if got := surfaceNote(domain.SurfaceInventorySync.Name, "Inventory sync"); got != "" {
		t.Errorf("a surface that repeats the run's label is noted %q", got)
	}
	if got := surfaceNote(domain.RerunSurfaceName, "Inventory sync"); got != " · Run again" {
		t.Errorf("a rerun is noted %q", got)
	}
}
