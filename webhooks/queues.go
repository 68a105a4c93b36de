package webhooks

import "sync"

// released is the outcome of an attempt claimed but never sent: its claim
// is given back. stopped is that of one whose answer did not come before
// the dispatcher stopped: it is recorded failed, and due again at once.
const (
	released = "released"
	stopped  = "stopped"
)

// fastShare: an endpoint that answered its last attempt 2xx within
// Timeout/fastShare is fast, and has more of its attempts claimed at once.
const fastShare = 10

// queues holds, per endpoint, the attempts this process claimed: those
// waiting to be sent and the number being sent. Claiming ahead of sending
// lets one claim's round trips serve many attempts of a fast endpoint,
// while a slow one never has more claimed than it may have in flight.
//
// How many attempts of an endpoint may be in flight (its window) follows
// its answers: PerEndpoint at first, one more for each fast 2xx answer
// while attempts waited for room, up to maxWindow, and halved (not below
// PerEndpoint) by an answer that failed or came slowly. A fast endpoint
// takes a busy feed as fast as it answers (by Little's law, a fixed
// window caps it at window / answer time, and answers take longer on a
// busy machine); a struggling one is sent less at once.
type queues struct {
	perEndpoint, maxWindow, concurrency int
	// depth is how many attempts of a fast endpoint are claimed at once,
	// capacity how many of all endpoints.
	depth, capacity int

	mu sync.Mutex
	// endpoints are those this process has sent to (as many as there are
	// endpoints at most).
	endpoints map[string]*queue
	held      int // claimed here, waiting or being sent
	sending   int
	// low receives when a queue ran low enough to be refilled.
	low chan struct{}
}

// queue is one endpoint's.
type queue struct {
	waiting []claimed
	sending int
	window  int // how many may be in flight
	fast    bool
}

// windowGrowth bounds an endpoint's window: at most windowGrowth x
// PerEndpoint in flight.
const windowGrowth = 16

func newQueues(cfg DispatcherConfig) *queues {
	maxWindow := windowGrowth * cfg.PerEndpoint
	depth := 2 * maxWindow
	return &queues{perEndpoint: cfg.PerEndpoint, maxWindow: maxWindow, concurrency: cfg.Concurrency, depth: depth,
		capacity: max(4*cfg.Concurrency, depth), endpoints: map[string]*queue{}, low: make(chan struct{}, 1)}
}

// room returns how many attempts may be claimed in all, and how many of
// each endpoint.
func (qs *queues) room() (int, func(endpoint string) int) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	held := map[string]int{}
	fast := map[string]bool{}
	for endpoint, q := range qs.endpoints {
		held[endpoint], fast[endpoint] = len(q.waiting)+q.sending, q.fast
	}
	return qs.capacity - qs.held, func(endpoint string) int {
		limit := qs.perEndpoint
		if fast[endpoint] {
			limit = qs.depth
		}
		return limit - held[endpoint]
	}
}

// hold queues claimed attempts for sending.
func (qs *queues) hold(list []claimed) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	for _, c := range list {
		q := qs.endpoints[c.endpoint]
		if q == nil {
			q = &queue{window: qs.perEndpoint}
			qs.endpoints[c.endpoint] = q
		}
		q.waiting = append(q.waiting, c)
		qs.held++
	}
}

// next takes the attempts that may be sent now, counting them as being
// sent: every endpoint's oldest, round by round, up to the limits.
func (qs *queues) next() []claimed {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var out []claimed
	for more := true; more && qs.sending < qs.concurrency; {
		more = false
		for _, q := range qs.endpoints {
			if len(q.waiting) == 0 || q.sending >= q.window || qs.sending >= qs.concurrency {
				continue
			}
			out = append(out, q.waiting[0])
			q.waiting = q.waiting[1:]
			q.sending++
			qs.sending++
			more = true
		}
	}
	return out
}

// sent counts an attempt of endpoint as done, remembering whether it was
// answered fast and sizing the endpoint's window by it, and says so on
// low when its queue should be refilled.
func (qs *queues) sent(endpoint string, fast bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := qs.endpoints[endpoint]
	q.sending--
	qs.sending--
	qs.held--
	q.fast = fast
	switch {
	case !fast:
		q.window = max(qs.perEndpoint, q.window/2)
	case len(q.waiting) > 0:
		q.window = min(qs.maxWindow, q.window+1)
	}
	left := len(q.waiting) + q.sending
	if left <= q.window || (q.fast && left <= qs.depth/2) {
		select {
		case qs.low <- struct{}{}:
		default:
		}
	}
}

// drop empties the queues of what waits, and returns it.
func (qs *queues) drop() []claimed {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var out []claimed
	for _, q := range qs.endpoints {
		out = append(out, q.waiting...)
		qs.held -= len(q.waiting)
		q.waiting = nil
	}
	return out
}
