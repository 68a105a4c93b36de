package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/config"
)

const auditUsage = `usage:
  opsgate audit verify --tenant ID       recompute a tenant's chain and tree from the database
  opsgate audit verify --no-tenant       recompute the chain of events of no tenant (admin records)
  opsgate audit verify --file F          recompute the chain of an export (NDJSON; - for stdin), offline
      --digest SEQ:HASH   also check a digest kept earlier (GET /api/v1/audit/digest): the chain
                          must still hash to HASH at SEQ
      --checkpoint FILE --key KEY
                          (with --file) also check that the export's tree ends in the signed
                          checkpoint's root (GET /api/v1/audit/checkpoint)
  opsgate audit verify-proof --key KEY --proof FILE
                          check one event (GET /api/v1/audit/proof) against its signed
                          checkpoint, offline
  opsgate audit watch --url URL --token TOKEN --tenant ID --key KEY --state DIR [--no-export]
                          fetch the tenant's latest checkpoint, check that it extends the one
                          kept in DIR and that the events served (the export) are the history
                          it signed, and keep it; --no-export checks the checkpoints only
  opsgate audit keygen [--dir DIR] NAME
                          write a new checkpoint signing key: DIR/NAME.key, DIR/NAME.pub

KEY is a verifier key (GET /api/v1/audit/key) or a file holding one.
exit status: 0 verified, 1 what does not hold is named, 2 anything else (unreadable input,
misuse), 3 (watch) the served history does not extend the one kept: both checkpoints printed
`

// auditCommand runs `opsgate audit ...`. Offline verification needs no
// configuration and no database.
func auditCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	switch args[0] {
	case "verify":
		return verifyCommand(ctx, args[1:], stdout, stderr)
	case "verify-proof":
		return verifyProofCommand(args[1:], stdout, stderr)
	case "watch":
		return watchCommand(ctx, args[1:], stdout, stderr)
	case "keygen":
		return keygenCommand(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, auditUsage)
	return 2
}

// verifyCommand recomputes a chain (and its tree) from the database or
// an export.
func verifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tenant := fs.String("tenant", "", "")
	noTenant := fs.Bool("no-tenant", false, "")
	file := fs.String("file", "", "")
	digest := fs.String("digest", "", "")
	checkpointFile := fs.String("checkpoint", "", "")
	key := fs.String("key", "", "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || countSet(*tenant != "", *noTenant, *file != "") != 1 ||
		(*checkpointFile != "") != (*key != "") || (*checkpointFile != "" && *file == "") {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	var checkpoint *audit.Checkpoint
	if *checkpointFile != "" {
		cp, status, err := readCheckpoint(*checkpointFile, *key)
		if err != nil {
			fmt.Fprintf(stderr, "opsgate audit verify: %v\n", err)
			if status == 1 {
				fmt.Fprintf(stdout, "FAILED %v\n", err)
			}
			return status
		}
		checkpoint = &cp
	}
	var kept *audit.Head
	if *digest != "" {
		h, err := parseDigest(*digest)
		if err != nil {
			fmt.Fprintf(stderr, "opsgate audit verify: --digest %q: %v\n", *digest, err)
			return 2
		}
		kept = &h
	}
	var (
		v     audit.Verified
		err   error
		chain string
	)
	switch {
	case *file != "":
		chain = *file
		v, err = verifyFile(*file, kept, checkpoint)
	default:
		if *tenant != "" {
			if _, perr := ulid.ParseStrict(*tenant); perr != nil {
				fmt.Fprintf(stderr, "opsgate audit verify: --tenant %q is not a tenant id (a ULID)\n", *tenant)
				return 2
			}
		}
		chain = "tenant " + *tenant
		if *noTenant {
			chain = "the chain of no tenant"
		}
		v, err = verifyDatabase(ctx, *tenant, kept)
	}
	var mismatch *audit.Mismatch
	switch {
	case errors.As(err, &mismatch):
		fmt.Fprintf(stdout, "FAILED %s: %v\n", chain, mismatch)
		fmt.Fprintf(stdout, "%d event(s) before it verified\n", v.Events)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "opsgate audit verify: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "verified %s: %d event(s)", chain, v.Events)
	if v.Events > 0 {
		fmt.Fprintf(stdout, ", seq %d to %d, head %s", v.FirstSeq, v.LastSeq, v.Head)
	}
	fmt.Fprintln(stdout)
	if kept != nil {
		fmt.Fprintf(stdout, "the kept digest holds: seq %d hashes to %s\n", kept.Seq, kept.Hash)
	}
	switch {
	case checkpoint != nil:
		fmt.Fprintf(stdout, "the checkpoint holds: the first %d events are the tree of %s signed with root %s\n", checkpoint.Size, checkpoint.Origin, checkpoint.Root)
	case v.Checkpoint > 0:
		fmt.Fprintf(stdout, "the tree holds: its first %d events reach the root of the latest checkpoint recorded\n", v.Checkpoint)
	}
	if v.FirstSeq > 1 {
		fmt.Fprintf(stdout, "the export starts at seq %d: its link to the event before was taken on trust\n", v.FirstSeq)
	}
	return 0
}

// parseDigest reads SEQ:HASH, a chain's digest as an auditor keeps it.
func parseDigest(s string) (audit.Head, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 {
		return audit.Head{}, errors.New("want SEQ:HASH, a seq of 1 or more and the hash there")
	}
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return audit.Head{}, errors.New("the hash must be 64 lowercase hex digits")
	}
	return audit.Head{Seq: n, Hash: hash}, nil
}

func countSet(flags ...bool) int {
	n := 0
	for _, f := range flags {
		if f {
			n++
		}
	}
	return n
}

func verifyFile(name string, kept *audit.Head, checkpoint *audit.Checkpoint) (audit.Verified, error) {
	r := io.Reader(os.Stdin)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return audit.Verified{}, err
		}
		defer f.Close()
		r = f
	}
	switch {
	case checkpoint != nil && kept != nil:
		return audit.Verified{}, errors.New("give --digest or --checkpoint, not both")
	case checkpoint != nil:
		return audit.VerifyFileCheckpoint(r, *checkpoint)
	case kept != nil:
		return audit.VerifyFileAgainst(r, *kept)
	}
	return audit.VerifyFile(r)
}

func verifyDatabase(ctx context.Context, tenant string, kept *audit.Head) (audit.Verified, error) {
	cfg, err := config.FromEnv(os.Getenv)
	if err != nil {
		return audit.Verified{}, fmt.Errorf("configuration:\n%w", err)
	}
	pool, err := app.OpenPool(ctx, cfg)
	if err != nil {
		return audit.Verified{}, fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	history := audit.NewHistory(app.NewStore(pool))
	if kept != nil {
		return history.VerifyChainAgainst(ctx, tenant, *kept)
	}
	return history.VerifyChain(ctx, tenant)
}
