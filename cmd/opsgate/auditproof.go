package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/mod/sumdb/note"

	"github.com/opsgate/opsgate/audit"
)

// The offline commands of the verifiable audit (contract section 17).
// Exit status: 0 verified, 1 what does not hold is named, 2 the input
// could not be read (or the command was misused), 3 (watch) the served
// history does not extend the one kept.

// keygenCommand writes a new note key pair: NAME.key (the signer key,
// OPSGATE_AUDIT_SIGNING_KEY_FILE) and NAME.pub (the verifier key).
func keygenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", ".", "")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	name := fs.Arg(0)
	skey, vkey, err := audit.GenerateKey(name)
	if err == nil {
		_, err = note.NewSigner(skey)
	}
	if err != nil {
		fmt.Fprintf(stderr, "opsgate audit keygen: %q is not a key name (no spaces, no +): %v\n", name, err)
		return 2
	}
	private, public := filepath.Join(*dir, name+".key"), filepath.Join(*dir, name+".pub")
	for _, f := range []struct {
		name, text string
		mode       os.FileMode
	}{{private, skey, 0o600}, {public, vkey, 0o644}} {
		if err := writeNew(f.name, f.text+"\n", f.mode); err != nil {
			fmt.Fprintf(stderr, "opsgate audit keygen: %v\n", err)
			return 2
		}
	}
	fmt.Fprintf(stdout, "signer key (secret; OPSGATE_AUDIT_SIGNING_KEY_FILE=%s)\nverifier key (give it to auditors), in %s:\n%s\n", private, public, vkey)
	return 0
}

