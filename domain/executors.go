package domain

import (
	"strings"
	"time"
)

// Executors run accepted work: the platform's own job code over HTTP, or
// the built-in worker. Registration and revocation are events of the
// executor's stream.

// ExecutorRegistered records that an executor may claim runs of Providers (and, when
// set, OperationTypes only).
type ExecutorRegistered struct {
	ExecutorID     string    `json:"executor_id"`
	Name           string    `json:"name"`
	Providers      []string  `json:"providers"`
	OperationTypes []string  `json:"operation_types"`
	At             time.Time `json:"at"`
}

// ExecutorRevoked records that the executor's token no longer works, and the runs it
// held were ended as lost.
type ExecutorRevoked struct {
	ExecutorID string    `json:"executor_id"`
	At         time.Time `json:"at"`
}

func (ExecutorRegistered) EventType() string { return "ExecutorRegistered" }
func (ExecutorRevoked) EventType() string    { return "ExecutorRevoked" }

// ExecutorStream is the stream of an executor's registration.
func ExecutorStream(id string) StreamID { return StreamID("executor-" + id) }

// ExecutorActor is the actor of what an executor records; its id is also
// the worker id of the runs the executor claims.
func ExecutorActor(id string) Actor { return Actor{ID: executorPrefix + id} }

// ExecutorOf returns the executor id of an actor or worker id, and whether
// it is an executor's.
func ExecutorOf(actorID string) (string, bool) { return strings.CutPrefix(actorID, executorPrefix) }

const executorPrefix = "executor:"

// Observations are what a run's executor reports about its connection.
type Observations struct {
	Consent     *Consent     `json:"consent,omitempty"`
	Credentials *Credentials `json:"credentials,omitempty"`
}

// Learned is what a run ending with status (and reason) teaches about the
// readiness of its connection, with the executor's explicit observations:
// a run that failed because consent was revoked revokes it, one whose
// credentials were rejected invalidates them, and a succeeded connection
// check grants consent, validates credentials and verifies the
// connection. Explicit observations win.
func Learned(opType string, status RunStatus, reason ReasonCode, obs Observations) (learned Observations, verified bool) {
	set := func(c Consent, k Credentials) {
		learned.Consent, learned.Credentials = &c, &k
	}
	switch {
	case status == StatusFailed && reason == ReasonConsentRevoked:
		c := ConsentRevoked
		learned.Consent = &c
	case status == StatusFailed && reason == ReasonCredentialsRejected:
		k := CredentialsInvalid
		learned.Credentials = &k
	case status == StatusSucceeded && opType == OpConnectionCheck:
		set(ConsentGranted, CredentialsValid)
		verified = true
	}
	if obs.Consent != nil {
		learned.Consent = obs.Consent
	}
	if obs.Credentials != nil {
		learned.Credentials = obs.Credentials
	}
	return learned, verified
}

// ReadinessChange is what a run changed on its connection: each state it
// moved, from and to, and when it verified the connection.
type ReadinessChange struct {
	Consent     *Change    `json:"consent,omitempty"`
	Credentials *Change    `json:"credentials,omitempty"`
	VerifiedAt  *time.Time `json:"verified_at,omitempty"`
}

// Change is one state's move.
type Change struct {
	From string `json:"from"`
	To   string `json:"to"`
}
