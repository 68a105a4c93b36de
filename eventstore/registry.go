package eventstore

import (
	"fmt"
	"reflect"
	"sort"

	json "github.com/segmentio/encoding/json"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Payload is the body of an event. EventType returns the stored name of the
// event; it is a constant string, never derived from the Go type's name, so a
// renamed type does not rename stored events.
type Payload interface {
	EventType() string
}

// Versioned is implemented by payloads whose schema changed. A payload that
// does not implement it is at schema version 1.
type Versioned interface {
	SchemaVersion() int
}

// Upcaster turns the stored JSON of schema version From into version From+1.
type Upcaster struct {
	From int
	Up   func(data json.RawMessage) (json.RawMessage, error)
}

// Registry maps event type names to Go types and schema versions. It is
// built once at start-up and read concurrently afterwards.
type Registry struct {
	types map[string]registered
}

type registered struct {
	goType    reflect.Type
	version   int
	upcasters map[int]Upcaster
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{types: map[string]registered{}}
}

// Register adds the payload type of sample (a value or a pointer; decoding
// always yields a value of the same kind) with upcasters from every older
// schema version. It panics on a duplicate name or a gap in the upcasters,
// which are programming errors found at start-up.
func (r *Registry) Register(sample Payload, upcasters ...Upcaster) {
	name := sample.EventType()
	if _, dup := r.types[name]; dup {
		panic(fmt.Sprintf("eventstore: event type %q registered twice", name))
	}
	version := schemaVersion(sample)
	byFrom := make(map[int]Upcaster, len(upcasters))
	for _, u := range upcasters {
		byFrom[u.From] = u
	}
	for v := 1; v < version; v++ {
		if _, ok := byFrom[v]; !ok {
			panic(fmt.Sprintf("eventstore: event type %q at schema version %d has no upcaster from version %d", name, version, v))
		}
	}
	r.types[name] = registered{goType: reflect.TypeOf(sample), version: version, upcasters: byFrom}
}

// Types lists the registered event type names in order.
func (r *Registry) Types() []string {
	names := make([]string, 0, len(r.types))
	for name := range r.types {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func schemaVersion(p Payload) int {
	if v, ok := p.(Versioned); ok {
		return v.SchemaVersion()
	}
	return 1
}

// encode returns the stored form of p.
func (r *Registry) encode(p Payload) (name string, version int, data []byte, err error) {
	name = p.EventType()
	reg, ok := r.types[name]
	if !ok {
		return "", 0, nil, fmt.Errorf("encode %s: %w", name, ErrUnknownEventType)
	}
	if reflect.TypeOf(p) != reg.goType {
		return "", 0, nil, fmt.Errorf("encode %s: Go type %T is not the registered %s", name, p, reg.goType)
	}
	data, err = json.Marshal(p)
	if err != nil {
		return "", 0, nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return name, reg.version, data, nil
}

// DecodeMessage returns the event a message of a subscriber carries and
// its typed payload, upcast to the current schema version. An event of a
// type this binary does not know returns the event and
// ErrUnknownEventType.
func (r *Registry) DecodeMessage(msg *message.Message) (Event, Payload, error) {
	e, err := EventOf(msg)
	if err != nil {
		return Event{}, nil, err
	}
	p, err := r.Decode(e)
	return e, p, err
}

// MessageType returns the event type a message of a subscriber carries
// (from its metadata, without reading the payload).
func MessageType(msg *message.Message) string { return msg.Metadata.Get(metaType) }

// newValue returns a pointer to a new zero payload of the type, and a
// function that returns the payload as registered (pointer or value).
func (t registered) newValue() (any, func() Payload) {
	typ := t.goType
	isPtr := typ.Kind() == reflect.Pointer
	if isPtr {
		typ = typ.Elem()
	}
	ptr := reflect.New(typ)
	if isPtr {
		return ptr.Interface(), func() Payload { return ptr.Interface().(Payload) }
	}
	return ptr.Interface(), func() Payload { return ptr.Elem().Interface().(Payload) }
}

// Decode returns the typed payload of e, upcast to the current schema version.
func (r *Registry) Decode(e Event) (Payload, error) {
	reg, ok := r.types[e.Type]
	if !ok {
		return nil, fmt.Errorf("decode %s at position %d: %w", e.Type, e.Position, ErrUnknownEventType)
	}
	data := e.Data
	if e.SchemaVersion > reg.version {
		return nil, fmt.Errorf("decode %s at position %d: schema version %d is newer than this binary's %d", e.Type, e.Position, e.SchemaVersion, reg.version)
	}
	for v := e.SchemaVersion; v < reg.version; v++ {
		up, err := reg.upcasters[v].Up(data)
		if err != nil {
			return nil, fmt.Errorf("upcast %s at position %d from version %d: %w", e.Type, e.Position, v, err)
		}
		data = up
	}
	ptr, value := reg.newValue()
	if err := json.Unmarshal(data, ptr); err != nil {
		return nil, fmt.Errorf("decode %s at position %d: %w", e.Type, e.Position, err)
	}
	return value(), nil
}
