package webhooks

import (
	"fmt"
	"testing"
)

func attempts(endpoint string, n int) []claimed {
	out := make([]claimed, n)
	for i := range out {
		out[i] = claimed{id: fmt.Sprintf("%s-%d", endpoint, i), endpoint: endpoint}
	}
	return out
}

func TestQueuesClaimAheadOnlyForFastEndpoints(t *testing.T) {
	qs := newQueues(DispatcherConfig{Concurrency: 32, PerEndpoint: 4})
	free, room := qs.room()
	if free != 128 || room("a") != 4 {
		t.Fatalf("empty: free %d, room for a new endpoint %d; want 128 and its in-flight limit 4", free, room("a"))
	}
	qs.hold(attempts("a", 4))
	sent := qs.next()
	if len(sent) != 4 {
		t.Fatalf("next sent %d, want 4", len(sent))
	}
	qs.sent("a", true)
	if _, room := qs.room(); room("a") != 2*windowGrowth*4-3 {
		t.Errorf("after a fast answer a may have %d more claimed, want its depth (twice its largest window) less the 3 held", room("a"))
	}
	qs.sent("a", false)
	if _, room := qs.room(); room("a") != 4-2 {
		t.Errorf("after a slow answer a may have %d more claimed, want 2 (its in-flight limit, 2 held)", room("a"))
	}
}

func TestQueuesSendWithinTheLimitsRoundByRound(t *testing.T) {
	qs := newQueues(DispatcherConfig{Concurrency: 5, PerEndpoint: 2})
	qs.hold(attempts("a", 2*windowGrowth*2))
	qs.hold(attempts("b", 10))
	qs.hold(attempts("c", 1))
	sent := qs.next()
	per := map[string]int{}
	for _, c := range sent {
		per[c.endpoint]++
	}
	if len(sent) != 5 || per["a"] > 2 || per["b"] > 2 || per["c"] != 1 {
		t.Errorf("sent %v, want 5 in all, at most 2 per endpoint, c's one among them", per)
	}
	if more := qs.next(); len(more) != 0 {
		t.Errorf("sent %d more past the process's limit", len(more))
	}
	qs.sent("a", true)
	if more := qs.next(); len(more) != 1 || more[0].endpoint != "a" {
		t.Errorf("after an answer from a sent %v, want a's next", more)
	}
	select {
	case <-qs.low:
		t.Error("a refill asked for although a's queue is not low")
	default:
	}
	qs.sent("c", false)
	select {
	case <-qs.low:
	default:
		t.Error("no refill asked for although c's queue ran empty")
	}
	waiting := qs.drop()
	if want := 2*windowGrowth*2 + 11 - 6; len(waiting) != want {
		t.Errorf("dropped %d, want the %d not sent", len(waiting), want)
	}
	if free, _ := qs.room(); free != qs.capacity-4 {
		t.Errorf("after the drop %d may be claimed, want capacity less the 4 being sent", free)
	}
}

func TestQueuesWindowFollowsTheAnswers(t *testing.T) {
	qs := newQueues(DispatcherConfig{Concurrency: 100, PerEndpoint: 2})
	qs.hold(attempts("a", 400))
	inFlight := len(qs.next())
	if inFlight != 2 {
		t.Fatalf("sent %d at first, want PerEndpoint (2)", inFlight)
	}
	// Each fast answer while attempts wait lets one more go out.
	for range 5 {
		qs.sent("a", true)
		inFlight += len(qs.next()) - 1
	}
	if inFlight != 2+5 {
		t.Errorf("%d in flight after 5 fast answers, want 7", inFlight)
	}
	// Never past windowGrowth x PerEndpoint.
	const cap = windowGrowth * 2
	for range 2 * cap {
		qs.sent("a", true)
		inFlight += len(qs.next()) - 1
	}
	if inFlight != cap || qs.endpoints["a"].window != cap {
		t.Errorf("%d in flight, window %d after many fast answers; want both at the cap %d", inFlight, qs.endpoints["a"].window, cap)
	}
	// A slow or failed answer halves the window, not below PerEndpoint.
	qs.sent("a", false)
	if w := qs.endpoints["a"].window; w != cap/2 {
		t.Errorf("window %d after a slow answer, want %d", w, cap/2)
	}
	for range 8 {
		qs.sent("a", false)
	}
	if w := qs.endpoints["a"].window; w != 2 {
		t.Errorf("window %d after many slow answers, want PerEndpoint (2)", w)
	}
	if more := qs.next(); len(more) != 0 {
		t.Errorf("sent %d more with %d in flight and a window of 2", len(more), cap-9)
	}
}
