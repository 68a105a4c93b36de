package eventstore

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// NotifyChannel is the PostgreSQL LISTEN/NOTIFY channel on which a commit
// of new events is announced to other processes.
const NotifyChannel = "opsgate_events"

// Notifier wakes idle subscribers promptly after events are committed:
// at once for commits of this process, and through LISTEN/NOTIFY for
// commits of others. A wake-up carries no data and may be lost or
// repeated; subscribers still poll as a fallback, so correctness never
// depends on it. NOTIFY is sent outside the appending transaction and
// coalesced, so it adds nothing to the commit path. Each notification
// names the notifier that sent it, which ignores its own (its subscribers
// were woken at the commit already), and the topics the commits published
// on, so that a subscriber of one topic (executors waiting for accepted
// starts) is woken by that topic's commits alone.
//
// Subscribers are woken Delay after the first commit of a burst rather
// than at each commit, so that they read the burst in one batch: each
// read costs every subscriber a transaction, and a start sets off several
// commits (the decision, then the worker's) within a few milliseconds.
// Under a steady stream of commits, subscribers of every commit (the
// projectors' feed) are woken at most once every Every: the read models'
// work is then done in batches, its cost shared by every click of a
// batch, instead of following each click and competing with the next one
// for the cores (issue 30). Subscribers of a topic (the worker, executors'
// long polls) are not held back: a run starts as soon as it can.
type Notifier struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	id     string
	delay  time.Duration // WakeTiming.Delay

	mu      sync.Mutex
	subs    []subscription
	nexts   map[string]chan struct{} // topic -> closed at its next wake-up
	byTopic pace                     // wake-ups of the subscribers of topics
	every   pace                     // of those of every commit
	soon    pace                     // and of those at once
	woken   []string                 // topics of the pending wake-up
	toSend  []string                 // topics of the pending NOTIFY
	atOnce  []string                 // topics woken without the delay
	pending chan struct{}
}

// subscription is a channel woken by commits on topic ("" for every commit).
type subscription struct {
	topic string
	ch    chan struct{}
	// atOnce: woken at each commit (at most once every AtOnceEvery), not
	// Delay after a burst.
	atOnce bool
}

// WakeTiming says when subscribers are woken after commits.
type WakeTiming struct {
	// Delay is how long after a burst's first commit its subscribers are
	// woken (at once, with those at once, for 0); Every is how often at
	// most subscribers of every commit are (no limit when not longer than
	// Delay).
	Delay, Every time.Duration
	// AtOnceEvery is how often at most subscribers at once are woken (at
	// each commit for 0): a reader that waits for them is kept waiting that
	// long at most.
	AtOnceEvery time.Duration
}

// NewNotifier returns a notifier over pool that wakes subscribers as
// timing says; call Run to start it.
func NewNotifier(pool *pgxpool.Pool, logger *slog.Logger, timing WakeTiming) *Notifier {
	n := &Notifier{pool: pool, logger: logger, id: ulid.Make().String(), delay: timing.Delay, pending: make(chan struct{}, 1)}
	n.byTopic = pace{mu: &n.mu, delay: timing.Delay, wake: n.wakeTopicsOfBurstLocked}
	n.every = pace{mu: &n.mu, delay: timing.Delay, every: timing.Every, wake: n.wakeEveryCommitLocked}
	n.soon = pace{mu: &n.mu, every: timing.AtOnceEvery, wake: n.wakeAtOnceLocked}
	return n
}

// pace runs wake (under mu) delay after a call of due, and not again
// within every of the last time; calls meanwhile share the wake-up
// pending.
type pace struct {
	delay, every time.Duration
	wake         func()
	mu           *sync.Mutex

	timer *time.Timer // the pending wake-up
	last  time.Time   // the last wake-up
}

// due asks for a wake-up; mu is held.
func (p *pace) due() {
	if p.timer != nil {
		return
	}
	now := time.Now()
	wait := max(p.delay, p.every-now.Sub(p.last))
	if wait <= 0 {
		p.last = now
		p.wake()
		return
	}
	p.timer = time.AfterFunc(wait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.timer, p.last = nil, time.Now()
		p.wake()
	})
}

// Subscribe returns a channel that receives after commits.
func (n *Notifier) Subscribe() <-chan struct{} { return n.SubscribeTopic("") }

// SubscribeAtOnce returns a channel that receives at each commit (at
// most once every AtOnceEvery), not Delay after a burst: for a subscriber
// whose readers wait for it (the change feed), and whose own work batches
// a burst already.
func (n *Notifier) SubscribeAtOnce() <-chan struct{} { return n.subscribe(subscription{atOnce: true}) }

// SubscribeTopic returns a channel that receives after commits that
// published on topic.
func (n *Notifier) SubscribeTopic(topic string) <-chan struct{} {
	return n.subscribe(subscription{topic: topic})
}

func (n *Notifier) subscribe(s subscription) <-chan struct{} {
	s.ch = make(chan struct{}, 1)
	n.mu.Lock()
	n.subs = append(n.subs, s)
	n.mu.Unlock()
	return s.ch
}

// Next returns a channel that is closed at the next wake-up of topic: for
// a waiter that comes and goes (a long poll), where a subscription would
// outlive it.
func (n *Notifier) Next(topic string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nexts == nil {
		n.nexts = map[string]chan struct{}{}
	}
	ch, ok := n.nexts[topic]
	if !ok {
		ch = make(chan struct{})
		n.nexts[topic] = ch
	}
	return ch
}

