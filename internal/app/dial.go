package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// How opsgate's connections leave a database server that stops answering
// (docs/RELIABILITY.md, "Running on a highly available PostgreSQL"). pgx
// reads no keepalives_* parameter of the URL: these are set on the dialer
// of every pool.
const (
	// connectTimeout bounds each host's connection attempt (TCP, startup,
	// authentication, the target_session_attrs check): a multi-host URL
	// moves on from a dead host to the next one after it. It is generous,
	// because a busy server may take seconds to start a session (3 s failed
	// tests under make test's load); a frozen server is left sooner by the
	// watchdog, which fails dials to it at once.
	connectTimeout = 10 * time.Second
	// TCP keepalive: the first probe after 5 s of silence, then every 2 s;
	// 3 unanswered probes close the connection. A host that froze or
	// vanished from the network while a connection was idle (a LISTEN, a
	// pooled connection) is left within 5 + 3 x 2 = 11 s.
	// tcpConnectTimeout bounds the TCP handshake alone: a host that is
	// gone does not hold a dial longer.
	tcpConnectTimeout = 3 * time.Second
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
	// tcpUserTimeout (TCP_USER_TIMEOUT) closes a connection whose sent data
	// stays unacknowledged that long: a host that froze while a statement
	// was on its way. It is above what keepalive needs, so that keepalive
	// decides for idle connections.
	tcpUserTimeout = 12 * time.Second
	// A server whose process froze (SIGSTOP, a hung postmaster) while its
	// host's kernel still acknowledges every packet passes keepalive and
	// TCP_USER_TIMEOUT. Every server opsgate has connections to is asked
	// SELECT 1 every probeEvery on a connection of its own; one that does
	// not answer within probeTimeout is unresponsive: every connection to
	// it is closed, so that whatever waited on it (a commit, a LISTEN)
	// fails now and goes to the next host, and new connections skip it
	// until it answers again.
	probeEvery   = time.Second
	probeTimeout = 3 * time.Second
)

// errUnresponsive is the dial error of a host the watchdog found
// unresponsive: pgx goes on to the next host of the URL at once.
var errUnresponsive = errors.New("the server did not answer its last probe")

// dialer is how every connection of opsgate is opened: TCP keepalive and
// TCP_USER_TIMEOUT set, and a connect timeout. (A value without state:
// its settings are constants.)
var dialer = &net.Dialer{
	Timeout: tcpConnectTimeout,
	KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
	},
	Control: func(network, _ string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") {
			return nil
		}
		return setUserTimeout(c, tcpUserTimeout)
	},
}

// watchdog probes every server an application's pools have connections
// to, and closes them all when it stops answering.
type watchdog struct {
	logger *slog.Logger
	stop   chan struct{} // closed by close: run returns

	mu      sync.Mutex
	servers map[string]*server // by address (host:port)
	started bool
	closed  bool
}

// newWatchdog returns a watchdog that logs to logger. It starts probing
// with the first connection it dials; close stops it.
func newWatchdog(logger *slog.Logger) *watchdog {
	return &watchdog{logger: logger, stop: make(chan struct{}), servers: map[string]*server{}}
}

// close stops the probes and closes their connections.
func (w *watchdog) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	close(w.stop)
	for _, s := range w.servers {
		if s.probe != nil {
			s.probe.Close(context.Background()) //nolint:errcheck
			s.probe = nil
		}
	}
}

// server is one address the pools connect to.
type server struct {
	conns        map[*trackedConn]struct{}
	config       *pgconn.Config // to open the probe's connection
	probe        *pgconn.PgConn
	unresponsive bool
}

