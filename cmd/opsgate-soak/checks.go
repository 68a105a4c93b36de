package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/app"
)

// line is one row of the report: a check with a limit, or a figure
// shown for information (limit "").
type line struct {
	name, measured, limit string
	breach                bool
}

type report struct {
	header []string
	lines  []line
	info   []line
}

func (r *report) breaches() int {
	n := 0
	for _, l := range r.lines {
		if l.breach {
			n++
		}
	}
	return n
}

// count adds a check whose measured count must be zero.
func (r *report) zero(name string, n int, detail string) {
	m := strconv.Itoa(n)
	if detail != "" && n > 0 {
		m += " (" + detail + ")"
	}
	r.lines = append(r.lines, line{name: name, measured: m, limit: "0", breach: n > 0})
}

func (r *report) within(name string, d, limit time.Duration, ok bool) {
	r.lines = append(r.lines, line{name: name, measured: d.Round(time.Millisecond).String(), limit: "< " + limit.String(), breach: !ok || d >= limit})
}

func (r *report) note(name, value string) {
	r.info = append(r.info, line{name: name, measured: value})
}

func (r *report) print(w io.Writer) {
	fmt.Fprintln(w)
	for _, h := range r.header {
		fmt.Fprintln(w, h)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "check\tmeasured\tlimit\tresult")
	for _, l := range r.lines {
		result := "ok"
		if l.breach {
			result = "BREACH"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.name, l.measured, l.limit, result)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, l := range r.info {
		fmt.Fprintf(tw, "%s\t%s\n", l.name, l.measured)
	}
	tw.Flush()
	if n := r.breaches(); n > 0 {
		fmt.Fprintf(w, "\n%d BREACH(ES)\n", n)
	} else {
		fmt.Fprintln(w, "\nevery check passed")
	}
}

// inWindow reports whether t falls in a fault window.
func (r *run) inWindow(t time.Time) bool {
	for _, w := range r.windows {
		if !t.Before(w.from) && !t.After(w.to) {
			return true
		}
	}
	return false
}

// check runs every check against the store and the recorded exchanges.
func (r *run) check(ctx context.Context, pool *pgxpool.Pool) (*report, error) {
	rep := &report{header: []string{
		fmt.Sprintf("opsgate soak: 2 api, 1 projector, 2 workers (lease %s, heartbeat %s); %d clients for %s",
			r.cfg.lease, r.cfg.heartbeat, r.cfg.clients, r.cfg.load),
		"faults: " + r.cfg.describe(),
	}}
	if r.ha != nil {
		rep.header[0] = strings.Replace(rep.header[0], "opsgate soak:", "opsgate failover soak ("+r.cfg.failover+"): a primary and its synchronous standby, on a two-host DATABASE_URL;", 1)
	}
	hist, err := loadHistory(ctx, pool)
	if err != nil {
		return nil, err
	}

	// Acknowledged starts: every decision answered must be in the store.
	answered := map[string]int{}
	lostRuns := 0
	for _, ex := range r.exchanges {
		if ex.kind != "start" || ex.outcome == "" || ex.replayed {
			continue
		}
		answered[ex.outcome]++
		switch ex.outcome {
		case "accepted", "blocked":
			if !hist.decided[ex.runID] {
				lostRuns++
			}
		case "deduped", "scope_busy":
			if !hist.decided[ex.runID] {
				lostRuns++ // it points at a run the store does not know
			}
		}
	}
	lost := lostRuns + max(0, answered["deduped"]-hist.typeCount["StartDeduped"]) +
		max(0, answered["scope_busy"]-hist.typeCount["StartScopeBusy"])
	rep.zero("acknowledged starts lost", lost, "")

	var active int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`).Scan(&active); err != nil {
		return nil, err
	}
	rep.zero("runs not terminal at the end", active, "")
	rep.zero("moments with two active runs on a scope", hist.twoActive, "")
	rep.zero("stale or phantom events", len(hist.anomalies), strings.Join(first(hist.anomalies, 3), "; "))

	// Answers: 5xx outside the fault windows, 500 at any time, and
	// accepted runs read back as missing.
	var outside, internal, missing, noAnswer, unavailableIn, noRetryAfter int
	var firstNoAnswer string
	statuses := map[string]int{}
	for _, ex := range r.exchanges {
		statuses[statusName(ex.status)]++
		switch {
		case ex.status == 0:
			noAnswer++
			if firstNoAnswer == "" {
				firstNoAnswer = fmt.Sprintf("%s %s after %s: %s", ex.kind, ex.at.Format("15:04:05.000"), ex.at.Sub(ex.sent).Round(time.Millisecond), ex.err)
			}
		case ex.status == 500:
			internal++
		case ex.status >= 500 && !r.inWindow(ex.at):
			outside++
		case ex.status == 503:
			unavailableIn++
			if !ex.retryHdr {
				noRetryAfter++
			}
		}
		if (ex.kind == "readback" || ex.kind == "read") && ex.status == 404 && hist.decided[ex.runID] {
			missing++
		}
	}
	rep.zero("5xx answers outside the fault windows", outside, "")
	rep.zero("500 answers (at any time)", internal, "")
	rep.zero("503 answers without Retry-After", noRetryAfter, "")
	rep.zero("accepted runs read back as not found", missing, "")

	for i, d := range r.recoveries {
		if r.ha != nil {
			rep.within("read-model lag after the promotion", d, failoverWindowLimit, true)
			continue
		}
		rep.within(fmt.Sprintf("read-model lag after database return #%d", i+1), d, 5*time.Second, true)
	}
	rep.within("read-model lag after the load", r.finalLag, 5*time.Second, true)

	finishedLost, lostTotal, lostKilled, err := r.finishedReportedLost(hist)
	if err != nil {
		return nil, err
	}
	rep.zero("finished runs reported lost", len(finishedLost), strings.Join(first(finishedLost, 1), ", "))
	verify := 0
	if r.verifyErr != nil || !strings.Contains(r.verifyOut, "read models match") {
		verify = 1
	}
	rep.zero("projections verify differences", verify, lastLine(r.verifyOut))
	broken, unlinked, err := verifyChains(ctx, pool)
	if err != nil {
		return nil, err
	}
	rep.zero("audit chains that do not verify", len(broken), strings.Join(first(broken, 1), ", "))
	rep.zero("events not linked into the audit chain", unlinked, "")
	unsigned, inconsistent, checkpoints, err := r.checkpointChecks(ctx, pool)
	if err != nil {
		return nil, err
	}
	rep.zero("tenants whose history was not signed within 10 s of the end", len(unsigned), strings.Join(first(unsigned, 1), ", "))
	rep.zero("audit checkpoints that do not open or do not extend the one before", len(inconsistent), strings.Join(first(inconsistent, 1), ", "))
	rep.note("audit checkpoints signed", strconv.Itoa(checkpoints))
	leaks, err := r.tokensInLogs()
	if err != nil {
		return nil, err
	}
	rep.zero("tokens in plaintext in the logs", leaks, "")
	rep.zero("tokens in plaintext in a pg_dump (events included)", r.tokensIn(r.dump), "")
	// Half the tenants' requests came through the integration: each of
	// their events names the user it acted for.
	var via, viaWithoutUser int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE coalesce(metadata->>'actor', '') !~ '^[0-9A-HJKMNP-TV-Z]{26}$')
		FROM events WHERE metadata->>'via' IS NOT NULL`).Scan(&via, &viaWithoutUser); err != nil {
		return nil, fmt.Errorf("count the events recorded through the integration: %w", err)
	}
	rep.zero("events through the integration without their user as actor", viaWithoutUser, "")
	if !r.settled {
		rep.lines = append(rep.lines, line{name: "every run ended before the checks", measured: "no", limit: "yes", breach: true})
	}

	rep.note("starts answered", fmt.Sprintf("%d accepted, %d deduped, %d scope_busy, %d blocked",
		answered["accepted"], answered["deduped"], answered["scope_busy"], answered["blocked"]))
	rep.note("requests", fmt.Sprintf("%d (%s)", len(r.exchanges), formatCounts(statuses)))
	if r.ha != nil {
		rep.note("requests without an answer", fmt.Sprintf("%d (first: %s)", noAnswer, firstNoAnswer))
	} else {
		rep.note("requests without an answer", fmt.Sprintf("%d (an api process killed under them)", noAnswer))
	}
	rep.note("503 inside fault windows", strconv.Itoa(unavailableIn))
	rep.note("runs by final status", formatCounts(hist.finalStatus))
	rep.note("runs ended execution.lost", fmt.Sprintf("%d, of which %d on a worker killed with SIGKILL", lostTotal, lostKilled))
	rep.note("runs ended by a deadline", fmt.Sprintf("%d timed out (finish_by), %d not picked up (claim_by)",
		hist.deadlines["execution.timed_out"], hist.deadlines["execution.not_picked_up"]))
	rep.note("events in the store", strconv.Itoa(hist.events))
	rep.note("events recorded through the integration", strconv.Itoa(via))
	r.webhookChecks(rep)
	if r.ha != nil {
		if err := r.failoverChecks(rep, hist); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// verifyChains recomputes every audit chain from the database, once the
// chainer caught up: the chains that do not verify (with why), and the
// events no chain links.
func verifyChains(ctx context.Context, pool *pgxpool.Pool) (broken []string, unlinked int, err error) {
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.position = e.position)`).Scan(&unlinked); err != nil {
		return nil, 0, fmt.Errorf("count unlinked events: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT chain FROM audit_chain_heads ORDER BY chain`)
	if err != nil {
		return nil, 0, fmt.Errorf("list chains: %w", err)
	}
	chains, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, 0, fmt.Errorf("list chains: %w", err)
	}
	history := audit.NewHistory(app.NewStore(pool))
	for _, chain := range chains {
		if _, err := history.VerifyChain(ctx, chain); err != nil {
			var m *audit.Mismatch
			if !errors.As(err, &m) {
				return nil, 0, err
			}
			broken = append(broken, fmt.Sprintf("chain %q: %v", chain, m))
		}
	}
	return broken, unlinked, nil
}