// Committed announces a commit of this process that published on topics.
func (n *Notifier) Committed(topics []string) {
	n.wake(topics)
	n.mu.Lock()
	n.toSend = union(n.toSend, topics)
	n.mu.Unlock()
	notify(n.pending)
}

func union(a, b []string) []string {
	for _, t := range b {
		if !slices.Contains(a, t) {
			a = append(a, t)
		}
	}
	return a
}

// Announcement is the payload of a NOTIFY on NotifyChannel that announces
// topics from this process, for a transaction that notifies the other
// processes itself (pg_notify in the transaction, delivered at its
// commit): this notifier passes it over, and the transaction's owner wakes
// this process's subscribers once it committed (Announced).
func (n *Notifier) Announcement(topics ...string) string {
	return n.id + ":" + strings.Join(topics, ",")
}

// Announced wakes this process's subscribers of topics for a commit that
// notified the other processes itself (Announcement).
func (n *Notifier) Announced(topics ...string) { n.wake(topics) }

// AtOnce names topics whose subscribers are woken at once, without the
// delay: those announced once per batch of work (the change feed's),
// where a burst is one announcement already.
func (n *Notifier) AtOnce(topics ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.atOnce = union(n.atOnce, topics)
}

// wake wakes the subscribers of topics now, or delay from the first
// commit of a burst.
func (n *Notifier) wake(topics []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.delay > 0 && len(n.atOnce) > 0 {
		var now, later []string
		for _, t := range topics {
			if slices.Contains(n.atOnce, t) {
				now = append(now, t)
			} else {
				later = append(later, t)
			}
		}
		n.wakeTopicsLocked(now)
		if topics = later; len(topics) == 0 {
			return
		}
	}
	n.woken = union(n.woken, topics)
	if n.delay <= 0 {
		n.wakeTopicsOfBurstLocked()
		n.wakeEveryCommitLocked()
		n.wakeAtOnceLocked()
		return
	}
	n.byTopic.due()
	n.every.due()
	if slices.ContainsFunc(n.subs, func(s subscription) bool { return s.atOnce }) {
		n.soon.due()
	}
}

// wakeAtOnceLocked wakes the subscribers at once.
func (n *Notifier) wakeAtOnceLocked() {
	for _, s := range n.subs {
		if s.atOnce {
			notify(s.ch)
		}
	}
}

// wakeEveryCommitLocked wakes the subscribers of every commit.
func (n *Notifier) wakeEveryCommitLocked() {
	for _, s := range n.subs {
		if s.topic == "" && !s.atOnce {
			notify(s.ch)
		}
	}
}

// wakeEveryone wakes the subscribers of every topic.
func (n *Notifier) wakeEveryone() {
	n.mu.Lock()
	var topics []string
	for _, s := range n.subs {
		topics = append(topics, s.topic)
	}
	for topic := range n.nexts {
		topics = append(topics, topic)
	}
	n.mu.Unlock()
	n.wake(topics)
}

// wakeTopicsLocked wakes the subscribers of topics alone (not those of
// every commit: no event was committed).
func (n *Notifier) wakeTopicsLocked(topics []string) {
	for _, s := range n.subs {
		if slices.Contains(topics, s.topic) {
			notify(s.ch)
		}
	}
	for _, topic := range topics {
		if ch, ok := n.nexts[topic]; ok {
			close(ch)
			delete(n.nexts, topic)
		}
	}
}

// notify wakes ch, unless a wake-up is pending already.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wakeTopicsOfBurstLocked wakes the subscribers and waiters of the
// topics committed since the last time.
func (n *Notifier) wakeTopicsOfBurstLocked() {
	for _, s := range n.subs {
		if s.topic != "" && slices.Contains(n.woken, s.topic) {
			notify(s.ch)
		}
	}
	for topic, ch := range n.nexts {
		if slices.Contains(n.woken, topic) {
			close(ch)
			delete(n.nexts, topic)
		}
	}
	n.woken = n.woken[:0]
}

// Run sends coalesced NOTIFYs and listens for those of other processes
// until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); n.send(ctx) }()
	go func() { defer wg.Done(); n.listen(ctx) }()
	wg.Wait()
}

func (n *Notifier) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.pending:
		}
		n.mu.Lock()
		payload := n.id + ":" + strings.Join(n.toSend, ",")
		n.toSend = n.toSend[:0]
		n.mu.Unlock()
		if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, payload); err != nil && ctx.Err() == nil {
			n.logger.Warn("notify failed; subscribers fall back to polling", "err", err)
		}
	}
}

func (n *Notifier) listen(ctx context.Context) {
	for first := true; ctx.Err() == nil; first = false {
		err := n.listenOnce(ctx, !first)
		if ctx.Err() != nil {
			return
		}
		n.logger.Warn("listen failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// listenOnce listens until the connection fails. Listening again after a
// failure, it wakes every subscriber: a notification sent while nobody
// listened is lost, and a long poll would otherwise sleep through the
// commits of the gap.
func (n *Notifier) listenOnce(ctx context.Context, again bool) error {
	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return err
	}
	if again {
		n.wakeEveryone()
	}
	defer conn.Exec(context.WithoutCancel(ctx), `UNLISTEN `+NotifyChannel) //nolint:errcheck
	for {
		note, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		from, topics, _ := strings.Cut(note.Payload, ":")
		if from != n.id {
			n.wake(strings.Split(topics, ","))
		}
	}
}