// writeNew writes a file that must not exist yet.
func writeNew(name, text string, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// verifyProofCommand checks one event's proof (GET /api/v1/audit/proof)
// against its signed checkpoint, offline.
func verifyProofCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit verify-proof", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	key := fs.String("key", "", "")
	file := fs.String("proof", "", "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *key == "" || *file == "" {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	v, err := audit.NewVerifier(*key)
	if err != nil {
		fmt.Fprintf(stderr, "opsgate audit verify-proof: --key: %v\n", err)
		return 2
	}
	raw, err := readInput(*file)
	if err != nil {
		fmt.Fprintf(stderr, "opsgate audit verify-proof: %v\n", err)
		return 2
	}
	cp, err := audit.VerifyProof(raw, v)
	if err != nil {
		fmt.Fprintf(stdout, "FAILED %s: %v\n", *file, err)
		return 1
	}
	var p struct {
		Event struct {
			Seq      int64 `json:"seq"`
			Position int64 `json:"position"`
		} `json:"event"`
	}
	_ = json.Unmarshal(raw, &p)
	fmt.Fprintf(stdout, "verified: the event of seq %d (position %d) is leaf %d of the tree of %d events of %s, signed by %s\n",
		p.Event.Seq, p.Event.Position, p.Event.Seq-1, cp.Size, cp.Origin, v.Name())
	return 0
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// readCheckpoint reads a signed checkpoint file and opens it with the
// verifier key given as --key: a file that cannot be read is exit 2, one
// that does not open is exit 1.
func readCheckpoint(file, key string) (audit.Checkpoint, int, error) {
	v, err := audit.NewVerifier(key)
	if err != nil {
		return audit.Checkpoint{}, 2, fmt.Errorf("--key: %w", err)
	}
	signed, err := os.ReadFile(file)
	if err != nil {
		return audit.Checkpoint{}, 2, err
	}
	cp, err := audit.OpenCheckpoint(signed, v)
	if err != nil {
		return audit.Checkpoint{}, 1, fmt.Errorf("checkpoint %s: %w", file, err)
	}
	return cp, 0, nil
}

// watchCommand fetches a tenant's latest checkpoint and checks that it
// extends the one kept in the state directory, then keeps it.
func watchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit watch", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	base := fs.String("url", "", "")
	token := fs.String("token", "", "")
	tenant := fs.String("tenant", "", "")
	key := fs.String("key", "", "")
	state := fs.String("state", "", "")
	noExport := fs.Bool("no-export", false, "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *base == "" || *token == "" || *tenant == "" || *key == "" || *state == "" {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	fail := func(status int, format string, args ...any) int {
		w := stdout
		if status == 2 {
			w = stderr
		}
		fmt.Fprintf(w, "opsgate audit watch: "+format+"\n", args...)
		return status
	}
	if _, err := ulid.ParseStrict(*tenant); err != nil {
		return fail(2, "--tenant %q is not a tenant id (a ULID)", *tenant)
	}
	v, err := audit.NewVerifier(*key)
	if err != nil {
		return fail(2, "--key: %v", err)
	}
	// No timeout on the whole exchange: the export lasts as long as the
	// history. Each answer must begin within 30 s.
	w := watcher{client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second}}, base: strings.TrimSuffix(*base, "/"), token: *token, tenant: *tenant}
	served, err := w.get(ctx, "/api/v1/audit/checkpoint", nil)
	if err != nil {
		return fail(2, "fetch the checkpoint: %v", err)
	}
	next, err := audit.OpenCheckpoint(served, v)
	if err != nil {
		return fail(1, "the served checkpoint: %v", err)
	}
	if !strings.HasSuffix(next.Origin, "/"+*tenant) {
		return fail(1, "the served checkpoint is of origin %q, not of tenant %s", next.Origin, *tenant)
	}
	keptFile := filepath.Join(*state, *tenant+".checkpoint")
	keptNote, err := os.ReadFile(keptFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(2, "read the kept checkpoint: %v", err)
	}
	evidence := func(format string, args ...any) int {
		fmt.Fprintf(stdout, "INCONSISTENT %s: "+format+"\n", append([]any{next.Origin}, args...)...)
		if keptNote != nil {
			fmt.Fprintf(stdout, "\nthe checkpoint kept in %s:\n%s", keptFile, keptNote)
		}
		fmt.Fprintf(stdout, "\nthe checkpoint served now:\n%s", served)
		return 3
	}
	var kept audit.Checkpoint
	if keptNote != nil {
		if kept, err = audit.OpenCheckpoint(keptNote, v); err != nil {
			return fail(1, "the kept checkpoint %s: %v", keptFile, err)
		}
		if kept.Origin != next.Origin {
			return fail(1, "the served checkpoint is of origin %q, the kept one of %q", next.Origin, kept.Origin)
		}
		var proof audit.Consistency
		if kept.Size > 0 && kept.Size < next.Size {
			body, err := w.get(ctx, "/api/v1/audit/consistency", url.Values{"from": {fmt.Sprint(kept.Size)}, "to": {fmt.Sprint(next.Size)}})
			if err == nil {
				err = json.Unmarshal(body, &proof)
			}
			if err != nil {
				return fail(2, "fetch the consistency proof from %d to %d: %v", kept.Size, next.Size, err)
			}
		}
		if err := audit.CheckConsistency(kept, next, proof.Hashes); err != nil {
			return evidence("%v", err)
		}
	}
	// The events served must be the ones the checkpoint signed: an event
	// changed, removed or swapped under an intact tree shows here.
	if !*noExport {
		body, err := w.stream(ctx, "/api/v1/audit/export")
		if err != nil {
			return fail(2, "fetch the export: %v", err)
		}
		_, err = audit.VerifyFileCheckpoint(body, next)
		body.Close()
		var mismatch *audit.Mismatch
		switch {
		case errors.As(err, &mismatch):
			return evidence("the events served are not the history signed: %v", mismatch)
		case err != nil:
			return fail(2, "read the export: %v", err)
		}
	}
	switch {
	case keptNote == nil:
		if err := keep(keptFile, served); err != nil {
			return fail(2, "%v", err)
		}
		fmt.Fprintf(stdout, "kept the first checkpoint of %s: %d events\n", next.Origin, next.Size)
	case next.Size == kept.Size:
		fmt.Fprintf(stdout, "unchanged: %s still has %d events\n", next.Origin, next.Size)
	default:
		if err := keep(keptFile, served); err != nil {
			return fail(2, "%v", err)
		}
		fmt.Fprintf(stdout, "consistent: %s grew from %d to %d events; kept the new checkpoint\n", next.Origin, kept.Size, next.Size)
	}
	return 0
}

func keep(file string, signed []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("keep the checkpoint: %w", err)
	}
	if err := audit.WriteFileAtomic(file, signed); err != nil {
		return fmt.Errorf("keep the checkpoint: %w", err)
	}
	return nil
}

// watcher reads a tenant's audit endpoints.
type watcher struct {
	client              *http.Client
	base, token, tenant string
}

func (w watcher) get(ctx context.Context, path string, query url.Values) ([]byte, error) {
	body, err := w.open(ctx, path, query)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(io.LimitReader(body, 1<<20))
}

// stream opens the answer of path, to be read and closed by the caller.
func (w watcher) stream(ctx context.Context, path string) (io.ReadCloser, error) {
	return w.open(ctx, path, nil)
}

func (w watcher) open(ctx context.Context, path string, query url.Values) (io.ReadCloser, error) {
	if query == nil {
		query = url.Values{}
	}
	query.Set("tenant_id", w.tenant)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+path+"?"+query.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var p struct{ Code, Detail string }
		_ = json.Unmarshal(body, &p)
		return nil, fmt.Errorf("%s answered %s %s %s", path, resp.Status, p.Code, p.Detail)
	}
	return resp.Body, nil
}
