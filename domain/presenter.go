package domain

import (
	"fmt"
	"strings"
)

// This file is the one presenter: every surface, the run detail and the
// notifications word outcomes and runs through it, in the vocabulary
// accepted / deduped / scope busy / blocked.

// PresentStart builds the StartResult of a start of the operation labelled
// requested that ended in outcome; run is the run the answer points at
// (the new, the equivalent active, the scope-holding or the blocked run).
func PresentStart(requested string, outcome Outcome, run Run) StartResult {
	res := StartResult{Outcome: outcome, Run: run}
	where := connectionPhrase(run.ProviderConnection)
	switch outcome {
	case OutcomeAccepted:
		res.Message = Message{
			Title: requested + " accepted",
			Body:  fmt.Sprintf("Queued on %s. A worker will run it against that connection.", where),
			Tone:  ToneSuccess,
		}
		res.NextSteps = []NextStep{viewRun("Follow the run", run.ID)}
	case OutcomeDeduped:
		reason := MustReason(ReasonDeduped)
		res.Reason = &reason
		res.Message = Message{
			Title: requested + " deduped: already " + string(run.Status),
			Body: fmt.Sprintf("An identical %s is already %s on %s (run %s). Nothing new was queued.",
				lowerFirst(run.Label), run.Status, where, run.ID),
			Tone: ToneInfo,
		}
		res.NextSteps = reasonSteps(ReasonDeduped, refsOf(run))
	case OutcomeScopeBusy:
		reason := MustReason(ReasonScopeBusy)
		res.Reason = &reason
		res.Message = Message{
			Title: requested + " not started: scope busy",
			Body: fmt.Sprintf("%s is %s on %s (run %s), and only one operation may be active on a connection at a time. Nothing was queued.",
				run.Label, run.Status, where, run.ID),
			Tone: ToneWarning,
		}
		res.NextSteps = reasonSteps(ReasonScopeBusy, refsOf(run))
	case OutcomeBlocked:
		res.Reason = run.Reason
		res.Message = Message{Title: requested + " blocked", Body: blockedBody(run), Tone: ToneDanger}
		res.NextSteps = stepsFor(run)
	}
	return res
}

// PresentRun words a run's current state for its detail view and for
// notifications.
func PresentRun(run Run) (Message, []NextStep) {
	where := connectionPhrase(run.ProviderConnection)
	switch run.Status {
	case StatusQueued:
		return Message{Title: run.Label + " queued", Body: "Waiting for a worker to run it on " + where + ".", Tone: ToneInfo},
			[]NextStep{viewRun("Follow the run", run.ID)}
	case StatusRunning:
		return Message{Title: run.Label + " running", Body: "Running on " + where + ".", Tone: ToneInfo},
			[]NextStep{viewRun("Follow the run", run.ID)}
	case StatusSucceeded:
		return Message{Title: run.Label + " succeeded", Body: "Finished on " + where + ".", Tone: ToneSuccess},
			[]NextStep{viewRun("View the run", run.ID)}
	case StatusFailed:
		return Message{Title: run.Label + " failed", Body: reasonText(run) + " It ran on " + where + ".", Tone: ToneDanger},
			stepsFor(run)
	case StatusCancelled:
		return Message{Title: run.Label + " cancelled", Body: reasonText(run), Tone: ToneWarning},
			stepsFor(run)
	case StatusBlocked:
		return Message{Title: run.Label + " blocked", Body: blockedBody(run), Tone: ToneDanger}, stepsFor(run)
	}
	return Message{Title: run.Label, Body: "", Tone: ToneInfo}, nil
}

func blockedBody(run Run) string {
	return reasonText(run) + " Nothing was queued."
}

func reasonText(run Run) string {
	if run.Reason == nil {
		return ""
	}
	return run.Reason.Message
}

func stepsFor(run Run) []NextStep {
	if run.Reason == nil {
		return []NextStep{viewRun("View the run", run.ID)}
	}
	return reasonSteps(run.Reason.Code, refsOf(run))
}

func refsOf(run Run) StepRefs {
	refs := StepRefs{TenantID: run.TenantID, RunID: run.ID}
	if run.ProviderConnection != nil {
		refs.ConnectionID, refs.Provider = run.ProviderConnection.ID, run.ProviderConnection.Provider
	}
	if run.Target != nil && run.Type == OpRestoreExecute {
		refs.RestoreRunID = *run.Target
	}
	return refs
}

func viewRun(label, id string) NextStep {
	href := RunHref(id)
	return NextStep{Label: label, Action: "view_run", Href: &href}
}

func connectionPhrase(c *ConnectionRef) string {
	if c == nil {
		return "no provider connection"
	}
	return fmt.Sprintf("provider connection %q (%s)", c.DisplayName, c.Provider)
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
