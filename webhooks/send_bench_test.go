package webhooks

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opsgate/opsgate/changes"
)

// BenchmarkSend times one attempt's exchange as the dispatcher makes it
// (the request signed and sent, the answer read) with a receiver on
// loopback that answers 204 at once: the dispatcher's share of a
// message's CPU, but for reading the stream and recording the answer
// (both in batches), and the receiver's.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d := NewDispatcher(nil, DispatcherConfig{AllowPrivate: true}, slog.New(slog.DiscardHandler))
	c := changes.Change{ID: "01M98Y7WCTDXW2CT9HBK1T5946", Cursor: changes.Cursor(42), Type: changes.RunAccepted, OccurredAt: time.Now(),
		TenantID: "01M98Y7VZ45YHHFC4MZTZTTXV5", Run: []byte(`{"id":"01M98Y7WCTDXW2CT9HBK1T5945","status":"queued"}`), Connection: []byte("null")}
	body, err := messageBody(c.Type, c.OccurredAt, c)
	if err != nil {
		b.Fatal(err)
	}
	attempt := claimed{endpoint: "E", message: c.ID, typ: c.Type, attempt: 1, url: srv.URL,
		secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, body: body}
	for b.Loop() {
		if r := d.send(b.Context(), attempt); r.status == nil || *r.status != http.StatusNoContent {
			b.Fatalf("answered %+v", r)
		}
	}
}
