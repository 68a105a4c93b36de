package domain

import (
	"strconv"
	"strings"
)

// ReasonCode identifies why a start was blocked or a run failed.
type ReasonCode string

// Reason codes of contract section 6.
const (
	ReasonMissingDefault      ReasonCode = "provider_connection.missing_default"
	ReasonDisabled            ReasonCode = "provider_connection.disabled"
	ReasonConsentMissing      ReasonCode = "provider_connection.consent_missing"
	ReasonCredentialsInvalid  ReasonCode = "provider_connection.credentials_invalid"
	ReasonPreviewRequired     ReasonCode = "restore_run.preview_required"
	ReasonNoExecutor          ReasonCode = "provider.no_executor"
	ReasonCredentialsRejected ReasonCode = "provider.credentials_rejected"
	ReasonConsentRevoked      ReasonCode = "provider.consent_revoked"
	ReasonThrottled           ReasonCode = "provider.throttled"
	ReasonUnavailable         ReasonCode = "provider.unavailable"
	ReasonExecutionLost       ReasonCode = "execution.lost"
	ReasonNotPickedUp         ReasonCode = "execution.not_picked_up"
	ReasonTimedOut            ReasonCode = "execution.timed_out"
	ReasonCancelled           ReasonCode = "operation.cancelled"
	// ReasonDeduped and ReasonScopeBusy explain the two answers that point
	// at another run; they never end a run.
	ReasonDeduped   ReasonCode = "start.deduped"
	ReasonScopeBusy ReasonCode = "start.scope_busy"
)

// ReasonClass groups reasons that call for the same remedy, whether the
// problem was found before queueing or during execution.
type ReasonClass string

// Reason classes of contract section 6.
const (
	ClassProviderAccess       ReasonClass = "provider_access"
	ClassProviderConsent      ReasonClass = "provider_consent"
	ClassProviderCredentials  ReasonClass = "provider_credentials"
	ClassRestoreReadiness     ReasonClass = "restore_readiness"
	ClassExecutionUnavailable ReasonClass = "execution_unavailable"
	ClassProviderThrottled    ReasonClass = "provider_throttled"
	ClassProviderUnavailable  ReasonClass = "provider_unavailable"
	ClassExecutionInterrupted ReasonClass = "execution_interrupted"
	ClassCancelled            ReasonClass = "cancelled"
	ClassDeduped              ReasonClass = "deduped"
	ClassScopeBusy            ReasonClass = "scope_busy"
)

// Reason is a catalog entry as shown to operators.
type Reason struct {
	Code    ReasonCode  `json:"code"`
	Class   ReasonClass `json:"class"`
	Message string      `json:"message"`
}

// NextStep is one thing an operator can do about an outcome. Href is nil
// where there is no single place to go.
type NextStep struct {
	Label  string  `json:"label"`
	Action string  `json:"action"`
	Href   *string `json:"href"`
}

// stepTemplate is a next step whose href may name a resource of the
// outcome: {connection}, {tenant}, {restore_run}, {run}; its label may
// name the connection's provider: {provider}.
type stepTemplate struct {
	label, action, href string
}

type catalogEntry struct {
	class   ReasonClass
	message string
	steps   []stepTemplate
}

// catalog is the one place where reason texts and remedies are defined.
var catalog = map[ReasonCode]catalogEntry{
	ReasonMissingDefault: {ClassProviderAccess,
		"The tenant has no default provider connection, and none was chosen.",
		[]stepTemplate{
			{"Choose a provider connection or make one the tenant's default", "set_default_connection", "/api/v1/tenants/{tenant}/provider-connections"},
		}},
	ReasonDisabled: {ClassProviderAccess,
		"The provider connection is disabled.",
		[]stepTemplate{{"Enable the provider connection", "enable_connection", "/api/v1/provider-connections/{connection}"}}},
	ReasonConsentMissing: {ClassProviderConsent,
		"Admin consent for the provider connection was never granted or has been revoked.",
		[]stepTemplate{
			{"Grant admin consent for the provider connection", "grant_consent", "/api/v1/provider-connections/{connection}"},
			checkAgain,
		}},
	ReasonCredentialsInvalid: {ClassProviderCredentials,
		"The provider connection's credentials are missing, expired or invalid.",
		[]stepTemplate{
			{"Update the provider connection's credentials", "update_credentials", "/api/v1/provider-connections/{connection}"},
			checkAgain,
		}},
	ReasonNoExecutor: {ClassExecutionUnavailable,
		"No live executor runs this operation for the connection's provider, so nothing would pick it up.",
		[]stepTemplate{{"Register an executor for provider {provider}", "register_executor", "/api/v1/admin/executors"}}},
	ReasonPreviewRequired: {ClassRestoreReadiness,
		"The restore run has not been previewed; a restore is only executed after its preview.",
		[]stepTemplate{{"Preview the restore run", "preview_restore_run", "/api/v1/restore-runs/{restore_run}/preview"}}},
	ReasonCredentialsRejected: {ClassProviderCredentials,
		"The provider rejected the connection's credentials during execution.",
		[]stepTemplate{
			{"Update the provider connection's credentials", "update_credentials", "/api/v1/provider-connections/{connection}"},
			checkAgain,
		}},
	ReasonConsentRevoked: {ClassProviderConsent,
		"The provider reported during execution that admin consent was revoked.",
		[]stepTemplate{
			{"Grant admin consent for the provider connection", "grant_consent", "/api/v1/provider-connections/{connection}"},
			checkAgain,
		}},
	ReasonThrottled: {ClassProviderThrottled,
		"The provider kept throttling requests after every retry.",
		[]stepTemplate{{"Start the operation again later", "retry_later", ""}}},
	ReasonUnavailable: {ClassProviderUnavailable,
		"The provider could not be reached.",
		[]stepTemplate{{"Start the operation again once the provider is reachable", "retry_later", ""}}},
	ReasonExecutionLost: {ClassExecutionInterrupted,
		"The worker running the operation stopped responding; the run was ended so the connection is free again.",
		[]stepTemplate{{"Start the operation again", "retry", ""}}},
	ReasonNotPickedUp: {ClassExecutionUnavailable,
		"No executor claimed the run before its claim deadline; it was ended so the connection is free again.",
		[]stepTemplate{
			{"Check that an executor for provider {provider} is running", "check_executors", "/api/v1/admin/executors"},
			rerun,
		}},
	ReasonTimedOut: {ClassExecutionInterrupted,
		"The run did not finish before its deadline; it was ended so the connection is free again.",
		[]stepTemplate{rerun}},
	ReasonDeduped: {ClassDeduped,
		"An equivalent run of this operation is already queued or running on this provider connection; nothing new was queued.",
		[]stepTemplate{{"Follow the run already in progress", "view_run", "/api/v1/operations/{run}"}}},
	ReasonScopeBusy: {ClassScopeBusy,
		"Another operation is queued or running on this provider connection, and only one may be active at a time; nothing was queued.",
		[]stepTemplate{
			{"View the operation holding the connection", "view_run", "/api/v1/operations/{run}"},
			{"Start again once it has finished", "retry_later", ""},
		}},
	ReasonCancelled: {ClassCancelled,
		"An operator cancelled the operation.",
		[]stepTemplate{{"Start the operation again if it is still needed", "retry", ""}}},
}

