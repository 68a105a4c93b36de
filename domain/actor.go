package domain

import "strings"

// Actor is who asks for a change, and in answer to what: every event the
// change records carries it in its metadata.
type Actor struct {
	// ID is a user id, "admin", "worker:<id>" or "system:<part>".
	ID string
	// RequestID is the HTTP request that carried the ask, if any.
	RequestID string
	// CausedBy is the run whose end set off the change, for changes a
	// process manager makes in reaction to an event.
	CausedBy string
	// Via is the integration a user's request came through
	// ("integration:<id>"; "" when the user asked directly), recorded with
	// every event of the request.
	Via string
	// Workspace, for a request through an integration, is the only
	// workspace whose tenants exist for it ("" for no such limit).
	Workspace string
}

// ViaIntegration is the Via of a request through integration id.
func ViaIntegration(id string) string { return "integration:" + id }

// IntegrationOf returns the integration id of a Via, and whether it names
// one.
func IntegrationOf(via string) (string, bool) { return strings.CutPrefix(via, "integration:") }

// Sees reports whether a tenant of workspace exists for the actor: always,
// unless the actor is limited to another workspace (a request through an
// integration). Every authorization applies it beside the membership.
func (a Actor) Sees(workspace string) bool { return a.Workspace == "" || a.Workspace == workspace }

// ActorSystem returns the actor of a change the service makes on its own
// (part: "reaper", say).
func ActorSystem(part string) Actor { return Actor{ID: "system:" + part} }

// ActorWorker returns the actor of a built-in worker with id.
func ActorWorker(id string) Actor { return Actor{ID: "worker:" + id} }

// ActorAdmin is the holder of the admin token.
var ActorAdmin = Actor{ID: "admin"}
