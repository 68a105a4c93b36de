package domain

// StreamID names an event stream; the stream is also the name of the
// transaction lock that serialises changes to what it records.
type StreamID string

func (s StreamID) String() string { return string(s) }

// Streams of the write side, one per aggregate.
func WorkspaceStream(id string) StreamID  { return StreamID("workspace-" + id) }
func TenantStream(id string) StreamID     { return StreamID("tenant-" + id) }
func UserStream(id string) StreamID       { return StreamID("user-" + id) }
func ConnectionStream(id string) StreamID { return StreamID("connection-" + id) }
func RestoreRunStream(id string) StreamID { return StreamID("restore-run-" + id) }
func OnboardingStream(id string) StreamID { return StreamID("onboarding-" + id) }

// Stream is the stream of the scope's decisions.
func (s ScopeID) Stream() StreamID { return StreamID(s) }

func (s ScopeID) String() string { return string(s) }
