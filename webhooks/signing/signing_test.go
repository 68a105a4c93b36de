package signing_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/opsgate/opsgate/webhooks/signing"
)

// referenceVectors are known answers published with the Standard Webhooks
// reference libraries (github.com/standard-webhooks/standard-webhooks,
// module github.com/standard-webhooks/standard-webhooks/libraries v1.3.0).
var referenceVectors = []struct {
	source    string
	secret    string
	id        string
	timestamp int64
	body      []byte
	want      string
}{
	{
		// libraries/go/webhook_test.go TestWebhookSign; the same values are
		// in libraries/javascript/src/webhook.test.ts ("sign function works"),
		// libraries/python/tests/test_webhooks.py, the Java, PHP, Ruby and C#
		// tests.
		source:    "go/javascript/python TestWebhookSign",
		secret:    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		id:        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		timestamp: 1614265330,
		body:      []byte(`{"test": 2432232314}`),
		want:      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
	},
	{
		// libraries/rust/src/lib.rs test_sign.
		source:    "rust test_sign",
		secret:    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
		id:        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
		timestamp: 1649367553,
		body:      []byte(`{"email":"test@example.com","username":"test_user"}`),
		want:      "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
	},
	{
		// libraries/javascript/src/webhook.test.ts "sign signs a binary
		// payload byte for byte": the body is every byte value 0..255, so it
		// is not valid UTF-8 and must be signed as raw bytes.
		source:    "javascript binaryPayloadSignature",
		secret:    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		id:        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		timestamp: 1614265330,
		body:      allBytes(),
		want:      "v1,sEcZ042G8Crqgxbybb3y0eDxQR3TcfYsk11I1XULhSI=",
	},
}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func mustDecode(t *testing.T, secret string) []byte {
	t.Helper()
	key, err := signing.DecodeSecret(secret)
	if err != nil {
		t.Fatalf("DecodeSecret(%q): %v", secret, err)
	}
	return key
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestReferenceVectors(t *testing.T) {
	for _, v := range referenceVectors {
		t.Run(v.source, func(t *testing.T) {
			ts := time.Unix(v.timestamp, 0)
			got := signing.Sign(mustDecode(t, v.secret), v.id, ts, v.body)
			if got != v.want {
				t.Fatalf("Sign = %s, want %s", got, v.want)
			}
			// Sub-second parts of the timestamp are not signed.
			if got := signing.Sign(mustDecode(t, v.secret), v.id, ts.Add(999*time.Millisecond), v.body); got != v.want {
				t.Errorf("Sign with fractional second = %s, want %s", got, v.want)
			}
			if err := signing.Verify([]string{v.secret}, headers(v.id, ts, v.want), v.body, ts, 0); err != nil {
				t.Errorf("Verify(reference signature) = %v", err)
			}
		})
	}
}

func TestNewSecret(t *testing.T) {
	a, b := signing.NewSecret(), signing.NewSecret()
	if a == b {
		t.Fatalf("two secrets are equal: %s", a)
	}
	for _, s := range []string{a, b} {
		if !strings.HasPrefix(s, signing.SecretPrefix) {
			t.Errorf("secret %q lacks prefix %q", s, signing.SecretPrefix)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, signing.SecretPrefix))
		if err != nil {
			t.Fatalf("secret %q is not standard base64: %v", s, err)
		}
		if len(raw) != 32 {
			t.Errorf("secret %q has %d bytes, want 32", s, len(raw))
		}
		key := mustDecode(t, s)
		if string(key) != string(raw) {
			t.Errorf("DecodeSecret(%q) does not return the encoded bytes", s)
		}
	}
}

