package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsgate/opsgate/audit"
)

// benchKey returns the audit signing key file of the bench's database at
// dbURL, made on first use: every process on one database signs with it.
func benchKey(dbURL string) (string, error) {
	sum := sha256.Sum256([]byte(dbURL))
	dir := filepath.Join(os.TempDir(), "opsgate-bench-audit", hex.EncodeToString(sum[:8]))
	file := filepath.Join(dir, "bench.key")
	if _, err := os.Stat(file); err == nil {
		return file, nil
	}
	skey, _, err := audit.GenerateKey("opsgate-bench")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return file, os.WriteFile(file, []byte(skey+"\n"), 0o600)
}

// proofSamples is how many inclusion proofs the bench asks for.
const proofSamples = 1000

// treeFigures measures the Merkle tree of the seeded tenant (contract
// section 17) into rep.Audit: the bytes it stores per event, what growing
// it costs per event on top of the chain's own hashing (in process, over
// the exported lines), and the latency of inclusion proofs over HTTP once
// a checkpoint covers the whole history.
func treeFigures(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, export string, rep *report) error {
	var events, treeBytes float64
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(avg(pg_column_size(tree_hashes)), 0) FROM audit_chain WHERE chain = $1`,
		fx.tenant).Scan(&events, &treeBytes); err != nil {
		return fmt.Errorf("tree size: %w", err)
	}
	rep.Audit["tree_bytes_per_event"] = treeBytes
	chainUS, treeUS, err := chainAndTreeCost(export)
	if err != nil {
		return err
	}
	rep.Audit["chain_us_per_event"], rep.Audit["chain_tree_us_per_event"] = chainUS, treeUS

	progress("audit: waiting for a checkpoint of the tenant's %.0f events", events)
	size, err := c.checkpointSize(ctx, fx, int64(events), 2*time.Minute)
	if err != nil {
		return err
	}
	latencies := make([]time.Duration, 0, proofSamples)
	began := time.Now()
	for range proofSamples {
		seq := 1 + rand.Int64N(size)
		t0 := time.Now()
		var p audit.Proof
		status, err := c.do(ctx, "GET", fmt.Sprintf("/api/v1/audit/proof?tenant_id=%s&seq=%d", fx.tenant, seq), fx.token, nil, &p)
		if err != nil || status != http.StatusOK || p.TreeSize != size {
			return fmt.Errorf("proof of seq %d: status %d, %v", seq, status, err)
		}
		latencies = append(latencies, time.Since(t0))
	}
	rep.Results["audit_inclusion_proof"] = summarise(latencies, 0, time.Since(began))
	rep.Audit["proof_tree_size"] = float64(size)
	return nil
}

// checkpointSize waits until the tenant's latest checkpoint covers want
// events and returns its size.
func (c *client) checkpointSize(ctx context.Context, fx *fixture, want int64, wait time.Duration) (int64, error) {
	deadline := time.Now().Add(wait)
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/api/v1/audit/checkpoint?tenant_id="+fx.tenant, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+fx.token)
		resp, err := c.http.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			text, _, _ := strings.Cut(string(body), "\n\n")
			if cp, err := audit.ParseCheckpoint(text + "\n"); err == nil && cp.Size >= want {
				return cp.Size, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no checkpoint of %d events within %s (last answer %d: %s)", want, wait, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chainAndTreeCost times, over the lines of an export, the chain's hash of
// each event (audit.Line.Sum) alone, and with the tree's leaf added
// (audit.Builder.Add): microseconds per event each, on one core.
func chainAndTreeCost(export string) (chainUS, treeUS float64, err error) {
	f, err := os.Open(export)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var lines []audit.Line
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() && len(lines) < 200_000 {
		var l audit.Line
		if err := json.Unmarshal(s.Bytes(), &l); err != nil {
			return 0, 0, fmt.Errorf("read the export: %w", err)
		}
		l.Hash = ""
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return 0, 0, fmt.Errorf("the export has no lines")
	}
	// Each measured three times, alternating; the fastest of each counts
	// (the least disturbed by the rest of the machine).
	chainUS, treeUS = math.Inf(1), math.Inf(1)
	for range 3 {
		for _, withTree := range []bool{false, true} {
			us, err := perEvent(lines, withTree)
			if err != nil {
				return 0, 0, err
			}
			if withTree {
				treeUS = min(treeUS, us)
			} else {
				chainUS = min(chainUS, us)
			}
		}
	}
	return chainUS, treeUS, nil
}

// perEvent is the time, in microseconds per line, to hash each line as
// the chainer does, and to add its leaf to a tree if withTree.
func perEvent(lines []audit.Line, withTree bool) (float64, error) {
	b := audit.NewBuilder()
	began := time.Now()
	for _, l := range lines {
		sum, err := l.Sum()
		if err != nil {
			return 0, err
		}
		if withTree {
			raw, _ := hex.DecodeString(sum)
			if _, err := b.Add(audit.LeafHash(raw)); err != nil {
				return 0, err
			}
		}
	}
	return float64(time.Since(began).Microseconds()) / float64(len(lines)), nil
}
