package eventstore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/eventstore"
)

func TestUpcastOldSchemaVersion(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)

	// A version-1 row as an older binary wrote it.
	_, err := store.Pool().Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
		VALUES ('people', 1, $1, 'test.person', 1, '{"name": "Ada Lovelace"}', '{}')`, ulid.Make().String())
	if err != nil {
		t.Fatal(err)
	}
	appended, err := store.Append(ctx, "people", 1, &person{FullName: "Grace Hopper"})
	if err != nil {
		t.Fatal(err)
	}
	if appended[0].SchemaVersion != 2 || appended[0].StreamVersion != 2 {
		t.Fatalf("appended %+v", appended[0])
	}

	events, err := store.ReadStream(ctx, "people", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].SchemaVersion != 1 || events[1].SchemaVersion != 2 {
		t.Fatalf("read %+v", events)
	}
	for i, want := range []string{"Ada Lovelace", "Grace Hopper"} {
		p, err := store.Registry().Decode(events[i])
		if err != nil {
			t.Fatalf("decode %d: %v", i, err)
		}
		got, ok := p.(*person)
		if !ok {
			t.Fatalf("decoded %T, want *person", p)
		}
		if got.FullName != want {
			t.Errorf("decoded %d: %+v, want %q", i, got, want)
		}
	}
}

// v3 is at schema version 3, with upcasters from 1 and 2 applied in turn.
type v3 struct {
	Parts []string `json:"parts"`
}

func (v3) EventType() string  { return "test.v3" }
func (v3) SchemaVersion() int { return 3 }

func TestUpcasterChain(t *testing.T) {
	r := eventstore.NewRegistry()
	var calls []int
	r.Register(v3{},
		// Out of order on purpose: upcasters are found by From.
		eventstore.Upcaster{From: 2, Up: func(data json.RawMessage) (json.RawMessage, error) {
			calls = append(calls, 2)
			var v struct{ Joined string }
			if err := json.Unmarshal(data, &v); err != nil {
				return nil, err
			}
			return json.Marshal(v3{Parts: strings.Split(v.Joined, ",")})
		}},
		eventstore.Upcaster{From: 1, Up: func(data json.RawMessage) (json.RawMessage, error) {
			calls = append(calls, 1)
			var v struct{ Single string }
			if err := json.Unmarshal(data, &v); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]string{"Joined": v.Single + ",x"})
		}},
	)
	p, err := r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 1, Data: json.RawMessage(`{"Single":"a"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(v3); !slices.Equal(got.Parts, []string{"a", "x"}) || !slices.Equal(calls, []int{1, 2}) {
		t.Errorf("from 1: %+v, upcasters %v", got, calls)
	}
	calls = nil
	p, err = r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 2, Data: json.RawMessage(`{"Joined":"b,c"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(v3); !slices.Equal(got.Parts, []string{"b", "c"}) || !slices.Equal(calls, []int{2}) {
		t.Errorf("from 2: %+v, upcasters %v", got, calls)
	}
	calls = nil
	p, err = r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 3, Data: json.RawMessage(`{"parts":["d"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(v3); !slices.Equal(got.Parts, []string{"d"}) || len(calls) != 0 {
		t.Errorf("current: %+v, upcasters %v", got, calls)
	}

	// A newer schema than this binary knows is an error, not a guess.
	if _, err := r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 4, Data: json.RawMessage(`{}`)}); err == nil {
		t.Error("schema version 4 decoded")
	}
	// Upcaster and JSON errors are reported.
	if _, err := r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 1, Data: json.RawMessage(`[]`)}); err == nil {
		t.Error("bad version-1 data decoded")
	}
	if _, err := r.Decode(eventstore.Event{Type: "test.v3", SchemaVersion: 3, Data: json.RawMessage(`{"parts": 5}`)}); err == nil {
		t.Error("bad current data decoded")
	}
}

func TestUnknownEventType(t *testing.T) {
	ctx := testContext(t)
	store := newStore(t)

	_, err := store.Registry().Decode(eventstore.Event{Type: "test.nope", Position: 7, Data: json.RawMessage(`{}`), SchemaVersion: 1})
	if !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Errorf("decode unknown type: %v", err)
	}
	_, err = store.Append(ctx, "s", eventstore.NoStream, unregistered{})
	if !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Errorf("append unknown type: %v", err)
	}
	// A registered name with another Go type (here a pointer where a value
	// was registered) is refused too.
	if _, err = store.Append(ctx, "s", eventstore.NoStream, &marker{"x"}); err == nil {
		t.Error("append of *marker accepted for registered marker")
	}
	if n := countRows(t, ctx, store.Pool(), "events"); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

func TestRegisterProgrammingErrors(t *testing.T) {
	requirePanic := func(t *testing.T, what string, fn func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		fn()
	}
	r := eventstore.NewRegistry()
	r.Register(marker{})
	requirePanic(t, "registering twice", func() { r.Register(marker{}) })
	requirePanic(t, "registering the name with another Go type", func() { r.Register(&marker{}) })
	requirePanic(t, "missing upcaster", func() { r.Register(&person{}) })
	requirePanic(t, "gap in upcasters", func() {
		r.Register(v3{}, eventstore.Upcaster{From: 1, Up: func(d json.RawMessage) (json.RawMessage, error) { return d, nil }})
	})
	if got := r.Types(); !slices.Equal(got, []string{"test.marker"}) {
		t.Errorf("types after failed registrations: %v", got)
	}
	if got := newRegistry().Types(); !slices.Equal(got, []string{"test.item_added", "test.marker", "test.person"}) {
		t.Errorf("types %v", got)
	}
}

// TestDecodeMessage: a subscriber's message decodes to the event it was
// read from and its payload; an older schema version is upcast; an unknown
// type gives the event and ErrUnknownEventType.
func TestDecodeMessage(t *testing.T) {
	reg := newRegistry()
	current := eventstore.Event{Position: 7, StreamID: "people", StreamVersion: 2, ID: "e-1", Type: "test.person",
		SchemaVersion: 2, Data: json.RawMessage(`{"full_name":"Grace Hopper"}`), TxID: 42,
		RecordedAt: time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC),
		Metadata:   eventstore.Metadata{Actor: "u-1", CorrelationID: "run-1"}}
	e, p, err := reg.DecodeMessage(eventstore.MessageOf(current))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := p.(*person); !ok || got.FullName != "Grace Hopper" {
		t.Fatalf("payload %#v", p)
	}
	if e.Position != current.Position || e.TxID != current.TxID || e.ID != current.ID || e.StreamID != current.StreamID ||
		e.StreamVersion != current.StreamVersion || e.SchemaVersion != current.SchemaVersion || e.Type != current.Type ||
		e.Metadata != current.Metadata || !e.RecordedAt.Equal(current.RecordedAt) || string(e.Data) != string(current.Data) {
		t.Errorf("event %+v, want %+v", e, current)
	}

	old := current
	old.SchemaVersion, old.Data = 1, json.RawMessage(`{"name":"Ada Lovelace"}`)
	if _, p, err := reg.DecodeMessage(eventstore.MessageOf(old)); err != nil || p.(*person).FullName != "Ada Lovelace" {
		t.Errorf("version 1 message: %#v, %v", p, err)
	}

	unknown := current
	unknown.Type = "test.unregistered"
	e, p, err = reg.DecodeMessage(eventstore.MessageOf(unknown))
	if !errors.Is(err, eventstore.ErrUnknownEventType) || p != nil || e.Position != 7 {
		t.Errorf("unknown type: %+v, %#v, %v", e, p, err)
	}
}
