package domain

import "strings"

// reasonLabels are the reasons' short names, as a table cell or a line
// under a button shows them ("Blocked: consent missing"); the reason's
// sentence is its catalog message. Every surface of the console and the
// platform names reasons and surfaces with these words, never by code.
var reasonLabels = map[ReasonCode]string{
	ReasonMissingDefault:      "no default connection",
	ReasonDisabled:            "connection disabled",
	ReasonConsentMissing:      "consent missing",
	ReasonCredentialsInvalid:  "credentials invalid",
	ReasonPreviewRequired:     "preview required",
	ReasonNoExecutor:          "no executor",
	ReasonCredentialsRejected: "credentials rejected",
	ReasonConsentRevoked:      "consent revoked",
	ReasonThrottled:           "provider throttled",
	ReasonUnavailable:         "provider unreachable",
	ReasonExecutionLost:       "executor lost",
	ReasonNotPickedUp:         "not picked up",
	ReasonTimedOut:            "timed out",
	ReasonCancelled:           "cancelled by an operator",
	ReasonDeduped:             "already running",
	ReasonScopeBusy:           "connection busy",
}

// ReasonLabel is reason code's short name; a code the console does not
// know is named by its last part in words.
func ReasonLabel(code ReasonCode) string {
	if l, ok := reasonLabels[code]; ok {
		return l
	}
	s := string(code)
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		s = s[i+1:]
	}
	return strings.ReplaceAll(s, "_", " ")
}

// SurfaceLabel is where a start came from, in words: the button's label
// ("Verify tenant", "Inventory sync"), "Run again" for a rerun.
func SurfaceLabel(name string) string {
	switch name {
	case SurfaceTenantVerification.Name:
		return "Verify tenant"
	case RerunSurfaceName:
		return "Run again"
	case SurfaceOnboardingVerification.Name:
		return "Onboarding verification"
	case SurfaceOnboardingBootstrap.Name:
		return "Onboarding bootstrap"
	}
	if s, ok := LookupSurface(name); ok && s.Operation != "" {
		return MustOperation(s.Operation).Label
	}
	return strings.ReplaceAll(name, "_", " ")
}
