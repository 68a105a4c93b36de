// Command devdb manages a private PostgreSQL cluster for developing and testing opsgate.
//
// Usage, from the repository root:
//
//	go run ./cmd/devdb start   # initialise if needed, start if stopped, print DATABASE_URL
//	go run ./cmd/devdb stop    # stop the cluster if it is running
//	go run ./cmd/devdb crash   # stop it at once, as a crash would (pg_ctl stop -m immediate)
//	go run ./cmd/devdb url     # print DATABASE_URL without starting anything
//	go run ./cmd/devdb bindir  # print the directory of the PostgreSQL binaries (pg_dump, psql)
//
// -state DIR (before the command) names another state directory under the repository
// root, for a second cluster of its own: make soak crashes .data/soak, never .data.
//
// A synchronous streaming standby of a cluster, and the faults of a failover (make soak
// FAILOVER=1 uses them on clusters of its own):
//
//	go run ./cmd/devdb -state .data/b -primary .data/a standby  # make .data/b a synchronous standby of .data/a, print its URL
//	go run ./cmd/devdb -state .data/b promote  # promote the standby (pg_ctl promote)
//	go run ./cmd/devdb -state .data/a kill     # SIGKILL every process of the cluster
//	go run ./cmd/devdb -state .data/a freeze   # SIGSTOP every process of the cluster (a hung server)
//	go run ./cmd/devdb -state .data/a thaw     # SIGCONT them
//	go run ./cmd/devdb -state .data/a destroy  # kill the cluster and delete it with its state directory
//
// standby takes a base backup of the primary (pg_basebackup), starts it as a hot standby
// streaming from the primary under application_name opsgate_standby, names it in the
// primary's synchronous_standby_names (so that every commit with synchronous_commit = on
// waits until the standby has flushed it) and waits until the primary reports it as
// sync. The standby's devdb.conf names no synchronous standby: once promoted, it commits
// alone, as an HA tool would have it until a new standby joins.
//
// State lives in .data/ under the repository root: the port (.data/port), a lock file
// serialising concurrent invocations (.data/devdb.lock), the cluster (.data/pg) and its
// log (.data/postgres.log). start prints exactly one line on stdout, the DATABASE_URL;
// everything else goes to stderr, so `url=$(go run ./cmd/devdb start)` works.
//
// PostgreSQL refuses to run as root. When devdb runs as root it runs initdb, pg_ctl and
// the server as the unprivileged "postgres" user instead. If that user cannot reach
// .data/ (a clone under /root, which is 0700), the cluster goes to
// /var/tmp/opsgate-devdb-<hash>/ and .data/cluster records where; .data/pg and
// .data/postgres.log are then symlinks to it.
//
// The server binaries are looked up in $PG_BINDIR, then `pg_config --bindir`, then
// /usr/lib/postgresql/15/bin, then $PATH.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	dbName    = "opsgate"
	superuser = "postgres" // database superuser, and the OS user that runs the server as root
	portMin   = 20000      // ports are chosen from [portMin, portMin+portSpan)
	portSpan  = 20000
	install   = "apt-get install postgresql-15"
)

const usage = "usage: devdb [-state DIR] [-primary DIR] start|stop|crash|url|bindir|standby|promote|kill|freeze|thaw|destroy"

// standbyName is the application_name of a standby devdb makes, as the
// primary's synchronous_standby_names names it.
const standbyName = "opsgate_standby"

