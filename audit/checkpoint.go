package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A Checkpoint is the signed statement of a tenant's tree: its origin
// (<OPSGATE_AUDIT_ORIGIN>/<tenant id>), its size and its root hash, in the
// C2SP tlog-checkpoint format, signed as a note
// (golang.org/x/mod/sumdb/note).
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// OriginOf is the origin of a tenant's checkpoints.
func OriginOf(prefix, tenant string) string { return prefix + "/" + tenant }

// Text is the checkpoint's note text: origin, size and base64 root hash, a
// line each.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint reads a checkpoint's note text. Extension lines after
// the root hash are allowed and ignored, as C2SP says; anything else out
// of form is an error naming the line.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return Checkpoint{}, errors.New("a checkpoint has an origin, a size and a root hash, a line each, each ending in a newline")
	}
	var c Checkpoint
	if c.Origin = lines[0]; c.Origin == "" {
		return Checkpoint{}, errors.New("its first line, the origin, is empty")
	}
	size := lines[1]
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || strings.Trim(size, "0123456789") != "" || (len(size) > 1 && size[0] == '0') {
		return Checkpoint{}, fmt.Errorf("its second line, the tree size, is %q: not a decimal number without leading zeros", size)
	}
	c.Size = n
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("its third line, the root hash, is %q: not the base64 of 32 bytes", lines[2])
	}
	copy(c.Root[:], root)
	for i, ext := range lines[3 : len(lines)-1] {
		if ext == "" {
			return Checkpoint{}, fmt.Errorf("line %d is empty: a checkpoint's text has no blank line", i+4)
		}
	}
	return c, nil
}

// ErrSignature means a signed checkpoint carries no valid signature by the
// key it is checked with.
var ErrSignature = errors.New("not signed by the verifier key")

// OpenCheckpoint checks that signed is a note signed by v and returns its
// checkpoint. Signatures by other keys are ignored; an invalid signature
// by v, or none, is ErrSignature.
func OpenCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return Checkpoint{}, fmt.Errorf("%w %s: its signatures are by %s", ErrSignature, v.Name(), signerNames(unverified.Note.UnverifiedSigs))
	case errors.As(err, &invalid):
		return Checkpoint{}, fmt.Errorf("%w %s: its signature by that key is invalid (the text was changed after signing)", ErrSignature, v.Name())
	case err != nil:
		return Checkpoint{}, fmt.Errorf("not a signed note: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("not a checkpoint: %w", err)
	}
	return c, nil
}

func signerNames(sigs []note.Signature) string {
	var names []string
	for _, s := range sigs {
		names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	if len(names) == 0 {
		return "no one"
	}
	return strings.Join(names, ", ")
}

// Key is the deployment's note key: it signs checkpoints, and its
// verifier key is what auditors keep.
type Key struct {
	Signer   note.Signer
	Verifier note.Verifier
	// VerifierKey is the verifier key's text (name+hash+key).
	VerifierKey string
	// file is where the key was read from ("" for one made in memory).
	file string
}

// GenerateKey returns a new Ed25519 note key pair named name, as text:
// the signer key (secret) and the verifier key.
func GenerateKey(name string) (signerKey, verifierKey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// ParseKey reads a signer key (PRIVATE+KEY+name+hash+key) and derives its
// verifier key.
func ParseKey(signerKey string) (*Key, error) {
	skey := strings.TrimSpace(signerKey)
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("not a note signer key: %w", err)
	}
	// PRIVATE+KEY+name+hash+key, the key being the algorithm byte and the
	// Ed25519 seed, in base64 (which may hold '+' too).
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		return nil, errors.New("not an Ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(signer.Name(), pub)
	if err != nil {
		return nil, err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &Key{Signer: signer, Verifier: verifier, VerifierKey: vkey}, nil
}

// ReadKey reads the signer key in file (OPSGATE_AUDIT_SIGNING_KEY_FILE).
func ReadKey(file string) (*Key, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read the audit signing key: %w", err)
	}
	k, err := ParseKey(string(text))
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", file, err)
	}
	k.file = file
	return k, nil
}

// NewVerifier reads a verifier key given as its text (as GET
// /api/v1/audit/key answers it) or as the name of a file holding it.
func NewVerifier(keyOrFile string) (note.Verifier, error) {
	text := keyOrFile
	if _, err := note.NewVerifier(keyOrFile); err != nil {
		b, err := os.ReadFile(keyOrFile)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a verifier key (name+hash+key) nor a readable file: %w", keyOrFile, err)
		}
		text = strings.TrimSpace(string(b))
	}
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, fmt.Errorf("not a note verifier key (name+hash+key): %w", err)
	}
	return v, nil
}

// Sign signs c with k.
func (k *Key) Sign(c Checkpoint) ([]byte, error) {
	signed, err := note.Sign(&note.Note{Text: c.Text()}, k.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign the checkpoint of %s at size %d: %w", c.Origin, c.Size, err)
	}
	return signed, nil
}