// checkpointChecks waits up to 10 s for every tenant's latest checkpoint
// to cover its whole chain (the tenants that are not signed by then), and
// checks every checkpoint signed during the soak, through kills of the
// signing process: each opens with the deployment's key, is of its
// tenant's origin, and extends the
// one before it by a consistency proof (the latest's root is checked
// against the tree by verifyChains).
func (r *run) checkpointChecks(ctx context.Context, pool *pgxpool.Pool) (unsigned, inconsistent []string, signed int, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, err := pool.Query(ctx, `SELECT h.chain FROM audit_chain_heads h
			WHERE h.chain <> '' AND h.seq > coalesce((SELECT max(size) FROM audit_checkpoints k WHERE k.chain = h.chain), 0)`)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("find unsigned tenants: %w", err)
		}
		if unsigned, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, nil, 0, fmt.Errorf("find unsigned tenants: %w", err)
		}
		if len(unsigned) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the signer's next pass
	}
	rows, err := pool.Query(ctx, `SELECT chain, size, note FROM audit_checkpoints ORDER BY chain, size`)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read the checkpoints: %w", err)
	}
	type signedRow struct {
		Chain string
		Size  int64
		Note  string
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[signedRow])
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read the checkpoints: %w", err)
	}
	history := audit.NewHistory(app.NewStore(pool))
	var prev audit.Checkpoint
	for i, row := range all {
		cp, err := audit.OpenCheckpoint([]byte(row.Note), r.auditKey.Verifier)
		if err == nil && cp.Origin != audit.OriginOf("opsgate", row.Chain) {
			err = fmt.Errorf("origin %q", cp.Origin)
		}
		if err == nil && (i == 0 || all[i-1].Chain != row.Chain) {
			prev = audit.Checkpoint{}
		}
		if err == nil && prev.Size > 0 {
			var proof audit.Consistency
			if proof, err = history.ProveConsistency(ctx, row.Chain, prev.Size, cp.Size); err == nil {
				err = audit.CheckConsistency(prev, cp, proof.Hashes)
			}
		}
		if err != nil {
			inconsistent = append(inconsistent, fmt.Sprintf("tenant %s at size %d: %v", row.Chain, row.Size, err))
			continue
		}
		prev = cp
	}
	return unsigned, inconsistent, len(all), nil
}