func TestDecodeSecret(t *testing.T) {
	with := mustDecode(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	without := mustDecode(t, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if string(with) != string(without) || len(with) != 24 {
		t.Fatalf("prefixed and bare secrets decode differently: %x vs %x", with, without)
	}
	for _, bad := range []string{"", "whsec_", "whsec_not base64!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"} {
		if _, err := signing.DecodeSecret(bad); !errors.Is(err, signing.ErrSecret) {
			t.Errorf("DecodeSecret(%q) error = %v, want ErrSecret", bad, err)
		}
	}
}

func TestHeaderRotation(t *testing.T) {
	oldSecret, newSecret, otherSecret := signing.NewSecret(), signing.NewSecret(), signing.NewSecret()
	id, body := "msg_rotation", []byte(`{"type":"change.approved"}`)
	ts := time.Unix(1700000000, 0)

	h := signing.Header([][]byte{mustDecode(t, newSecret), mustDecode(t, oldSecret)}, id, ts, body)
	parts := strings.Split(h, " ")
	if len(parts) != 2 {
		t.Fatalf("Header = %q, want two space-separated signatures", h)
	}
	if parts[0] != signing.Sign(mustDecode(t, newSecret), id, ts, body) ||
		parts[1] != signing.Sign(mustDecode(t, oldSecret), id, ts, body) {
		t.Fatalf("Header = %q, want the signatures in secret order", h)
	}
	if one := signing.Header([][]byte{mustDecode(t, newSecret)}, id, ts, body); one != parts[0] {
		t.Errorf("Header with one secret = %q, want %q", one, parts[0])
	}

	hdr := headers(id, ts, h)
	for name, secrets := range map[string][]string{
		"old secret only":         {oldSecret},
		"new secret only":         {newSecret},
		"receiver with two":       {otherSecret, oldSecret},
		"receiver with both":      {newSecret, oldSecret},
		"receiver prefixless new": {strings.TrimPrefix(newSecret, signing.SecretPrefix)},
	} {
		if err := signing.Verify(secrets, hdr, body, ts, 0); err != nil {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
	if err := signing.Verify([]string{otherSecret}, hdr, body, ts, 0); !errors.Is(err, signing.ErrSignature) {
		t.Errorf("unrelated secret: Verify = %v, want ErrSignature", err)
	}
}

func TestVerifyTampered(t *testing.T) {
	v := referenceVectors[0]
	ts := time.Unix(v.timestamp, 0)

	cases := []struct {
		name string
		id   string
		ts   time.Time
		body []byte
	}{
		{"body", v.id, ts, []byte(`{"test": 2432232315}`)},
		{"body with trailing newline", v.id, ts, append(append([]byte{}, v.body...), '\n')},
		{"empty body", v.id, ts, nil},
		{"id", v.id + "x", ts, v.body},
		{"timestamp", v.id, ts.Add(time.Second), v.body},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := signing.Verify([]string{v.secret}, headers(c.id, c.ts, v.want), c.body, ts, 0)
			if !errors.Is(err, signing.ErrSignature) {
				t.Fatalf("Verify = %v, want ErrSignature", err)
			}
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	v := referenceVectors[0]
	ts := time.Unix(v.timestamp, 0)
	hdr := headers(v.id, ts, v.want)

	cases := []struct {
		name      string
		now       time.Time
		tolerance time.Duration
		wantErr   error
	}{
		{"same second", ts, signing.DefaultTolerance, nil},
		{"late by exactly the tolerance", ts.Add(5 * time.Minute), signing.DefaultTolerance, nil},
		{"early by exactly the tolerance", ts.Add(-5 * time.Minute), signing.DefaultTolerance, nil},
		{"too old", ts.Add(5*time.Minute + time.Second), signing.DefaultTolerance, signing.ErrTimestamp},
		{"too new", ts.Add(-5*time.Minute - time.Second), signing.DefaultTolerance, signing.ErrTimestamp},
		{"zero tolerance means default, ok", ts.Add(4 * time.Minute), 0, nil},
		{"zero tolerance means default, too old", ts.Add(6 * time.Minute), 0, signing.ErrTimestamp},
		{"tight tolerance, ok", ts.Add(10 * time.Second), 10 * time.Second, nil},
		{"tight tolerance, too old", ts.Add(11 * time.Second), 10 * time.Second, signing.ErrTimestamp},
		{"tight tolerance, too new", ts.Add(-11 * time.Second), 10 * time.Second, signing.ErrTimestamp},
		{"a day late", ts.Add(24 * time.Hour), signing.DefaultTolerance, signing.ErrTimestamp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := signing.Verify([]string{v.secret}, hdr, v.body, c.now, c.tolerance)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, c.wantErr)
			}
		})
	}
}

func TestVerifyHeaders(t *testing.T) {
	v := referenceVectors[0]
	ts := time.Unix(v.timestamp, 0)
	tsText := strconv.FormatInt(v.timestamp, 10)

	cases := []struct {
		name    string
		header  map[string]string
		wantErr error
	}{
		{"webhook- headers", map[string]string{
			"webhook-id": v.id, "webhook-timestamp": tsText, "webhook-signature": v.want,
		}, nil},
		{"canonical case", map[string]string{
			"Webhook-Id": v.id, "Webhook-Timestamp": tsText, "WEBHOOK-SIGNATURE": v.want,
		}, nil},
		{"svix- headers", map[string]string{
			"svix-id": v.id, "svix-timestamp": tsText, "svix-signature": v.want,
		}, nil},
		{"webhook- headers win over svix- ones", map[string]string{
			"webhook-id": v.id, "webhook-timestamp": tsText, "webhook-signature": v.want,
			"svix-id": "other", "svix-timestamp": "1", "svix-signature": "v1,AAAA",
		}, nil},
		{"families are not mixed", map[string]string{
			"webhook-id": v.id, "svix-timestamp": tsText, "svix-signature": v.want,
		}, signing.ErrHeaders},
		{"no headers", map[string]string{}, signing.ErrHeaders},
		{"missing id", map[string]string{
			"webhook-timestamp": tsText, "webhook-signature": v.want,
		}, signing.ErrHeaders},
		{"missing timestamp", map[string]string{
			"webhook-id": v.id, "webhook-signature": v.want,
		}, signing.ErrHeaders},
		{"missing signature", map[string]string{
			"webhook-id": v.id, "webhook-timestamp": tsText,
		}, signing.ErrHeaders},
		{"svix- missing signature", map[string]string{
			"svix-id": v.id, "svix-timestamp": tsText,
		}, signing.ErrHeaders},
	}
	for _, bad := range []string{"abc", tsText + ".5", "+" + tsText, "0" + tsText, " " + tsText, "1e9", "99999999999999999999"} {
		cases = append(cases, struct {
			name    string
			header  map[string]string
			wantErr error
		}{"timestamp " + strconv.Quote(bad), map[string]string{
			"webhook-id": v.id, "webhook-timestamp": bad, "webhook-signature": v.want,
		}, signing.ErrHeaders})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, val := range c.header {
				h.Set(k, val)
			}
			err := signing.Verify([]string{v.secret}, h, v.body, ts, 0)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, c.wantErr)
			}
		})
	}
}

