package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The failover soak (make soak FAILOVER=1): the processes and the load of
// the soak, on a primary and its synchronous streaming standby, with one
// database fault: the primary killed (SIGKILL) or frozen (SIGSTOP), and
// the standby promoted at once. The old primary stays down. Its checks
// (failoverChecks) come on top of the soak's, which read the promoted
// primary.

// failoverWindowLimit bounds the failover window: from the primary's
// failure to the first start accepted after it.
const failoverWindowLimit = 15 * time.Second

// failoverConfig is the failover soak of variant (kill or freeze); short
// is the variant make test runs.
func failoverConfig(root, variant string, short bool) config {
	c := fullConfig(root)
	c.failover = variant
	c.load = 75 * time.Second
	c.faults = []fault{{at: 25 * time.Second, what: "failover"}}
	if short {
		c.load, c.clients = 30*time.Second, 8
		c.faults = []fault{{at: 10 * time.Second, what: "failover"}}
	}
	return c
}

// failover fails the primary as the variant says and promotes the standby
// at once; it then measures how long the read models took to catch up
// on the new primary.
func (r *run) failover(ctx context.Context, pool *pgxpool.Pool) error {
	how := map[string]string{"kill": "kill", "freeze": "freeze"}[r.cfg.failover]
	r.cfg.logf("failover: %s the primary, promote the standby", strings.ToUpper(how[:1])+how[1:])
	r.failing = time.Now()
	if _, err := r.ha.primary.run(how); err != nil {
		return err
	}
	// The window is measured from the moment the primary is gone (or
	// frozen); answers that failed as it went count in it from the start.
	r.failedAt = time.Now()
	if _, err := r.ha.standby.run("promote"); err != nil {
		return err
	}
	r.promotedAt = time.Now()
	r.cfg.logf("the standby was promoted %s after the primary failed", r.promotedAt.Sub(r.failedAt).Round(time.Millisecond))
	lag, ok := catchUp(context.WithoutCancel(ctx), pool, r.promotedAt, 60*time.Second, projectors)
	if !ok {
		r.cfg.logf("the read models did not catch up within a minute of the promotion")
	}
	r.cfg.logf("read models caught up %s after the promotion", lag.Round(time.Millisecond))
	r.recoveries = append(r.recoveries, lag)
	return nil
}

// failoverWindow is the failover's window from the exchanges: from the
// primary's failure to the first start accepted after it (ok false if
// none was).
func (r *run) failoverWindow() (end time.Time, ok bool) {
	for _, ex := range r.exchanges {
		if ex.kind == "start" && ex.outcome == "accepted" && !ex.replayed && ex.sent.After(r.failedAt) &&
			(!ok || ex.at.Before(end)) {
			end, ok = ex.at, true
		}
	}
	return end, ok
}

// syncCancelLine is PostgreSQL's warning that it stopped waiting for the
// synchronous standby to confirm a commit (both of its wordings).
var syncCancelLine = regexp.MustCompile(`canceling (the )?wait for synchronous replication`)

// failoverChecks adds the failover soak's lines to rep.
func (r *run) failoverChecks(rep *report, h *history) error {
	end, ok := r.failoverWindow()
	window := end.Sub(r.failedAt)
	if !ok {
		window = failoverWindowLimit
	}
	rep.lines = append(rep.lines, line{name: "failover window (primary failed to first accepted start)",
		measured: window.Round(time.Millisecond).String(), limit: "<= " + failoverWindowLimit.String(),
		breach: !ok || window > failoverWindowLimit})
	// Answers other than 503 within the window (5xx outside it are the
	// soak's own line, "5xx answers outside the fault windows").
	other := 0
	for _, ex := range r.exchanges {
		if ex.status >= 500 && ex.status != 503 && r.inWindow(ex.at) {
			other++
		}
	}
	rep.zero("5xx other than 503 in the failover window", other, "")

	// Every cancel answered 200 and every result a worker recorded is the
	// run's state on the promoted primary.
	recorded, err := r.recordedResults()
	if err != nil {
		return err
	}
	var wrong []string
	cancels := 0
	for _, ex := range r.exchanges {
		if ex.kind != "cancel" || ex.status != 200 {
			continue
		}
		cancels++
		if st := h.status[ex.runID]; st != "cancelled" {
			wrong = append(wrong, fmt.Sprintf("cancel of %s: %s", ex.runID, st))
		}
	}
	for runID, status := range recorded {
		if st := h.status[runID]; st != status {
			wrong = append(wrong, fmt.Sprintf("result %s of %s: %s", status, runID, st))
		}
	}
	sort.Strings(wrong)
	rep.zero("recorded completions and cancels whose run is not in that state", len(wrong), strings.Join(first(wrong, 2), "; "))

	lines, err := r.syncCancelLines()
	if err != nil {
		return err
	}
	rep.zero(`PostgreSQL log lines "canceling wait for synchronous replication"`, lines, "")

	// Runs the failover orphaned (claimed, the claim's answer lost) end
	// once their lease ran out after the promotion: within a lease and two
	// reaper passes of the window's end.
	limit := end.Add(r.cfg.lease + 2*time.Second)
	late := 0
	for _, l := range h.lost {
		if !ok || l.at.After(limit) {
			late++
		}
	}
	rep.zero("runs orphaned by the failover ended after lease + reap", late, "")
	rep.note("failover", fmt.Sprintf("standby promoted %s after the primary failed; %d runs orphaned (ended execution.lost); %d results recorded, %d cancels answered 200",
		r.promotedAt.Sub(r.failedAt).Round(time.Millisecond), len(h.lost), len(recorded), cancels))
	return nil
}

// recordedResults are the results the workers recorded (they log each at
// debug level), by run.
func (r *run) recordedResults() (map[string]string, error) {
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(r.logsDir, "worker-*.log"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("read the worker logs: %w", err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Msg    string `json:"msg"`
				RunID  string `json:"run_id"`
				Status string `json:"status"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasPrefix(l.Msg, "result recorded") && l.RunID != "" {
				out[l.RunID] = l.Status
			}
		}
		fh.Close()
	}
	return out, nil
}

// syncCancelLines counts the lines of both servers' logs in which
// PostgreSQL says it cancelled a commit's wait for the standby.
func (r *run) syncCancelLines() (int, error) {
	n := 0
	for _, path := range r.ha.logs(r.cfg.root) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("read the server log: %w", err)
		}
		n += len(syncCancelLine.FindAll(b, -1))
	}
	return n, nil
}