// history is what the checks read of the event store.
type history struct {
	events      int
	decided     map[string]bool    // runs created by StartAccepted or StartBlocked
	typeCount   map[string]int     // events by type
	twoActive   int                // accepted while another run held the scope
	anomalies   []string           // stale or phantom events
	finalStatus map[string]int     // runs by their last status
	status      map[string]string  // each run's last status
	lost        map[string]lostRun // runs ended execution.lost
	deadlines   map[string]int     // runs ended by a deadline, by reason
}

// lostRun is a run ended execution.lost: the worker that held it, and when.
type lostRun struct {
	worker string
	at     time.Time
}

// loadHistory folds every scope stream in version order and checks that
// each is a valid life: versions 1..n without gaps; a start accepted only
// on a free scope; deduped and busy answers pointing at the active run;
// RunStarted only of the queued active run with the next epoch; a result
// only of the running active run at its current epoch; nothing after a run
// ended. It also checks that the runs table agrees with the history.
func loadHistory(ctx context.Context, pool *pgxpool.Pool) (*history, error) {
	h := &history{status: map[string]string{}, decided: map[string]bool{}, typeCount: map[string]int{}, finalStatus: map[string]int{}, lost: map[string]lostRun{}, deadlines: map[string]int{}}
	rows, err := pool.Query(ctx, `SELECT stream_id, stream_version, event_type, payload, recorded_at FROM events
		WHERE stream_id LIKE 'scope-%' ORDER BY stream_id, stream_version`)
	if err != nil {
		return nil, fmt.Errorf("read scope streams: %w", err)
	}
	defer rows.Close()
	type runState struct {
		status string
		epoch  int64
		worker string
	}
	runs := map[string]*runState{}
	var stream, activeRun string
	var version int64
	for rows.Next() {
		var s, typ string
		var v int64
		var raw []byte
		var at time.Time
		if err := rows.Scan(&s, &v, &typ, &raw, &at); err != nil {
			return nil, err
		}
		h.events++
		h.typeCount[typ]++
		if s != stream {
			stream, version, activeRun = s, 0, ""
		}
		if v != version+1 {
			h.anomalies = append(h.anomalies, fmt.Sprintf("%s jumps from version %d to %d", s, version, v))
		}
		version = v
		var p struct {
			RunID    string `json:"run_id"`
			Epoch    int64  `json:"epoch"`
			WorkerID string `json:"worker_id"`
			Reason   struct {
				Code string `json:"code"`
			} `json:"reason"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		bad := func(format string, args ...any) {
			h.anomalies = append(h.anomalies, fmt.Sprintf("%s v%d %s: %s", s, v, typ, fmt.Sprintf(format, args...)))
		}
		rs := runs[p.RunID]
		switch typ {
		case "StartAccepted":
			if activeRun != "" {
				h.twoActive++
			}
			activeRun = p.RunID
			runs[p.RunID] = &runState{status: "queued"}
			h.decided[p.RunID] = true
		case "StartBlocked":
			runs[p.RunID] = &runState{status: "blocked"}
			h.decided[p.RunID] = true
		case "StartDeduped", "StartScopeBusy":
			if p.RunID != activeRun {
				bad("answered with run %s while %q held the scope", p.RunID, activeRun)
			}
		case "RunStarted":
			switch {
			case rs == nil:
				bad("run %s was never accepted", p.RunID)
			case p.RunID != activeRun || rs.status != "queued":
				bad("run %s is %s, not the queued active run", p.RunID, rs.status)
			case p.Epoch != rs.epoch+1:
				bad("epoch %d after %d", p.Epoch, rs.epoch)
			default:
				rs.status, rs.epoch, rs.worker = "running", p.Epoch, p.WorkerID
			}
		case "RunSucceeded", "RunFailed":
			switch {
			case rs == nil:
				bad("run %s was never accepted", p.RunID)
			case p.Reason.Code == "execution.not_picked_up":
				// Ended while still queued: its claim deadline passed.
				if p.RunID != activeRun || rs.status != "queued" {
					bad("run %s is %s, not the queued active run, and was not picked up", p.RunID, rs.status)
				}
				rs.status, activeRun = "failed", ""
				h.deadlines[p.Reason.Code]++
			case p.RunID != activeRun || rs.status != "running":
				bad("run %s is %s, not the running active run", p.RunID, rs.status)
			case p.Epoch != rs.epoch:
				bad("result of epoch %d for a run at epoch %d", p.Epoch, rs.epoch)
			default:
				rs.status = map[string]string{"RunSucceeded": "succeeded", "RunFailed": "failed"}[typ]
				switch p.Reason.Code {
				case "execution.lost":
					h.lost[p.RunID] = lostRun{worker: rs.worker, at: at}
				case "execution.timed_out":
					h.deadlines[p.Reason.Code]++
				}
				activeRun = ""
			}
		case "RunCancelled":
			switch {
			case rs == nil:
				bad("run %s was never accepted", p.RunID)
			case p.RunID != activeRun:
				bad("run %s is %s, not the active run", p.RunID, rs.status)
			default:
				rs.status, activeRun = "cancelled", ""
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for id, rs := range runs {
		h.finalStatus[rs.status]++
		h.status[id] = rs.status
	}
	// The write side's runs table mirrors the history.
	mirror, err := pool.Query(ctx, `SELECT id, status FROM runs`)
	if err != nil {
		return nil, err
	}
	statuses, err := pgx.CollectRows(mirror, func(row pgx.CollectableRow) ([2]string, error) {
		var id, st string
		return [2]string{id, st}, row.Scan(&id, &st)
	})
	if err != nil {
		return nil, err
	}
	for _, st := range statuses {
		if rs := runs[st[0]]; rs == nil {
			h.anomalies = append(h.anomalies, fmt.Sprintf("runs row %s has no history", st[0]))
		} else if rs.status != st[1] {
			h.anomalies = append(h.anomalies, fmt.Sprintf("runs row %s is %s, its history says %s", st[0], st[1], rs.status))
		}
	}
	if len(statuses) != len(runs) {
		h.anomalies = append(h.anomalies, fmt.Sprintf("%d runs rows for %d runs in the history", len(statuses), len(runs)))
	}
	return h, nil
}

// finishedReportedLost returns the runs ended execution.lost although
// their worker had finished them (it logged that recording the result
// failed) and was still alive when the run was ended, so could have
// recorded the result. It also returns how many runs ended
// execution.lost, and how many of those were held by a worker that had
// been killed.
func (r *run) finishedReportedLost(h *history) (breaches []string, total, killed int, err error) {
	finished, err := r.workerLog("recording the result failed")
	if err != nil {
		return nil, 0, 0, err
	}
	for runID, l := range h.lost {
		total++
		if r.killedBefore(pidOf(l.worker), l.at) {
			killed++
			continue
		}
		if finished[runID] {
			breaches = append(breaches, runID)
		}
	}
	sort.Strings(breaches)
	return breaches, total, killed, nil
}

// pidOf is the process id in a worker id (host-pid-suffix).
func pidOf(workerID string) int {
	parts := strings.Split(workerID, "-")
	if len(parts) < 3 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	return pid
}

// killedBefore reports whether the process with pid was SIGKILLed before t.
func (r *run) killedBefore(pid int, t time.Time) bool {
	for _, p := range r.procs {
		if at, ok := p.killedAt(pid); ok && at.Before(t) {
			return true
		}
	}
	return false
}

// workerLog returns the runs named by worker log lines with message msg.
func (r *run) workerLog(msg string) (map[string]bool, error) {
	out := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(r.logsDir, "worker-*.log"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Msg   string `json:"msg"`
				RunID string `json:"run_id"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasPrefix(l.Msg, msg) && l.RunID != "" {
				out[l.RunID] = true
			}
		}
		fh.Close()
	}
	return out, nil
}

// tokensInLogs counts the tokens (users', the integration's and the
// admin's) found in any log.
func (r *run) tokensInLogs() (int, error) {
	files, _ := filepath.Glob(filepath.Join(r.logsDir, "*.log"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		n += r.tokensIn(b)
	}
	return n, nil
}

// secretInLogs counts the logs that hold the webhook secret's key (the
// secret without its whsec_ prefix).
func (r *run) secretInLogs(secret string) int {
	key := strings.TrimPrefix(secret, "whsec_")
	if key == "" {
		return 0
	}
	files, _ := filepath.Glob(filepath.Join(r.logsDir, "*.log"))
	n := 0
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(key)) {
			n++
		}
	}
	return n
}

// tokensIn counts the tokens whose secret part (the token without its
// prefix) is in b.
func (r *run) tokensIn(b []byte) int {
	n := 0
	for _, tok := range r.tokens {
		_, secret, _ := strings.Cut(tok, "_")
		if bytes.Contains(b, []byte(secret)) {
			n++
		}
	}
	return n
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func first(list []string, n int) []string {
	if len(list) > n {
		return list[:n]
	}
	return list
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
