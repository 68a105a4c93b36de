package domain

// Consent is the state of a provider connection's admin consent.
type Consent string

// Consent states of a provider connection.
const (
	ConsentGranted Consent = "granted"
	ConsentMissing Consent = "missing"
	ConsentRevoked Consent = "revoked"
)

// ParseConsent returns the consent state named s.
func ParseConsent(s string) (Consent, bool) {
	switch c := Consent(s); c {
	case ConsentGranted, ConsentMissing, ConsentRevoked:
		return c, true
	}
	return "", false
}

// Credentials is the state of a provider connection's credentials.
type Credentials string

// Credential states of a provider connection.
const (
	CredentialsValid   Credentials = "valid"
	CredentialsExpired Credentials = "expired"
	CredentialsInvalid Credentials = "invalid"
	CredentialsMissing Credentials = "missing"
)

// ParseCredentials returns the credentials state named s.
func ParseCredentials(s string) (Credentials, bool) {
	switch c := Credentials(s); c {
	case CredentialsValid, CredentialsExpired, CredentialsInvalid, CredentialsMissing:
		return c, true
	}
	return "", false
}

// ConnectionReadiness is what the preflight knows of a connection.
type ConnectionReadiness struct {
	Enabled     bool
	Consent     Consent
	Credentials Credentials
	// Executable is whether an executor (or the built-in worker) runs the
	// operation for the connection's provider.
	Executable bool
}

// RestoreReadiness is what the preflight knows of a restore run.
type RestoreReadiness struct {
	Previewed bool
}

// Preflight returns the reason op may not be queued, or "" when it may.
// conn is nil when no connection could be resolved; restore is nil for
// operations without a restore target. Reasons are checked in a fixed
// order: resolution, then the connection's state, then the target's.
func Preflight(op Operation, conn *ConnectionReadiness, restore *RestoreReadiness) ReasonCode {
	if conn == nil {
		return ReasonMissingDefault
	}
	for _, p := range op.Prerequisites {
		switch p {
		case NeedsConnectionEnabled:
			if !conn.Enabled {
				return ReasonDisabled
			}
		case NeedsConsent:
			if conn.Consent != ConsentGranted {
				return ReasonConsentMissing
			}
		case NeedsValidCredentials:
			if conn.Credentials != CredentialsValid {
				return ReasonCredentialsInvalid
			}
		case NeedsExecutor:
			if !conn.Executable {
				return ReasonNoExecutor
			}
		case NeedsRestorePreview:
			if restore == nil || !restore.Previewed {
				return ReasonPreviewRequired
			}
		}
	}
	return ""
}
