package domain

// Consent states of a provider connection.
const (
	ConsentGranted = "granted"
	ConsentMissing = "missing"
	ConsentRevoked = "revoked"
)

// Credential states of a provider connection.
const (
	CredentialsValid   = "valid"
	CredentialsExpired = "expired"
	CredentialsInvalid = "invalid"
	CredentialsMissing = "missing"
)

// ConnectionReadiness is what the preflight knows of a connection.
type ConnectionReadiness struct {
	Enabled     bool
	Consent     string
	Credentials string
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
		case NeedsRestorePreview:
			if restore == nil || !restore.Previewed {
				return ReasonPreviewRequired
			}
		}
	}
	return ""
}
