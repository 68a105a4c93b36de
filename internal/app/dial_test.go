package app

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/internal/faultproxy"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// TestFrozenPrimaryIsLeft: every connection of a pool on a two-host URL
// goes to the first host, a server that then freezes (its TCP connections
// stay open and acknowledged, nothing is answered: a stopped postmaster).
// The watchdog closes them within a probe's timeout, new connections go
// to the second host at once, and the notifier, listening again there,
// wakes every subscriber: what a promotion needs of the processes.
func TestFrozenPrimaryIsLeft(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	target, err := faultproxy.TargetOf(direct)
	if err != nil {
		t.Fatal(err)
	}
	frozen := startFreezer(t, target)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = frozen.addr() + "," + target
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := newWatchdog(slog.New(slog.DiscardHandler))
	defer w.close()
	pool, err := openPool(ctx, config.Config{DatabaseURL: u.String(), DBMaxConns: 4}, w, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	n := eventstore.NewNotifier(pool, slog.New(slog.DiscardHandler), eventstore.WakeTiming{})
	woken := n.SubscribeTopic("accepted")
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go n.Run(runCtx)
	until(t, 10*time.Second, "the notifier listening through the first host", func() bool { return frozen.conns() > 0 && listening(ctx, t, direct) >= 1 })
	select {
	case <-woken:
		t.Fatal("the first LISTEN woke a subscriber")
	default:
	}

	frozen.freeze()
	froze := time.Now()
	select {
	case <-woken:
	case <-time.After(probeEvery + probeTimeout + 5*time.Second):
		t.Fatalf("the notifier did not listen again on the second host within %s of the freeze", time.Since(froze))
	}
	t.Logf("listening again %s after the freeze", time.Since(froze).Round(time.Millisecond))
	// The pool answers through the second host without waiting for the
	// frozen one.
	qctx, qcancel := context.WithTimeout(ctx, time.Second)
	defer qcancel()
	if _, err := pool.Exec(qctx, `SELECT 1`); err != nil {
		t.Fatalf("a query after the freeze: %v", err)
	}
}

// listening counts the sessions of the database listening on the
// notifier's channel.
func listening(ctx context.Context, t *testing.T, databaseURL string) int {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var k int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN `+eventstore.NotifyChannel+`'`).Scan(&k); err != nil {
		t.Fatalf("count the listeners: %v", err)
	}
	return k
}

func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// TestDialSettings: the dialer sets TCP_USER_TIMEOUT and keepalive on its
// connections.
func TestDialSettings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := dialer.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var userTimeout, keepAlive, idle, interval, count int
	var serr error
	_ = raw.Control(func(fd uintptr) {
		get := func(level, opt int, into *int) {
			if v, err := syscall.GetsockoptInt(int(fd), level, opt); err != nil {
				serr = err
			} else {
				*into = v
			}
		}
		get(syscall.IPPROTO_TCP, tcpUserTimeoutOpt, &userTimeout)
		get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, &keepAlive)
		get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, &idle)
		get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, &interval)
		get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, &count)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	if userTimeout != int(tcpUserTimeout.Milliseconds()) || keepAlive != 1 || idle != int(keepAliveIdle.Seconds()) ||
		interval != int(keepAliveInterval.Seconds()) || count != keepAliveCount {
		t.Fatalf("TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d, idle %d s, interval %d s, count %d", userTimeout, keepAlive, idle, interval, count)
	}
}

func TestIsSyncWaitCancelled(t *testing.T) {
	for msg, want := range map[string]bool{
		"canceling wait for synchronous replication due to user request":                                         true,
		"canceling the wait for synchronous replication and terminating connection due to administrator command": true,
		"canceling statement due to user request":                                                                false,
	} {
		if got := IsSyncWaitCancelled(&pgconn.Notice{Severity: "WARNING", Message: msg}); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}

// freezer is a TCP proxy that can freeze: it then forwards nothing either
// way, while keeping every connection open and accepting new ones, as a
// server whose processes stopped (their kernel still acknowledges).
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen chan struct{} // closed at the freeze
	open   int
	held   []net.Conn // accepted while frozen: kept open, never answered
}

func startFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, frozen: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.forward(c)
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) freeze() { close(f.frozen) }

func (f *freezer) conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

func (f *freezer) forward(c net.Conn) {
	select {
	case <-f.frozen:
		f.mu.Lock()
		f.held = append(f.held, c)
		f.mu.Unlock()
		return
	default:
	}
	s, err := net.Dial("tcp", f.target)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	f.open++
	f.mu.Unlock()
	go f.pipe(s, c)
	f.pipe(c, s)
}

// pipe copies src to dst until the freeze, after which it holds what it
// read.
func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			<-make(chan struct{}) // frozen for good
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}
