package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// standby makes the cluster of stateDir a synchronous streaming standby of
// the cluster of primaryDir (which must run), starts it and prints its
// URL. A standby that exists already is started if it is stopped.
func standby(primaryDir string) error {
	c, unlock, err := open(true)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.setup(); err != nil {
		return err
	}
	p, err := openPrimary(primaryDir)
	if err != nil {
		return err
	}
	if err := c.prepareDirs(); err != nil {
		return err
	}
	if !initialised(c.pgdata) {
		if err := os.WriteFile(filepath.Join(c.state, "primary_port"), []byte(strconv.Itoa(p.port)+"\n"), 0o644); err != nil {
			return err
		}
		if err := c.baseBackup(p); err != nil {
			return err
		}
	}
	running, err := c.running()
	if err != nil {
		return err
	}
	if !running {
		if err := c.startServer(); err != nil {
			return err
		}
	}
	// The primary waits for it from now on, and after every restart.
	if err := os.WriteFile(filepath.Join(p.state, "sync_standby"), []byte(standbyName+"\n"), 0o644); err != nil {
		return err
	}
	if err := p.writeConf(p.settings()); err != nil {
		return err
	}
	if err := p.command("pg_ctl", "-D", p.pgdata, "reload").Run(); err != nil {
		return fmt.Errorf("reload the primary: %w", err)
	}
	if err := p.awaitSync(60 * time.Second); err != nil {
		return err
	}
	log.Printf("%s streams from %s as its synchronous standby %s", c.pgdata, p.pgdata, standbyName)
	fmt.Println(c.url())
	return nil
}

// openPrimary reads the cluster of dir, which must run. It is not locked:
// its devdb.conf is rewritten and reloaded, which a concurrent start of it
// would rewrite alike.
func openPrimary(dir string) (*cluster, error) {
	repo, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	p := &cluster{repo: repo, state: filepath.Join(repo, dir)}
	if _, err := os.Stat(filepath.Join(p.state, "port")); err != nil {
		return nil, fmt.Errorf("no primary in %s (start it first): %w", dir, err)
	}
	if err := p.loadPort(); err != nil {
		return nil, err
	}
	if err := p.setup(); err != nil {
		return nil, err
	}
	if running, err := p.running(); err != nil || !running {
		if err == nil {
			err = fmt.Errorf("the primary in %s does not run; start it first", dir)
		}
		return nil, err
	}
	return p, nil
}

// baseBackup copies the primary into the cluster's data directory with
// pg_basebackup (in a scratch directory renamed into place, as initdb)
// and marks it a standby (standby.signal); devdb.conf names the primary.
func (c *cluster) baseBackup(p *cluster) error {
	tmp, err := c.scratch(".basebackup")
	if err != nil {
		return err
	}
	log.Printf("taking a base backup of %s into %s", p.pgdata, c.pgdata)
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", p.port, superuser, standbyName)
	cmd := c.command("pg_basebackup", "-d", conninfo, "-D", tmp, "-X", "stream", "-c", "fast", "--no-sync")
	cmd.Stdout, cmd.Stderr = nil, nil
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	// The primary's own state stays behind: its pid file (not copied
	// anyway), its settings (rewritten at start), its synchronous standby.
	signal := filepath.Join(tmp, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return err
	}
	if err := c.own(signal); err != nil {
		return err
	}
	_ = os.Remove(c.pgdata)
	return os.Rename(tmp, c.pgdata)
}

// awaitSync waits until the primary reports its standby as synchronous.
func (c *cluster) awaitSync(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		state, err := c.psql("postgres", "SELECT sync_state FROM pg_stat_replication WHERE application_name = '"+standbyName+"'")
		if err == nil && state == "sync" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the standby is not the primary's synchronous standby after %s (sync_state %q, %v)", limit, state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// psql runs sql in database db of the cluster and returns its output.
func (c *cluster) psql(db, sql string) (string, error) {
	psql := filepath.Join(c.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			return "", errors.New("psql not found; install it with `apt-get install postgresql-client-15`")
		}
	}
	url := fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=10", superuser, c.port, db)
	cmd := exec.Command(psql, "-X", "-w", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("psql %q on port %d: %w: %s", sql, c.port, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// promote promotes the standby and waits until it accepts writes.
func promote() error {
	c, unlock, err := open(false)
	if err != nil {
		return err
	}
	if c == nil {
		return errors.New("no cluster to promote")
	}
	defer unlock()
	if err := c.setup(); err != nil {
		return err
	}
	log.Printf("promoting %s", c.pgdata)
	if err := c.command("pg_ctl", "-D", c.pgdata, "-w", "-t", "60", "promote").Run(); err != nil {
		return fmt.Errorf("pg_ctl promote: %w; the end of %s:\n%s", err, c.logFile, tail(c.logFile, 20))
	}
	// Restarted, it stays a primary: standby.signal is gone, and devdb.conf
	// still names no synchronous standby.
	return nil
}

// signalAll sends sig to every process of the cluster, the postmaster
// first: SIGKILL to kill it as a crashed host would lose it, SIGSTOP to
// freeze it (its host's kernel still answers its connections' packets),
// SIGCONT to thaw it.
func signalAll(sig syscall.Signal) error {
	c, unlock, err := open(false)
	if err != nil || c == nil {
		return err
	}
	defer unlock()
	if err := c.setup(); err != nil {
		return err
	}
	pids, err := c.processes()
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return errors.New("no process of the cluster runs")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal %d: %w", pid, err)
		}
	}
	log.Printf("sent %s to %d processes of %s", sig, len(pids), c.pgdata)
	if sig == syscall.SIGKILL {
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range pids {
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nil
}

// processes lists the cluster's processes, the postmaster first: those
// running our postgres in the data directory.
func (c *cluster) processes() ([]int, error) {
	exe, err1 := filepath.EvalSymlinks(filepath.Join(c.bin, "postgres"))
	dir, err2 := filepath.EvalSymlinks(c.pgdata)
	procs, err3 := filepath.Glob("/proc/[0-9]*")
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("list the cluster's processes: %w", err)
	}
	postmaster, _ := c.pidFileLine(0)
	var pids []int
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		e, _ := os.Readlink(p + "/exe")
		d, _ := os.Readlink(p + "/cwd")
		if e != exe || d != dir || !alive(pid) {
			continue
		}
		if pid == postmaster {
			pids = append([]int{pid}, pids...)
		} else {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// destroy kills the cluster and deletes it with its state directory.
func destroy() error {
	c, unlock, err := open(false)
	if err != nil || c == nil {
		return err
	}
	defer unlock()
	if err := c.setup(); err != nil {
		return err
	}
	if pids, err := c.processes(); err == nil {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range pids {
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if base := filepath.Dir(c.pgdata); base != c.state {
		if err := os.RemoveAll(base); err != nil {
			return err
		}
	}
	log.Printf("deleting %s", c.state)
	return os.RemoveAll(c.state)
}
