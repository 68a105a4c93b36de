// Package changes holds the change feed of contract section 14: what
// happened to runs and connections, as a platform follows it, derived
// from the event log by one consumer (Consumer) and read in commit order
// (Reader), page by page, by long poll or as server-sent events. Webhook
// endpoints follow the same changes (package webhooks).
package changes

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
)

// The types of change (contract section 14).
const (
	RunAccepted               = "run.accepted"
	RunDeduped                = "run.deduped"
	RunScopeBusy              = "run.scope_busy"
	RunBlocked                = "run.blocked"
	RunStarted                = "run.started"
	RunSucceeded              = "run.succeeded"
	RunFailed                 = "run.failed"
	RunCancelled              = "run.cancelled"
	ConnectionReadinessChange = "connection.readiness_changed"
)

// Types lists every type of change.
func Types() []string {
	return []string{RunAccepted, RunDeduped, RunScopeBusy, RunBlocked, RunStarted, RunSucceeded, RunFailed, RunCancelled,
		ConnectionReadinessChange}
}

// IsType reports whether t names a type of change.
func IsType(t string) bool { return slices.Contains(Types(), t) }

// Change is one change as the feed and webhooks carry it. Run and
// Connection are their subject as of the change; for run.deduped and
// run.scope_busy, Run is the run the start was answered with and
// InitiatorID who asked.
type Change struct {
	ID          string          `json:"id"`
	Cursor      string          `json:"cursor"`
	Type        string          `json:"type"`
	OccurredAt  time.Time       `json:"occurred_at"`
	TenantID    string          `json:"tenant_id"`
	Run         json.RawMessage `json:"run"`
	Connection  json.RawMessage `json:"connection"`
	InitiatorID *string         `json:"initiator_id"`
}

// Cursor is the cursor of the change of sequence number seq: fixed-width,
// so that cursors order as strings as they do as numbers.
func Cursor(seq int64) string { return fmt.Sprintf("%016x", seq) }

// ParseCursor returns the sequence number of cursor.
func ParseCursor(cursor string) (int64, error) {
	if len(cursor) != 16 {
		return 0, fmt.Errorf("cursor %q is not a cursor of this feed", cursor)
	}
	seq, err := strconv.ParseInt(cursor, 16, 64)
	if err != nil || seq < 0 {
		return 0, fmt.Errorf("cursor %q is not a cursor of this feed", cursor)
	}
	return seq, nil
}

// subjects are the runs and connections as the consumer folded them.
type subjects struct {
	runs  map[string]*domain.Run
	conns map[string]*connections.Connection
}

// derived is a change before it has a sequence number.
type derived struct {
	id, tenant, typ string
	at              time.Time
	runID           string
	run, conn       []byte
	initiator       *string
}

// change is d as the feed answers it, numbered seq.
func (d derived) change(seq int64) Change {
	c := Change{ID: d.id, Cursor: Cursor(seq), Type: d.typ, OccurredAt: d.at.UTC().Truncate(time.Microsecond), TenantID: d.tenant,
		Run: null, Connection: null, InitiatorID: d.initiator}
	if d.run != nil {
		c.Run = d.run
	}
	if d.conn != nil {
		c.Connection = d.conn
	}
	return c
}

// null is the JSON of an absent subject.
var null = json.RawMessage("null")

// derive folds event e (recorded by actor at at) into s and returns the
// change it makes, if any.
func (s *subjects) derive(id string, at time.Time, actor string, e domain.Event) (derived, bool) {
	d := derived{id: id, at: at}
	withRun := func(typ string, r *domain.Run, initiator string) (derived, bool) {
		if r == nil {
			return d, false
		}
		d.typ, d.tenant, d.runID = typ, r.TenantID, r.ID
		d.run, _ = json.Marshal(r)
		if initiator != "" {
			d.initiator = &initiator
		}
		return d, true
	}
	switch ev := e.(type) {
	case domain.StartAccepted, domain.StartBlocked:
		run, _ := domain.RunOf(ev)
		s.runs[run.ID] = &run
		typ := RunAccepted
		if _, blocked := ev.(domain.StartBlocked); blocked {
			typ = RunBlocked
		}
		return withRun(typ, &run, run.InitiatorID)
	case domain.StartDeduped:
		return withRun(RunDeduped, s.runs[ev.RunID], ev.InitiatorID)
	case domain.StartScopeBusy:
		return withRun(RunScopeBusy, s.runs[ev.RunID], ev.InitiatorID)
	case domain.RunEvent:
		id := ev.Ref().RunID
		r := s.runs[id]
		if r == nil {
			// Folded before its start (not expected): from the event alone.
			ended, ok := domain.Ended(ev)
			if !ok {
				return d, false
			}
			r = &ended
		} else {
			next := r.Apply(ev)
			r = &next
		}
		s.runs[id] = r
		typ := map[string]string{"RunStarted": RunStarted, "RunSucceeded": RunSucceeded, "RunFailed": RunFailed,
			"RunCancelled": RunCancelled}[e.EventType()]
		return withRun(typ, r, "")
	}
	ids := connectionsOf(e)
	if len(ids) == 0 {
		return d, false
	}
	var changed *connections.Connection
	for _, cid := range ids {
		before := s.conns[cid]
		var c connections.Connection
		if before != nil {
			c = *before
		}
		c = c.Apply(e, actor)
		if c.ID == "" {
			continue
		}
		s.conns[cid] = &c
		if before != nil && *before.Readiness() != *c.Readiness() {
			changed = &c
		}
	}
	if changed == nil {
		return d, false
	}
	d.typ, d.tenant = ConnectionReadinessChange, changed.TenantID
	d.conn, _ = json.Marshal(changed)
	return d, true
}

// connectionsOf returns the connections event e changes.
func connectionsOf(e domain.Event) []string {
	switch ev := e.(type) {
	case domain.ProviderConnectionCreated:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionRenamed:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionConsentChanged:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionCredentialsChanged:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionVerified:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionEnabledChanged:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionSimulationChanged:
		return []string{ev.ConnectionID}
	case domain.ProviderConnectionMadeDefault:
		if ev.PreviousID != "" {
			return []string{ev.ConnectionID, ev.PreviousID}
		}
		return []string{ev.ConnectionID}
	}
	return nil
}

// subjectsOf returns the run and the connections whose state event e
// needs (those it creates excepted).
func subjectsOf(e domain.Event) (run string, conns []string) {
	switch ev := e.(type) {
	case domain.StartDeduped:
		return ev.RunID, nil
	case domain.StartScopeBusy:
		return ev.RunID, nil
	case domain.RunEvent:
		return ev.Ref().RunID, nil
	case domain.ProviderConnectionCreated:
		return "", nil
	}
	return "", connectionsOf(e)
}
