package gate_test

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/gate"
)

func withKey(req gate.StartRequest, key, hash string) gate.StartRequest {
	req.IdempotencyKey, req.RequestHash = key, []byte(hash)
	return req
}

func TestIdempotencyKeyReplaysFirstAnswer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	req := withKey(connStart(f.operator, domain.SurfaceInventorySync, conn.ID), "key-1", "hash-a")

	first, err := f.svc.Start(f.ctx, req)
	if err != nil || first.Replayed || first.Result.Outcome != domain.OutcomeAccepted {
		t.Fatalf("first = %+v, %v; want accepted, not replayed", first, err)
	}
	before := f.eventCount()

	again, err := f.svc.Start(f.ctx, req)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if !again.Replayed {
		t.Errorf("repeat not marked replayed")
	}
	a, _ := json.Marshal(first.Result)
	b, _ := json.Marshal(again.Result)
	if string(a) != string(b) {
		t.Errorf("replayed result differs:\n first %s\n again %s", a, b)
	}
	if after := f.eventCount(); after != before {
		t.Errorf("replay recorded %d events", after-before)
	}

	// Same key, different body.
	other := withKey(connStart(f.operator, domain.SurfaceComplianceSnapshot, conn.ID), "key-1", "hash-b")
	if _, err := f.svc.Start(f.ctx, other); !errors.Is(err, gate.ErrIdempotencyKeyReused) {
		t.Errorf("reused key: err = %v, want ErrIdempotencyKeyReused", err)
	}
	if after := f.eventCount(); after != before {
		t.Errorf("reused key recorded %d events", after-before)
	}

	// Keys belong to their user: another user's same key is a new request.
	mine := withKey(connStart(f.owner, domain.SurfaceInventorySync, conn.ID), "key-1", "hash-a")
	resp, err := f.svc.Start(f.ctx, mine)
	if err != nil || resp.Replayed || resp.Result.Outcome != domain.OutcomeDeduped {
		t.Errorf("other user's key = %+v, %v; want a fresh deduped answer", resp, err)
	}
	// The answer replayed is the first one even after the state moved on.
	claim, err := f.svc.BeginRun(f.ctx, first.Result.Run.ID, "w1", leaseLong)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := f.svc.Succeed(f.ctx, worker, claim); err != nil {
		t.Fatalf("succeed: %v", err)
	}
	late, err := f.svc.Start(f.ctx, req)
	if err != nil || !late.Replayed || late.Result.Outcome != domain.OutcomeAccepted || late.Result.Run.ID != first.Result.Run.ID {
		t.Errorf("replay after success = %+v, %v; want the original accepted answer", late, err)
	}
}

func TestIdempotencyKeyConcurrentRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	conn := f.connection("Graph", asDefault)
	req := withKey(connStart(f.operator, domain.SurfaceInventorySync, conn.ID), "same-key", "same-hash")

	const n = 20
	results := make([]gate.StartResponse, n)
	errs := make([]error, n)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			results[i], errs[i] = f.svc.Start(f.ctx, req)
		}()
	}
	close(release)
	wg.Wait()

	var runID string
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		r := results[i]
		if r.Result.Outcome != domain.OutcomeAccepted {
			t.Errorf("request %d: outcome %s, want the accepted answer", i, r.Result.Outcome)
		}
		if runID == "" {
			runID = r.Result.Run.ID
		}
		if r.Result.Run.ID != runID {
			t.Errorf("request %d: run %s, want %s", i, r.Result.Run.ID, runID)
		}
		if !r.Replayed {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers were fresh decisions, want 1", fresh)
	}
	events := f.stream(string(domain.ConnectionScope(conn.ID)))
	if len(events) != 1 || events[0].Type != "StartAccepted" {
		t.Errorf("scope stream = %v, want exactly one decision", types(events))
	}
	if n := f.count(`SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Errorf("idempotency keys = %d, want 1", n)
	}
}