// checkAgain is the next step of every readiness problem: once it is
// fixed, the connection check confirms it (and a succeeded check marks the
// connection verified).
var checkAgain = stepTemplate{"Run the connection check again", "run_connection_check", "/api/v1/provider-connections/{connection}/check"}

// rerun is the next step of a run that ended for a passing reason.
var rerun = stepTemplate{"Run the operation again", "rerun", "/api/v1/operations/{run}/rerun"}

// LookupReason returns the catalog entry of code.
func LookupReason(code ReasonCode) (Reason, bool) {
	e, ok := catalog[code]
	if !ok {
		return Reason{}, false
	}
	return Reason{Code: code, Class: e.class, Message: e.message}, true
}

// EndsRuns reports whether code may block a start or end a run; the two
// reasons that only explain an answer pointing at another run may not.
func (c ReasonCode) EndsRuns() bool {
	_, known := catalog[c]
	return known && c != ReasonDeduped && c != ReasonScopeBusy
}

// Reported reports whether an executor may end a run with code: the
// reasons found during execution (not the gate's preflight reasons, the
// reaper's execution.lost or an operator's cancel).
func (c ReasonCode) Reported() bool {
	switch c {
	case ReasonCredentialsRejected, ReasonConsentRevoked, ReasonThrottled, ReasonUnavailable:
		return true
	}
	return false
}

// MustReason returns the catalog entry of a code known at compile time.
func MustReason(code ReasonCode) Reason {
	r, ok := LookupReason(code)
	if !ok {
		panic("domain: reason " + string(code) + " is not in the catalog")
	}
	return r
}

// ReasonCodes lists every code in the catalog.
func ReasonCodes() []ReasonCode {
	codes := make([]ReasonCode, 0, len(catalog))
	for c := range catalog {
		codes = append(codes, c)
	}
	return codes
}

// StepRefs names the resources that next-step links may point at, and
// the provider that labels may name.
type StepRefs struct {
	TenantID, ConnectionID, RestoreRunID, RunID, Provider string
}

// reasonSteps returns the catalog's next steps for code with links filled
// in from refs; a link whose resource is unknown is left out.
func reasonSteps(code ReasonCode, refs StepRefs) []NextStep {
	e := catalog[code]
	steps := make([]NextStep, 0, len(e.steps))
	for _, s := range e.steps {
		label := strings.ReplaceAll(s.label, "{provider}", strconv.Quote(refs.Provider))
		steps = append(steps, NextStep{Label: label, Action: s.action, Href: fillHref(s.href, refs)})
	}
	return steps
}

func fillHref(tmpl string, refs StepRefs) *string {
	if tmpl == "" {
		return nil
	}
	r := strings.NewReplacer("{tenant}", refs.TenantID, "{connection}", refs.ConnectionID,
		"{restore_run}", refs.RestoreRunID, "{run}", refs.RunID)
	for _, p := range []struct{ key, val string }{
		{"{tenant}", refs.TenantID}, {"{connection}", refs.ConnectionID},
		{"{restore_run}", refs.RestoreRunID}, {"{run}", refs.RunID},
	} {
		if strings.Contains(tmpl, p.key) && p.val == "" {
			return nil
		}
	}
	href := r.Replace(tmpl)
	return &href
}