func TestVerifySignatureList(t *testing.T) {
	v := referenceVectors[0]
	ts := time.Unix(v.timestamp, 0)
	good := v.want
	encoded := strings.TrimPrefix(good, "v1,")
	// Ceo5qE... is a wrong signature used throughout the reference tests.
	const wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

	cases := []struct {
		name    string
		sig     string
		wantErr error
	}{
		{"good among wrong ones", wrong + " v2," + encoded + " " + good + " " + wrong, nil},
		{"junk entries are skipped", ",,, v1,not,base64  v1a " + good, nil},
		{"asymmetric v1a entry is skipped", "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== " + good, nil},
		{"only wrong", wrong, signing.ErrSignature},
		{"right value under v1a", "v1a," + encoded, signing.ErrSignature},
		{"right value under v2", "v2," + encoded, signing.ErrSignature},
		{"right value without version", encoded, signing.ErrSignature},
		{"empty v1", "v1,", signing.ErrSignature},
		{"truncated", good[:len(good)-4], signing.ErrSignature},
		{"unpadded", strings.TrimSuffix(good, "="), signing.ErrSignature},
		// The last character of a 32-byte base64 value carries two padding
		// bits; changing them must not yield a second accepted spelling.
		{"non-canonical padding bits", strings.TrimSuffix(good, "E=") + "F=", signing.ErrSignature},
		{"uppercase version", "V1," + encoded, signing.ErrSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := signing.Verify([]string{v.secret}, headers(v.id, ts, c.sig), v.body, ts, 0)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("Verify(%q) = %v, want %v", c.sig, err, c.wantErr)
			}
		})
	}
}

