package console

import (
	"fmt"
	"strings"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// The console speaks the operator's language: reasons, surfaces and
// outcomes by their labels, never by their codes. Codes and HTTP statuses
// are shown for support only, inside a "Details for support" element.

// reasonLabel and surfaceLabel are the domain's words for a reason and
// a surface (domain.ReasonLabel, domain.SurfaceLabel).
func reasonLabel(code domain.ReasonCode) string { return domain.ReasonLabel(code) }
func surfaceLabel(name string) string           { return domain.SurfaceLabel(name) }

// startLabel is a start button's words: the surface's label.
func startLabel(s domain.Surface) string { return surfaceLabel(s.Name) }

// surfaceNote is " · <surface>" when the surface says more than the run's
// own label ("Ana · Verify tenant", "Ana · Run again"), "" when it would
// repeat it ("Ana", for an inventory sync started as one).
func surfaceNote(surface, runLabel string) string {
	if l := surfaceLabel(surface); l != runLabel {
		return " · " + l
	}
	return ""
}

// outcomeLabel is an outcome as the presenter's titles word it.
func outcomeLabel(o domain.Outcome) string {
	switch o {
	case domain.OutcomeAccepted:
		return "Accepted"
	case domain.OutcomeDeduped:
		return "Deduped: already running"
	case domain.OutcomeScopeBusy:
		return "Not started: scope busy"
	case domain.OutcomeBlocked:
		return "Blocked"
	}
	return strings.ReplaceAll(string(o), "_", " ")
}

// runOutcome is the Operations view's Outcome cell: how the start was
// decided, or why the run ended ("Blocked: consent missing", "Failed:
// timed out", "Cancelled by an operator").
func runOutcome(r domain.Run) string {
	if r.Reason == nil {
		return "Accepted"
	}
	label := reasonLabel(r.Reason.Code)
	status := string(r.Status)
	if strings.HasPrefix(label, status) {
		return upperFirst(label)
	}
	return upperFirst(status) + ": " + label
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// ago is how long before now t was, in words ("12 s ago", "2 min ago").
func ago(t time.Time, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return "on " + t.UTC().Format("2006-01-02")
}

// stepsBesides is steps without those that link to run id: a run's own
// page does not offer "View the run".
func stepsBesides(steps []domain.NextStep, id string) []domain.NextStep {
	self := domain.RunHref(id)
	out := make([]domain.NextStep, 0, len(steps))
	for _, s := range steps {
		if s.Href != nil && *s.Href == self {
			continue
		}
		out = append(out, s)
	}
	return out
}
