// Package signing signs and verifies webhook deliveries according to
// Standard Webhooks 1.0 (https://www.standardwebhooks.com/).
//
// A sender signs the string "<id>.<unix seconds>.<body>" with HMAC-SHA256
// under a shared secret and sends the result, base64 encoded and prefixed
// with the version tag "v1,", in the webhook-signature header, together with
// the webhook-id and webhook-timestamp headers. During secret rotation the
// signature header carries one signature per secret, separated by spaces,
// and a receiver accepts the delivery if any of them matches.
//
// Secrets are presented to people as "whsec_" followed by the standard base64
// encoding of the raw key bytes.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix is the prefix that marks a serialized symmetric signing
// secret, as the specification recommends.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far the webhook-timestamp header may be from the
// receiver's clock, in either direction, before Verify rejects a delivery.
// It is the value the reference libraries use.
const DefaultTolerance = 5 * time.Minute

// These are the names of the headers that carry a delivery's metadata.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// The svix- headers are the names used by Svix, where the scheme originates.
// Verify reads them when none of the webhook- headers is present, so that
// deliveries from senders that only use the older names still verify.
const (
	svixHeaderID        = "svix-id"
	svixHeaderTimestamp = "svix-timestamp"
	svixHeaderSignature = "svix-signature"
)

// signatureVersion is the version tag of symmetric (HMAC-SHA256) signatures.
const signatureVersion = "v1"

// secretSize is the number of random bytes in a secret made by NewSecret.
const secretSize = 32

// These sentinel errors classify why Verify rejected a delivery. The errors
// Verify returns wrap exactly one of them, so callers can test with errors.Is.
var (
	// ErrHeaders means a required header is missing or malformed.
	ErrHeaders = errors.New("signing: missing or malformed webhook headers")
	// ErrTimestamp means the timestamp is too far from the receiver's clock.
	ErrTimestamp = errors.New("signing: webhook timestamp outside the allowed tolerance")
	// ErrSignature means no v1 signature in the header matches any secret.
	ErrSignature = errors.New("signing: no matching webhook signature")
	// ErrSecret means a secret given to Verify is empty or not valid base64.
	// It points at the receiver's configuration rather than at the delivery.
	ErrSecret = errors.New("signing: invalid webhook secret")
)

// NewSecret returns a new random signing secret: SecretPrefix followed by the
// standard base64 encoding of 32 bytes from crypto/rand.
func NewSecret() string {
	key := make([]byte, secretSize)
	// crypto/rand.Read never returns an error; it crashes the program if
	// the operating system cannot supply randomness.
	_, _ = rand.Read(key)
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// DecodeSecret returns the raw key bytes of a serialized secret. The
// SecretPrefix is optional; the rest must be standard base64 and must not
// decode to an empty key. The returned error wraps ErrSecret.
func DecodeSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return nil, fmt.Errorf("%w: decoding base64: %w", ErrSecret, err)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: the secret is empty", ErrSecret)
	}
	return key, nil
}

// Sign returns the v1 signature of a delivery: "v1," followed by the
// standard base64 encoding of HMAC-SHA256 over "<id>.<unix seconds>.<body>"
// keyed with secret. Only whole seconds of timestamp are signed. The id
// should not contain a full stop, as the specification warns.
func Sign(secret []byte, id string, timestamp time.Time, body []byte) string {
	mac := computeMAC(secret, id, strconv.FormatInt(timestamp.Unix(), 10), body)
	return signatureVersion + "," + base64.StdEncoding.EncodeToString(mac)
}

// Header returns the value of the webhook-signature header for a delivery
// signed with each of secrets, in order, separated by single spaces. Sending
// signatures under both the new and the old secret lets receivers rotate
// secrets without rejecting deliveries.
func Header(secrets [][]byte, id string, timestamp time.Time, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, secret := range secrets {
		sigs[i] = Sign(secret, id, timestamp, body)
	}
	return strings.Join(sigs, " ")
}

// Verify checks a received delivery. It reads the webhook-id,
// webhook-timestamp and webhook-signature headers, or, when none of those
// is present but some svix- header is, the svix-id, svix-timestamp and
// svix-signature headers. The two sets are never mixed.
//
// Verify returns an error wrapping ErrHeaders if a header is missing or the
// timestamp is not a plain decimal number of seconds, and an error wrapping
// ErrTimestamp if the timestamp is more than tolerance before or after now.
// A tolerance of zero or less means DefaultTolerance. Otherwise Verify
// returns nil if any "v1," signature in the header matches the delivery
// under any of secrets, comparing in constant time, and an error wrapping
// ErrSignature if none does. Signatures with other version tags, such as the
// asymmetric "v1a,", are ignored. Secrets are serialized as DecodeSecret
// expects; if one of them is invalid, Verify returns an error wrapping
// ErrSecret before looking at the delivery.
func Verify(secrets []string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secrets) == 0 {
		return fmt.Errorf("%w: no secrets to verify against", ErrSecret)
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		key, err := DecodeSecret(s)
		if err != nil {
			return fmt.Errorf("verifying webhook: secret %d: %w", i, err)
		}
		keys[i] = key
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}

	idName, tsName, sigName := HeaderID, HeaderTimestamp, HeaderSignature
	if !anyHeader(header, HeaderID, HeaderTimestamp, HeaderSignature) &&
		anyHeader(header, svixHeaderID, svixHeaderTimestamp, svixHeaderSignature) {
		idName, tsName, sigName = svixHeaderID, svixHeaderTimestamp, svixHeaderSignature
	}
	id, rawTS, sigHeader := header.Get(idName), header.Get(tsName), header.Get(sigName)
	for _, h := range [...]struct{ name, value string }{{idName, id}, {tsName, rawTS}, {sigName, sigHeader}} {
		if h.value == "" {
			return fmt.Errorf("verifying webhook: %w: %s header is missing", ErrHeaders, h.name)
		}
	}

	secs, err := strconv.ParseInt(rawTS, 10, 64)
	if err != nil || strconv.FormatInt(secs, 10) != rawTS {
		return fmt.Errorf("verifying webhook: %w: %s header %q is not a decimal unix timestamp", ErrHeaders, tsName, rawTS)
	}
	if skew := now.Sub(time.Unix(secs, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("verifying webhook: %w: %s %d is %s from now, more than %s", ErrTimestamp, tsName, secs, skew.Abs().Truncate(time.Second), tolerance)
	}

	var candidates [][]byte
	for _, entry := range strings.Fields(sigHeader) {
		version, encoded, ok := strings.Cut(entry, ",")
		if !ok || version != signatureVersion {
			continue
		}
		sig, err := base64.StdEncoding.Strict().DecodeString(encoded)
		if err != nil || len(sig) != sha256.Size {
			continue
		}
		candidates = append(candidates, sig)
	}
	for _, key := range keys {
		want := computeMAC(key, id, rawTS, body)
		for _, sig := range candidates {
			if hmac.Equal(sig, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("verifying webhook %q: %w (%d v1 signatures, %d secrets)", id, ErrSignature, len(candidates), len(keys))
}

// anyHeader reports whether header has a non-empty value for any of names.
func anyHeader(header http.Header, names ...string) bool {
	for _, name := range names {
		if header.Get(name) != "" {
			return true
		}
	}
	return false
}

// computeMAC returns HMAC-SHA256 over "<id>.<timestamp>.<body>" keyed with
// key, where timestamp is already formatted as decimal seconds.
func computeMAC(key []byte, id, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(timestamp))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}
