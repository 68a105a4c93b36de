package domain

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
}

// ActorSystem returns the actor of a change the service makes on its own
// (part: "reaper", say).
func ActorSystem(part string) Actor { return Actor{ID: "system:" + part} }

// ActorWorker returns the actor of a built-in worker with id.
func ActorWorker(id string) Actor { return Actor{ID: "worker:" + id} }

// ActorAdmin is the holder of the admin token.
var ActorAdmin = Actor{ID: "admin"}
