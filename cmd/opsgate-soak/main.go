// Command opsgate-soak is opsgate's own fault test: it runs several opsgate
// processes (2 api, 1 projector, 2 workers) on a PostgreSQL cluster of its
// own, drives them with a bounded load of starts, read-backs, reads, lists
// and cancels, kills each role with SIGKILL and crashes the database once
// (pg_ctl stop -m immediate), restarts everything, and then checks what an
// operator relies on: no acknowledged start lost, every run terminal, never
// two active runs on a scope, no stale or phantom events, no 5xx outside the
// fault windows, read models back within seconds, no finished run reported
// lost, and `opsgate projections verify` equal. A webhook receiver of its own
// (webhook.go) gets every change of the soak's workspace, verifies each
// message's signature with the Standard Webhooks reference library and
// fails some attempts on purpose; at the end every change of the feed must
// have arrived, equal to the feed's. It prints one table and exits 1 on any
// breach. docs/RELIABILITY.md explains each line.
//
//	make soak                        # the full run (about 4 minutes)
//	go run ./cmd/opsgate-soak -short # fewer faults, about a minute
//
// With -failover kill|freeze|both (make soak FAILOVER=1 runs both) it runs
// against a primary and its synchronous streaming standby instead
// (failover.go), every process on a two-host DATABASE_URL with
// target_session_attrs=read-write; its one database fault kills (SIGKILL)
// or freezes (SIGSTOP) the primary and promotes the standby at once. The
// old primary stays down, as an HA tool would fence it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is the shape of one soak.
type config struct {
	root      string        // the repository root
	load      time.Duration // how long the clients run
	clients   int
	pause     time.Duration // a client's mean pause between requests
	tenants   int
	connsPer  int
	lease     time.Duration
	heartbeat time.Duration
	faults    []fault
	out       io.Writer // the table
	progress  io.Writer // progress lines
	keepLogs  bool
	// failover is the failover soak's variant (kill or freeze the
	// primary), "" for the soak on one cluster.
	failover string
}

// fault is one step of the schedule, at an offset from the load's start.
type fault struct {
	at    time.Duration
	what  string   // kill, crash-db, failover
	procs []string // the processes a kill ends
	down  time.Duration
}

func fullConfig(root string) config {
	return config{
		root: root, load: 150 * time.Second, clients: 16, pause: 250 * time.Millisecond,
		tenants: 2, connsPer: 12, lease: 4 * time.Second, heartbeat: time.Second,
		faults: []fault{
			{at: 15 * time.Second, what: "kill", procs: []string{"api-1"}, down: 2 * time.Second},
			{at: 30 * time.Second, what: "kill", procs: []string{"projector"}, down: 3 * time.Second},
			{at: 45 * time.Second, what: "kill", procs: []string{"worker-1"}, down: 2 * time.Second},
			{at: 70 * time.Second, what: "crash-db", down: 7 * time.Second},
			{at: 100 * time.Second, what: "kill", procs: []string{"worker-2", "api-2"}, down: 2 * time.Second},
			{at: 120 * time.Second, what: "kill", procs: []string{"projector", "worker-1"}, down: 2 * time.Second},
		},
	}
}

func shortConfig(root string) config {
	c := fullConfig(root)
	c.load, c.clients = 32*time.Second, 8
	c.faults = []fault{
		{at: 5 * time.Second, what: "kill", procs: []string{"api-1", "worker-1"}, down: 2 * time.Second},
		{at: 10 * time.Second, what: "kill", procs: []string{"projector"}, down: 2 * time.Second},
		{at: 16 * time.Second, what: "crash-db", down: 4 * time.Second},
	}
	return c
}

func main() {
	short := flag.Bool("short", false, "fewer faults and a shorter load (about a minute)")
	keep := flag.Bool("keep-logs", false, "keep the processes' logs under .data/soak/logs even when every check passes")
	failover := flag.String("failover", "", "kill, freeze or both: the failover soak's variants, on a primary and a synchronous standby")
	flag.Parse()
	root, err := os.Getwd()
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "opsgate-soak: run it from the repository root (make soak)")
		os.Exit(2)
	}
	var cfgs []config
	switch *failover {
	case "":
		cfg := fullConfig(root)
		if *short {
			cfg = shortConfig(root)
		}
		cfgs = append(cfgs, cfg)
	case "kill", "freeze":
		cfgs = append(cfgs, failoverConfig(root, *failover, *short))
	case "both", "1":
		cfgs = append(cfgs, failoverConfig(root, "kill", *short), failoverConfig(root, "freeze", *short))
	default:
		fmt.Fprintln(os.Stderr, "opsgate-soak: -failover is kill, freeze or both")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := false
	for _, cfg := range cfgs {
		cfg.out, cfg.progress, cfg.keepLogs = os.Stdout, os.Stderr, *keep
		rep, err := soak(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "opsgate-soak:", err)
			os.Exit(1)
		}
		failed = failed || rep.breaches() > 0
	}
	if failed {
		os.Exit(1)
	}
}

func (c config) logf(format string, args ...any) {
	if c.progress != nil {
		fmt.Fprintf(c.progress, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// describe lists the schedule for the report.
func (c config) describe() string {
	var parts []string
	for _, f := range c.faults {
		switch f.what {
		case "kill":
			parts = append(parts, fmt.Sprintf("%s: SIGKILL %s", f.at, strings.Join(f.procs, "+")))
		case "failover":
			parts = append(parts, fmt.Sprintf("%s: %s the primary, promote the standby at once", f.at,
				map[string]string{"kill": "SIGKILL", "freeze": "SIGSTOP"}[c.failover]))
		default:
			parts = append(parts, fmt.Sprintf("%s: database crash (%s down)", f.at, f.down))
		}
	}
	return strings.Join(parts, "; ")
}