func main() {
	log.SetFlags(0)
	log.SetPrefix("devdb: ")
	state := flag.String("state", ".data", "the cluster's state directory, relative to the repository root")
	primary := flag.String("primary", "", "standby: the state directory of the cluster to follow")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	flag.Parse()
	if flag.NArg() != 1 || !relative(*state) || (*primary != "" && !relative(*primary)) {
		log.Fatal(usage)
	}
	stateDir = filepath.Clean(*state)
	var err error
	switch flag.Arg(0) {
	case "start":
		err = start()
	case "stop":
		err = stop("fast")
	case "crash":
		err = stop("immediate")
	case "url":
		err = printURL()
	case "standby":
		if *primary == "" || filepath.Clean(*primary) == stateDir {
			log.Fatal("standby needs -primary DIR, another cluster's state directory")
		}
		err = standby(filepath.Clean(*primary))
	case "promote":
		err = promote()
	case "kill":
		err = signalAll(syscall.SIGKILL)
	case "freeze":
		err = signalAll(syscall.SIGSTOP)
	case "thaw":
		err = signalAll(syscall.SIGCONT)
	case "destroy":
		err = destroy()
	case "bindir":
		var dir string
		if dir, err = findBinDir(); err == nil {
			fmt.Println(dir)
		}
	default:
		err = fmt.Errorf("unknown command %q; %s", flag.Arg(0), usage)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// relative reports whether dir is a directory under the repository root.
func relative(dir string) bool {
	return !filepath.IsAbs(dir) && !strings.HasPrefix(filepath.Clean(dir), "..")
}

// cluster describes the repository's private PostgreSQL cluster.
type cluster struct {
	repo    string              // absolute repository root (the working directory)
	state   string              // repo/.data
	port    int                 // TCP port on 127.0.0.1
	bin     string              // directory holding initdb, pg_ctl and postgres
	runAs   *syscall.Credential // the postgres user when running as root, else nil
	pgdata  string              // the PostgreSQL data directory
	logFile string              // server log, beside pgdata
}

// repoHash identifies the checkout and the state directory: it seeds the port and names
// a relocated cluster.
func (c *cluster) repoHash() [sha256.Size]byte {
	if c.state == filepath.Join(c.repo, ".data") {
		return sha256.Sum256([]byte(c.repo)) // as before -state existed: same port, same place
	}
	return sha256.Sum256([]byte(c.state))
}

func (c *cluster) url() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, c.port, dbName)
}

// start initialises the cluster if needed, starts it unless it runs, creates the
// opsgate database if missing and prints the DATABASE_URL.
func start() error {
	c, unlock, err := open(true)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.setup(); err != nil {
		return err
	}
	if err := c.prepareDirs(); err != nil {
		return err
	}
	if !initialised(c.pgdata) {
		if err := c.initdb(); err != nil {
			return err
		}
	}
	running, err := c.running()
	if err != nil {
		return err
	}
	if running {
		log.Printf("reusing the cluster running in %s", c.pgdata)
		if err := c.adoptRunningPort(); err != nil {
			return err
		}
	} else if err := c.startServer(); err != nil {
		return err
	}
	if err := c.ensureDatabase(); err != nil {
		return err
	}
	fmt.Println(c.url())
	return nil
}

// stateDir is the state directory relative to the repository root (-state).
var stateDir = ".data"

// stop stops the cluster if it is running, in pg_ctl's mode (fast: roll back and
// disconnect; immediate: abort, as in a crash, recovered at the next start). A missing
// or stopped cluster is not an error.
func stop(mode string) error {
	c, unlock, err := open(false)
	if err != nil || c == nil {
		return err
	}
	defer unlock()
	if err := c.setup(); err != nil {
		if errors.Is(err, errNoBinaries) {
			log.Printf("nothing to stop: %v", err)
			return nil
		}
		return err
	}
	if running, err := c.running(); err != nil || !running {
		if err == nil {
			log.Print("no cluster is running")
		}
		return err
	}
	return c.command("pg_ctl", "-D", c.pgdata, "-m", mode, "-w", "-t", "60", "stop").Run()
}

// printURL prints the DATABASE_URL, choosing the port if none is recorded yet.
func printURL() error {
	c, unlock, err := open(true)
	if err != nil {
		return err
	}
	defer unlock()
	fmt.Println(c.url())
	return nil
}

// open locks repo/.data and reads (or chooses and records) the port. With create false,
// a missing .data means there is nothing to do and open returns a nil cluster.
func open(create bool) (*cluster, func(), error) {
	repo, err := os.Getwd()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return nil, nil, fmt.Errorf("run devdb from the repository root (no go.mod in %s)", repo)
	}
	c := &cluster{repo: repo, state: filepath.Join(repo, stateDir)}
	if _, err := os.Stat(c.state); errors.Is(err, os.ErrNotExist) && !create {
		log.Printf("no %s, nothing to do", c.state)
		return nil, nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(c.state), 0o755); err != nil {
		return nil, nil, err
	}
	// 0755 whatever the umask, so that the postgres user can reach .data/pg. A
	// concurrent devdb may create it first.
	if err := os.Mkdir(c.state, 0o755); err == nil {
		if err := os.Chmod(c.state, 0o755); err != nil {
			return nil, nil, err
		}
	} else if !errors.Is(err, os.ErrExist) {
		return nil, nil, err
	}
	lock, err := os.OpenFile(filepath.Join(c.state, "devdb.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, nil, err
	}
	unlock := func() { lock.Close() } // closing the file releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		log.Print("waiting for another devdb to finish")
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			unlock()
			return nil, nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
		}
	}
	if err := c.loadPort(); err != nil {
		unlock()
		return nil, nil, err
	}
	return c, unlock, nil
}

