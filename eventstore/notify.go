package eventstore

import (
	"context"
	"log/slog"
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
// names the notifier that sent it, which ignores its own: its subscribers
// were woken at the commit already.
//
// Subscribers are woken delay after the first commit of a burst rather
// than at each commit, so that they read the burst in one batch: each
// read costs every subscriber a transaction, and a start sets off several
// commits (the decision, then the worker's) within a few milliseconds.
type Notifier struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	id      string
	delay   time.Duration
	mu      sync.Mutex
	subs    []chan struct{}
	timer   *time.Timer // pending wake-up of a burst
	pending chan struct{}
}

// NewNotifier returns a notifier over pool that wakes subscribers delay
// after a commit (at once for 0); call Run to start it.
func NewNotifier(pool *pgxpool.Pool, logger *slog.Logger, delay time.Duration) *Notifier {
	return &Notifier{pool: pool, logger: logger, id: ulid.Make().String(), delay: delay, pending: make(chan struct{}, 1)}
}

// Subscribe returns a channel that receives after commits.
func (n *Notifier) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	n.subs = append(n.subs, ch)
	n.mu.Unlock()
	return ch
}

// Committed announces a commit of this process.
func (n *Notifier) Committed() {
	n.wake()
	select {
	case n.pending <- struct{}{}:
	default:
	}
}

// wake wakes the subscribers now, or delay from the first commit of a burst.
func (n *Notifier) wake() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.delay <= 0 {
		n.broadcastLocked()
		return
	}
	if n.timer == nil {
		n.timer = time.AfterFunc(n.delay, func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.timer = nil
			n.broadcastLocked()
		})
	}
}

func (n *Notifier) broadcastLocked() {
	for _, ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
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
		if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, n.id); err != nil && ctx.Err() == nil {
			n.logger.Warn("notify failed; subscribers fall back to polling", "err", err)
		}
	}
}

func (n *Notifier) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.listenOnce(ctx)
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

func (n *Notifier) listenOnce(ctx context.Context) error {
	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `UNLISTEN `+NotifyChannel) //nolint:errcheck
	for {
		note, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if note.Payload != n.id {
			n.wake()
		}
	}
}