// dialFunc returns the DialFunc of a pool whose connections are made from
// cfg: it fails at once for an unresponsive server, and tracks every
// connection it opens.
func (w *watchdog) dialFunc(cfg *pgconn.Config) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !strings.HasPrefix(network, "tcp") {
			return dialer.DialContext(ctx, network, addr)
		}
		w.mu.Lock()
		s := w.servers[addr]
		if s != nil && s.unresponsive {
			w.mu.Unlock()
			return nil, &net.OpError{Op: "dial", Net: network, Err: errUnresponsive}
		}
		w.mu.Unlock()
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, addr: addr, w: w}
		w.mu.Lock()
		defer w.mu.Unlock()
		s = w.servers[addr]
		if s == nil {
			s = &server{conns: map[*trackedConn]struct{}{}}
			w.servers[addr] = s
		}
		// The probe connects as the latest connection did (to a database
		// that still exists).
		if pc := probeConfig(cfg, addr); pc != nil {
			s.config = pc
		}
		s.conns[tc] = struct{}{}
		if !w.started && !w.closed {
			w.started = true
			go w.run()
		}
		return tc, nil
	}
}

// probeConfig is cfg for the probe of addr alone: no fallback, no
// session check, no hook, dialled without tracking.
func probeConfig(cfg *pgconn.Config, addr string) *pgconn.Config {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil {
		return nil
	}
	c := cfg.Copy()
	c.Host, c.Port, c.Fallbacks = host, p, nil
	c.ValidateConnect, c.AfterConnect, c.OnNotice, c.OnNotification = nil, nil, nil, nil
	c.DialFunc = dialer.DialContext
	c.ConnectTimeout = probeTimeout
	c.RuntimeParams = map[string]string{"application_name": "opsgate-probe"}
	return c
}

// run probes every known server every probeEvery, until close.
func (w *watchdog) run() {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		var addrs []string
		for addr, s := range w.servers {
			if len(s.conns) > 0 || s.unresponsive || s.probe != nil {
				addrs = append(addrs, addr)
			}
		}
		w.mu.Unlock()
		var wg sync.WaitGroup
		for _, addr := range addrs {
			wg.Go(func() { w.check(addr) })
		}
		wg.Wait()
	}
}

// check probes addr once and acts on the answer.
func (w *watchdog) check(addr string) {
	w.mu.Lock()
	s := w.servers[addr]
	cfg, probe, idle := s.config, s.probe, len(s.conns) == 0 && !s.unresponsive
	w.mu.Unlock()
	if cfg == nil {
		return
	}
	if idle {
		// Nothing of ours is on it any more.
		if probe != nil {
			probe.Close(context.Background()) //nolint:errcheck
			w.mu.Lock()
			s.probe = nil
			w.mu.Unlock()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	var err error
	if probe == nil {
		probe, err = pgconn.ConnectConfig(ctx, cfg)
	}
	if err == nil {
		err = probe.Exec(ctx, "SELECT 1").Close()
	}
	if err != nil && probe != nil {
		probe.Close(context.Background()) //nolint:errcheck
		probe = nil
	}
	// Only silence makes a server unresponsive: a refused or reset
	// connection already failed every connection to it by itself.
	frozen := err != nil && (errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err))
	w.mu.Lock()
	s.probe = probe
	was := s.unresponsive
	// Only an answer clears it: a frozen server killed since refuses.
	now := frozen || (was && err != nil)
	s.unresponsive = now
	var cut []*trackedConn
	if frozen {
		for c := range s.conns {
			cut = append(cut, c)
		}
	}
	w.mu.Unlock()
	switch {
	case now && !was:
		w.logger.Warn("the database server stopped answering; closing every connection to it", "addr", addr,
			"connections", len(cut), "err", err)
	case !now && was:
		w.logger.Info("the database server answers again", "addr", addr)
	}
	for _, c := range cut {
		c.Close() //nolint:errcheck
	}
}

// trackedConn is a connection the watchdog knows of until it is closed.
type trackedConn struct {
	net.Conn
	addr string
	w    *watchdog
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.w.mu.Lock()
		if s := c.w.servers[c.addr]; s != nil {
			delete(s.conns, c)
		}
		c.w.mu.Unlock()
	})
	return c.Conn.Close()
}
