package changes

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
)

// TestDerive: given events, the changes they make, each with its subject
// as of that change.
func TestDerive(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	conn := &domain.ConnectionRef{ID: "C1", DisplayName: "Graph", Provider: "graph"}
	start := domain.StartInfo{TenantID: "T1", ScopeID: "connection:C1", Type: "inventory.sync", CanonicalType: "inventory.sync",
		Label: "Inventory sync", Surface: "inventory_sync", InitiatorID: "U1", Connection: conn}
	claimBy := at.Add(15 * time.Minute)
	ref := domain.RunRef{RunID: "R1", ScopeID: "connection:C1", TenantID: "T1", Start: start, CreatedAt: at}
	started := at.Add(time.Second)
	asked := start
	asked.InitiatorID = "U2"
	s := newSubjects()
	steps := []struct {
		event     domain.Event
		want      string // "" for no change
		status    domain.RunStatus
		initiator string
	}{
		{domain.ProviderConnectionCreated{ConnectionID: "C1", TenantID: "T1", Provider: "graph", DisplayName: "Graph",
			Consent: "granted", Credentials: "valid", Enabled: true, At: at}, "", "", ""},
		{domain.StartAccepted{RunID: "R1", StartInfo: start, ClaimBy: &claimBy, At: at}, RunAccepted, domain.StatusQueued, "U1"},
		{domain.StartDeduped{RunID: "R1", StartInfo: asked, At: at}, RunDeduped, domain.StatusQueued, "U2"},
		{domain.StartScopeBusy{RunID: "R1", ActiveType: "inventory.sync", StartInfo: asked, At: at}, RunScopeBusy, domain.StatusQueued, "U2"},
		{domain.RunStarted{RunRef: ref, Epoch: 1, At: started}, RunStarted, domain.StatusRunning, ""},
		{domain.RunSucceeded{RunRef: ref, StartedAt: &started, Epoch: 1, At: at.Add(2 * time.Second)}, RunSucceeded, domain.StatusSucceeded, ""},
		{domain.ProviderConnectionRenamed{ConnectionID: "C1", TenantID: "T1", DisplayName: "Graph (prod)", At: at}, "", "", ""},
		{domain.ProviderConnectionConsentChanged{ConnectionID: "C1", TenantID: "T1", Consent: "revoked", RunID: "R1", At: at}, ConnectionReadinessChange, "", ""},
		{domain.ProviderConnectionConsentChanged{ConnectionID: "C1", TenantID: "T1", Consent: "revoked", At: at}, "", "", ""},
		{domain.ProviderConnectionMadeDefault{ConnectionID: "C1", TenantID: "T1", At: at}, "", "", ""},
		{domain.StartBlocked{RunID: "R2", StartInfo: start, Reason: domain.Reason{Code: "provider_connection.consent_missing"}, At: at}, RunBlocked, domain.StatusBlocked, "U1"},
	}
	for i, step := range steps {
		c, ok := s.derive("E"+string(rune('a'+i)), at, "U1", step.event)
		if step.want == "" {
			if ok {
				t.Errorf("step %d (%s) made %s, want no change", i, step.event.EventType(), c.typ)
			}
			continue
		}
		if !ok || c.typ != step.want || c.tenant != "T1" {
			t.Fatalf("step %d (%s) made %+v, %v; want %s", i, step.event.EventType(), c, ok, step.want)
		}
		if step.want == ConnectionReadinessChange {
			var got struct {
				DisplayName string `json:"display_name"`
				Consent     string `json:"consent"`
				IsDefault   bool   `json:"is_default"`
			}
			if err := json.Unmarshal(c.conn, &got); err != nil || got.Consent != "revoked" || got.DisplayName != "Graph (prod)" || c.run != nil {
				t.Errorf("readiness change carries %s (%v)", c.conn, err)
			}
			continue
		}
		var run domain.Run
		if err := json.Unmarshal(c.run, &run); err != nil || run.Status != step.status {
			t.Errorf("step %d (%s) carries the run %s (%v), want it %s", i, step.event.EventType(), c.run, err, step.status)
		}
		if run.Deadlines == nil || run.Deadlines.ClaimBy != claimBy {
			if step.want != RunBlocked {
				t.Errorf("step %d: the run's deadlines are %+v", i, run.Deadlines)
			}
		}
		if (c.initiator == nil) != (step.initiator == "") || (c.initiator != nil && *c.initiator != step.initiator) {
			t.Errorf("step %d (%s) initiator %v, want %q", i, step.event.EventType(), c.initiator, step.initiator)
		}
	}
}

func TestCursor(t *testing.T) {
	for _, seq := range []int64{0, 1, 9, 10, 255, 1 << 40} {
		got, err := ParseCursor(Cursor(seq))
		if err != nil || got != seq {
			t.Errorf("cursor of %d reads back as %d, %v", seq, got, err)
		}
	}
	if Cursor(9) >= Cursor(10) || Cursor(255) >= Cursor(256) {
		t.Error("cursors do not order as strings as their numbers do")
	}
	for _, bad := range []string{"", "latest", "zzzzzzzzzzzzzzzz", "-000000000000001", "00000000000000001"} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) took it", bad)
		}
	}
}