// loadPort reads .data/port, or derives a free port from the repository path and records it.
func (c *cluster) loadPort() error {
	b, err := os.ReadFile(filepath.Join(c.state, "port"))
	if err == nil {
		c.port, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("%s/port: %w", c.state, err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	sum := c.repoHash()
	return c.setPort(portMin + int(binary.BigEndian.Uint32(sum[:4])%portSpan))
}

// setPort records the first free port at or after from (wrapping within the range).
func (c *cluster) setPort(from int) error {
	for i := range portSpan {
		if p := portMin + (from-portMin+i)%portSpan; portFree(p) {
			return c.recordPort(p)
		}
	}
	return fmt.Errorf("no free TCP port in %d-%d", portMin, portMin+portSpan-1)
}

func (c *cluster) recordPort(port int) error {
	c.port = port
	return os.WriteFile(filepath.Join(c.state, "port"), []byte(strconv.Itoa(port)+"\n"), 0o644)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in $PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/15/bin or $PATH; install them with `" + install + "` (Debian package postgresql-15) or set PG_BINDIR")

// setup finds the binaries, the OS user to run them as and the cluster's location.
func (c *cluster) setup() error {
	var err error
	if c.bin, err = findBinDir(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if c.runAs, err = credential(superuser); err != nil {
			return err
		}
	}
	// .data/cluster points to a relocated cluster. Otherwise the cluster lives in
	// .data/pg, unless the postgres user cannot reach .data; then it is relocated.
	if b, err := os.ReadFile(filepath.Join(c.state, "cluster")); err == nil {
		c.pgdata = strings.TrimSpace(string(b))
	} else if c.runAs != nil && !c.reachable(c.state) {
		sum := c.repoHash()
		c.pgdata = filepath.Join("/var/tmp", "opsgate-devdb-"+hex.EncodeToString(sum[:6]), "pg")
	} else {
		c.pgdata = filepath.Join(c.state, "pg")
	}
	c.logFile = filepath.Join(filepath.Dir(c.pgdata), "postgres.log")
	return nil
}

func findBinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if !hasServer(dir) {
			return "", fmt.Errorf("PG_BINDIR=%s lacks initdb, pg_ctl or postgres; install them with `%s`", dir, install)
		}
		return dir, nil
	}
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	dirs = append(dirs, "/usr/lib/postgresql/15/bin")
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir, nil
		}
	}
	return "", errNoBinaries
}

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// credential returns the uid, gid and groups of the named OS user.
func credential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, devdb runs PostgreSQL as the OS user %q, which is missing (%v); it comes with `%s`, or run devdb as a non-root user", name, err, install)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	return cred, nil
}

// command prepares a binary from the bin directory, run as the postgres user when we
// are root, with its output on our stderr.
func (c *cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if c.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.runAs}
		cmd.Dir = "/" // the working directory may be unreachable for the postgres user
		cmd.Env = append(os.Environ(), "USER="+superuser, "LOGNAME="+superuser, "HOME=/")
	}
	return cmd
}

// reachable reports whether the postgres user can traverse every directory down to dir.
func (c *cluster) reachable(dir string) bool {
	test, err := exec.LookPath("test")
	if err != nil {
		return false
	}
	cmd := exec.Command(test, "-x", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.runAs}
	cmd.Dir = "/"
	return cmd.Run() == nil
}

// own hands path to the postgres user when we are root.
func (c *cluster) own(path string) error {
	if c.runAs == nil {
		return nil
	}
	return os.Lchown(path, int(c.runAs.Uid), int(c.runAs.Gid))
}

// prepareDirs creates the relocated cluster's directory (with its pointers in .data)
// and the log file, both owned by the user that runs the server.
func (c *cluster) prepareDirs() error {
	if base := filepath.Dir(c.pgdata); base != c.state {
		if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		// /var/tmp is shared: use the directory only if it is ours.
		st, err := os.Lstat(base)
		if err != nil {
			return err
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !st.IsDir() || !ok || (sys.Uid != 0 && (c.runAs == nil || sys.Uid != c.runAs.Uid)) {
			return fmt.Errorf("%s exists but is not a directory owned by root or %s; remove it", base, superuser)
		}
		if err := c.own(base); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.state, "cluster"), []byte(c.pgdata+"\n"), 0o644); err != nil {
			return err
		}
		// Convenience links; they may exist already.
		_ = os.Symlink(c.pgdata, filepath.Join(c.state, "pg"))
		_ = os.Symlink(c.logFile, filepath.Join(c.state, "postgres.log"))
	}
	f, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	return c.own(c.logFile)
}

