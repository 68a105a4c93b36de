package domain

// StreamID names an event stream; the stream is also the name of the
// transaction lock that serialises changes to what it records.
type StreamID string

func (s StreamID) String() string { return string(s) }

// The streams of the write side, one per aggregate.

// WorkspaceStream is the stream of workspace id.
func WorkspaceStream(id string) StreamID { return StreamID("workspace-" + id) }

// TenantStream is the stream of tenant id.
func TenantStream(id string) StreamID { return StreamID("tenant-" + id) }

// UserStream is the stream of user id.
func UserStream(id string) StreamID { return StreamID("user-" + id) }

// ConnectionStream is the stream of provider connection id.
func ConnectionStream(id string) StreamID { return StreamID("connection-" + id) }

// RestoreRunStream is the stream of restore run id.
func RestoreRunStream(id string) StreamID { return StreamID("restore-run-" + id) }

// OnboardingStream is the stream of onboarding session id.
func OnboardingStream(id string) StreamID { return StreamID("onboarding-" + id) }

// Stream is the stream of the scope's decisions.
func (s ScopeID) Stream() StreamID { return StreamID(s) }

func (s ScopeID) String() string { return string(s) }
