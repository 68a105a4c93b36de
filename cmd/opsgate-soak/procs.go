package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// binaries are the programs a soak runs, built once.
type binaries struct {
	opsgate, devdb string
}

// build compiles cmd/opsgate and cmd/devdb of the repository at root into dir.
func build(root, dir string) (binaries, error) {
	b := binaries{opsgate: filepath.Join(dir, "opsgate"), devdb: filepath.Join(dir, "devdb")}
	for pkg, out := range map[string]string{"./cmd/opsgate": b.opsgate, "./cmd/devdb": b.devdb} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return b, nil
}

// database is the soak's own PostgreSQL cluster (cmd/devdb -state), which
// the soak may crash without touching the cluster of make run and make test.
type database struct {
	root, devdb, state string
}

func (d database) run(command string, flags ...string) (string, error) {
	cmd := exec.Command(d.devdb, append(append([]string{"-state", d.state}, flags...), command)...)
	cmd.Dir = d.root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("devdb %s: %w\n%s", command, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// start starts the cluster (initialising it the first time) and returns its URL.
func (d database) start() (string, error) { return d.run("start") }

// crash stops the cluster at once, as a crash would: pg_ctl stop -m immediate.
func (d database) crash() error { _, err := d.run("crash"); return err }

// dumpDatabase returns a pg_dump of the database at url (the events,
// the tokens' hashes, the read models: everything a backup holds).
func dumpDatabase(ctx context.Context, d database, url string) ([]byte, error) {
	bin, err := d.run("bindir")
	if err != nil {
		return nil, err
	}
	// libpq waits for a server's answer for ever unless told: a frozen
	// primary first in the URL would hold pg_dump. connect_timeout applies
	// to each host.
	if !strings.Contains(url, "connect_timeout=") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "connect_timeout=5"
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "--data-only", "--dbname", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pg_dump: %w\n%s", err, stderr.String())
	}
	return out, nil
}

// stop stops the cluster cleanly.
func (d database) stop() error { _, err := d.run("stop"); return err }

// pair is a primary and its synchronous standby (devdb standby), for the
// failover soak: each soak starts both afresh.
type pair struct {
	primary, standby database
}

// start deletes what earlier soaks left of both clusters, starts the
// primary and makes the standby its synchronous standby; it returns the
// two-host URL every process of the soak uses.
func (p pair) start() (string, error) {
	for _, d := range []database{p.primary, p.standby} {
		if _, err := d.run("destroy"); err != nil {
			return "", err
		}
	}
	primary, err := p.primary.start()
	if err != nil {
		return "", err
	}
	standby, err := p.standby.run("standby", "-primary", p.primary.state)
	if err != nil {
		return "", err
	}
	return twoHosts(primary, standby)
}

// twoHosts is the URL of both servers of a and b, the primary first, with
// target_session_attrs=read-write: libpq's and pgx's multi-host syntax.
func twoHosts(a, b string) (string, error) {
	ua, err := url.Parse(a)
	if err != nil {
		return "", err
	}
	ub, err := url.Parse(b)
	if err != nil {
		return "", err
	}
	q := ua.Query()
	q.Set("target_session_attrs", "read-write")
	ua.Host += "," + ub.Host
	ua.RawQuery = q.Encode()
	return ua.String(), nil
}

// stop stops the standby (the promoted primary) cleanly and kills what is
// left of the old primary (frozen or dead: an HA tool fences it).
func (p pair) stop() error {
	_, kerr := p.primary.run("kill")
	if kerr != nil && !strings.Contains(kerr.Error(), "no process of the cluster runs") {
		return kerr
	}
	return p.standby.stop()
}

// logs are the server logs of both clusters.
func (p pair) logs(root string) []string {
	return []string{filepath.Join(root, p.primary.state, "postgres.log"), filepath.Join(root, p.standby.state, "postgres.log")}
}

// process is one opsgate process of the soak; it can be killed and
// started again under the same name.
type process struct {
	name  string
	roles string
	addr  string // api processes: the HTTP address
	env   []string
	bin   string
	logs  string // the log file, appended to by every incarnation

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	killed map[int]time.Time // pid -> when it was SIGKILLed
}

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.logs, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, "serve", "--roles", p.roles)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if p.killed == nil {
		p.killed = map[int]time.Time{}
	}
	if cmd != nil {
		p.killed[cmd.Process.Pid] = time.Now()
	}
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM and waits up to grace, then kills.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// killedAt returns when the incarnation with pid was SIGKILLed, if it was.
func (p *process) killedAt(pid int) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.killed[pid]
	return at, ok
}

// waitReady waits until an api process answers /readyz with 200.
func waitReady(ctx context.Context, addr string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s", addr, limit)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