func initialised(pgdata string) bool {
	_, err := os.Stat(filepath.Join(pgdata, "PG_VERSION"))
	return err == nil
}

// scratch returns an empty directory beside the data directory, named with
// suffix and owned by the cluster's user, to be renamed into place once it
// holds a whole cluster.
func (c *cluster) scratch(suffix string) (string, error) {
	tmp := c.pgdata + suffix
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", err
	}
	return tmp, c.own(tmp)
}

// initdb creates the cluster in a scratch directory and renames it into place, so an
// interrupted initdb never leaves a half-made cluster that looks initialised.
func (c *cluster) initdb() error {
	tmp, err := c.scratch(".initdb")
	if err != nil {
		return err
	}
	log.Printf("initialising a PostgreSQL cluster in %s", c.pgdata)
	cmd := c.command("initdb", "-D", tmp, "-U", superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
	cmd.Stdout, cmd.Stderr = nil, nil // its chatter is shown only when it fails
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// Our settings live in devdb.conf, rewritten before every start.
	conf, err := os.OpenFile(filepath.Join(tmp, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = conf.WriteString("\ninclude_if_exists = 'devdb.conf'\t# written by cmd/devdb\n")
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_ = os.Remove(c.pgdata) // an empty directory left by hand would block the rename
	return os.Rename(tmp, c.pgdata)
}

// running asks pg_ctl whether the server runs. Exit status 3 means no server is running
// (including a stale postmaster.pid); 4 means there is no accessible data directory.
func (c *cluster) running() (bool, error) {
	if err := c.clearZombieLock(); err != nil {
		return false, err
	}
	cmd := c.command("pg_ctl", "-D", c.pgdata, "status")
	cmd.Stdout, cmd.Stderr = nil, nil
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit) && (exit.ExitCode() == 3 || exit.ExitCode() == 4):
		return false, nil
	default:
		return false, fmt.Errorf("pg_ctl status: %w", err)
	}
}

// clearZombieLock removes the lock files of a postmaster that is gone. pg_ctl copes
// with a vanished one, but a postmaster killed with kill -9 can linger as a zombie until
// PID 1 reaps it (containers), and pg_ctl and postgres take a zombie for a live server.
func (c *cluster) clearZombieLock() error {
	pid, err := c.pidFileLine(0)
	if err != nil || pid <= 0 || alive(pid) {
		return nil
	}
	log.Printf("the postmaster (pid %d) is gone; removing its stale lock files", pid)
	locks, _ := filepath.Glob(filepath.Join(c.pgdata, ".s.PGSQL.*.lock"))
	for _, f := range append(locks, filepath.Join(c.pgdata, "postmaster.pid")) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// killOrphans kills what is left of a crashed server. Backends outlive a postmaster
// killed with kill -9 until they next look up, and while they hold its shared memory a
// new postmaster refuses to start. They are recognised by their executable (our postgres)
// and working directory (the data directory, where postgres changes to).
func (c *cluster) killOrphans() {
	exe, err1 := filepath.EvalSymlinks(filepath.Join(c.bin, "postgres"))
	dir, err2 := filepath.EvalSymlinks(c.pgdata)
	procs, err3 := filepath.Glob("/proc/[0-9]*")
	if err := errors.Join(err1, err2, err3); err != nil {
		log.Printf("not looking for orphaned backends: %v", err)
		return
	}
	var killed []int
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		e, _ := os.Readlink(p + "/exe")
		d, _ := os.Readlink(p + "/cwd")
		if e == exe && d == dir && alive(pid) && syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	if len(killed) > 0 {
		log.Printf("killed %d orphaned backends of a crashed server: %v", len(killed), killed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range killed {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || !strings.HasPrefix(string(stat[i:]), ") Z")
}

// pidFileLine returns line i of postmaster.pid as a number: 0 is the postmaster's pid,
// 3 its port.
func (c *cluster) pidFileLine(i int) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.pgdata, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) <= i {
		return 0, fmt.Errorf("%s/postmaster.pid is truncated", c.pgdata)
	}
	return strconv.Atoi(strings.TrimSpace(lines[i]))
}

// adoptRunningPort records the port a running server listens on (the fourth line of
// postmaster.pid), in case .data/port was lost while the server kept running.
func (c *cluster) adoptRunningPort() error {
	if p, err := c.pidFileLine(3); err == nil && p != c.port {
		log.Printf("the running server listens on port %d; recording it", p)
		return c.recordPort(p)
	}
	return nil
}

// startServer writes devdb.conf and starts the server with pg_ctl. If the recorded port
// has been taken by something else meanwhile, it moves to another free one.
func (c *cluster) startServer() error {
	if !portFree(c.port) {
		old := c.port
		if err := c.setPort(c.port + 1); err != nil {
			return err
		}
		log.Printf("port %d is taken by another process; moving the cluster to port %d", old, c.port)
	}
	if err := c.writeConf(c.settings()); err != nil {
		return err
	}
	log.Printf("starting PostgreSQL on 127.0.0.1:%d (log: %s)", c.port, c.logFile)
	c.killOrphans()
	err := c.command("pg_ctl", "-D", c.pgdata, "-l", c.logFile, "-w", "-t", "60", "start").Run()
	if err != nil {
		return fmt.Errorf("pg_ctl start failed (%w); the end of %s:\n%s", err, c.logFile, tail(c.logFile, 20))
	}
	return nil
}

// settings is the content of devdb.conf.
func (c *cluster) settings() string {
	// A Unix socket path must fit in sun_path (108 bytes); without one, TCP only.
	sockDir := c.pgdata
	if len(sockDir)+len("/.s.PGSQL.00000") >= 100 {
		sockDir = ""
	}
	settings := fmt.Sprintf(`# Written by cmd/devdb before every start; change cmd/devdb/main.go instead.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 400
shared_buffers = 256MB
fsync = on
# make bench times the change feed and webhooks from each event's commit (issue 25).
track_commit_timestamp = on
logging_collector = off	# pg_ctl -l sends the server log to %s
`, c.port, sockDir, c.logFile)
	settings += c.replicationSettings()
	return settings
}

// replicationSettings are the lines of devdb.conf that make the cluster a
// standby (state/primary_port names its primary's port) or a primary that
// waits for a synchronous standby (state/sync_standby names it).
func (c *cluster) replicationSettings() string {
	var out string
	if b, err := os.ReadFile(filepath.Join(c.state, "primary_port")); err == nil {
		out += fmt.Sprintf("hot_standby = on\nprimary_conninfo = 'host=127.0.0.1 port=%s user=%s application_name=%s'\n",
			strings.TrimSpace(string(b)), superuser, standbyName)
		// Promoted, it commits alone until a standby joins it.
		out += "synchronous_standby_names = ''\n"
	}
	if b, err := os.ReadFile(filepath.Join(c.state, "sync_standby")); err == nil {
		out += fmt.Sprintf("synchronous_standby_names = '%s'\nsynchronous_commit = on\n", strings.TrimSpace(string(b)))
	}
	return out
}

// writeConf writes devdb.conf: the server's settings, rewritten before
// every start and at every change of its role.
func (c *cluster) writeConf(settings string) error {
	conf := filepath.Join(c.pgdata, "devdb.conf")
	if err := os.WriteFile(conf, []byte(settings), 0o644); err != nil {
		return err
	}
	return c.own(conf)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ensureDatabase creates the opsgate database unless it exists. psql is a client and
// runs as the calling user, connecting over TCP.
func (c *cluster) ensureDatabase() error {
	psql := filepath.Join(c.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			return errors.New("psql not found; install it with `apt-get install postgresql-client-15`")
		}
	}
	maint := fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", superuser, c.port)
	run := func(sql string) (string, error) {
		cmd := exec.Command(psql, "-X", "-w", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", maint, "-c", sql)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	exists, err := run("SELECT 1 FROM pg_database WHERE datname = '" + dbName + "'")
	if err != nil {
		return fmt.Errorf("query databases on port %d: %w", c.port, err)
	}
	if exists == "1" {
		return nil
	}
	log.Printf("creating database %s", dbName)
	if _, err := run("CREATE DATABASE " + dbName); err != nil {
		return fmt.Errorf("create database %s: %w", dbName, err)
	}
	return nil
}