func TestVerifyBadSecrets(t *testing.T) {
	v := referenceVectors[0]
	ts := time.Unix(v.timestamp, 0)
	for name, secrets := range map[string][]string{
		"none":          nil,
		"empty":         {""},
		"prefix only":   {"whsec_"},
		"not base64":    {"whsec_%%%"},
		"one bad first": {"whsec_%%%", v.secret},
	} {
		err := signing.Verify(secrets, headers(v.id, ts, v.want), v.body, ts, 0)
		if !errors.Is(err, signing.ErrSecret) {
			t.Errorf("%s: Verify = %v, want ErrSecret", name, err)
		}
	}
}

// TestReferenceLibraryInterop checks our signatures against the reference Go
// library (module github.com/standard-webhooks/standard-webhooks/libraries
// v1.3.0) in both directions. That library checks timestamps against
// time.Now, so these deliveries are stamped now.
func TestReferenceLibraryInterop(t *testing.T) {
	secret1, secret2 := signing.NewSecret(), signing.NewSecret()
	id := "msg_interop"
	body := []byte(`{"type":"change.approved","data":{"id":"chg_1"}}`)
	now := time.Now()

	t.Run("ours verified by reference", func(t *testing.T) {
		h := headers(id, now, signing.Header([][]byte{mustDecode(t, secret1), mustDecode(t, secret2)}, id, now, body))
		for i, s := range []string{secret1, secret2} {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatalf("NewWebhook: %v", err)
			}
			if err := wh.Verify(body, h); err != nil {
				t.Errorf("reference Verify with secret %d: %v", i+1, err)
			}
		}
		wh, err := standardwebhooks.NewWebhook(signing.NewSecret())
		if err != nil {
			t.Fatalf("NewWebhook: %v", err)
		}
		if err := wh.Verify(body, h); err == nil {
			t.Error("reference Verify accepted an unrelated secret")
		}
	})

	t.Run("reference verified by ours", func(t *testing.T) {
		wh, err := standardwebhooks.NewWebhook(secret1)
		if err != nil {
			t.Fatalf("NewWebhook: %v", err)
		}
		sig, err := wh.Sign(id, now, body)
		if err != nil {
			t.Fatalf("reference Sign: %v", err)
		}
		if want := signing.Sign(mustDecode(t, secret1), id, now, body); sig != want {
			t.Errorf("reference Sign = %s, ours = %s", sig, want)
		}
		h := http.Header{}
		h.Set(standardwebhooks.HeaderWebhookID, id)
		h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
		h.Set(standardwebhooks.HeaderWebhookSignature, sig)
		if err := signing.Verify([]string{secret2, secret1}, h, body, time.Now(), signing.DefaultTolerance); err != nil {
			t.Errorf("Verify(reference signature) = %v", err)
		}
		if err := signing.Verify([]string{secret2}, h, body, time.Now(), signing.DefaultTolerance); !errors.Is(err, signing.ErrSignature) {
			t.Errorf("Verify with the wrong secret = %v, want ErrSignature", err)
		}
	})

	t.Run("reference vectors through reference library", func(t *testing.T) {
		for _, v := range referenceVectors {
			wh, err := standardwebhooks.NewWebhook(v.secret)
			if err != nil {
				t.Fatalf("NewWebhook: %v", err)
			}
			ts := time.Unix(v.timestamp, 0)
			if err := wh.VerifyIgnoringTimestamp(v.body, headers(v.id, ts, signing.Sign(mustDecode(t, v.secret), v.id, ts, v.body))); err != nil {
				t.Errorf("%s: reference VerifyIgnoringTimestamp(ours) = %v", v.source, err)
			}
		}
	})
}
