// Package model is the validated form of a spec. Build checks every rule of
// the spec language, reports every problem it finds, and decides every Go
// identifier of the generated package in one place. Emitters read a Package
// and never derive names or validate anything themselves.
package model

import (
	"strings"

	"github.com/eventgen/eventgen/generator/internal/diag"
)

// Identifiers that every generated package declares, whatever the spec.
const (
	IdentSource       = "Source"       // const Source: the spec's source
	IdentEvent        = "Event"        // interface Event: the package's sealed event set
	IdentPublisher    = "Publisher"    // type Publisher
	IdentNewPublisher = "NewPublisher" // func NewPublisher
	IdentCatalog      = "Catalog"      // func Catalog
	MethodBatch       = "PublishBatch" // Publisher.PublishBatch
)

// Methods of every generated event struct, which no field may be named
// like. The unexported methods isEvent and validate cannot collide with
// fields, which are exported.
var eventMethods = []string{"EventName", "EventVersion", "Topic", "Key", "Validate"}

// Methods of every generated shared struct.
var typeMethods = []string{"Validate"}

// Package is a validated spec: the whole generated package.
type Package struct {
	// SpecFile is the base name of the spec file, for the generated header.
	SpecFile string
	// Name is the Go package name.
	Name string
	// Source is the producer name written into every event's metadata.
	Source string
	// Topics, Types, Events and Consumers are in spec order.
	Topics    []*Topic
	Types     []*Type
	Events    []*Event
	Consumers []*Consumer
}

// Topic is a broker topic.
type Topic struct {
	ID          string // the spec's id, referenced by events
	Name        string // the broker topic name
	Description Text
	Const       string   // Go constant holding Name, like TopicOrders
	Events      []*Event // the events published to it, in spec order
}

// Type is a shared struct or enum from types:.
type Type struct {
	Name        string // spec name, used in field types
	GoName      string
	Description Text
	// Enum holds an enum's values; it is nil for a struct.
	Enum []*EnumValue
	// Fields holds a struct's fields in spec order.
	Fields []*Field
	// Validates reports whether a struct's validation has anything to check,
	// directly or through the types it contains. Enums always validate.
	Validates bool
	// Used reports whether an event refers to the type, directly or not.
	Used bool
	// Pos is where the type is declared; EnumPos is its enum: list.
	Pos, EnumPos diag.Pos
}

// IsEnum reports whether t is an enum.
func (t *Type) IsEnum() bool { return t.Enum != nil }

// EnumValue is one value of an enum.
type EnumValue struct {
	Value string // the wire value
	Const string // Go constant, like OrderStatusPending
	Pos   diag.Pos
}

// Field is a field of an event or a shared struct.
type Field struct {
	Name        string // spec name
	JSON        string // wire name: the json key
	GoName      string
	Type        *TypeRef
	Optional    bool
	Description Text
	// Positions of the field's name, type, json: and optional: (each the
	// name's position when the key is absent), for messages that compare
	// specs.
	Pos, TypePos, JSONPos, OptionalPos diag.Pos
}

// Pointer reports whether the field's Go type is a pointer: optional fields
// are, except slices, maps, bytes and json, whose nil already means absent.
func (f *Field) Pointer() bool {
	if !f.Optional {
		return false
	}
	switch f.Type.Kind {
	case Slice, Map, Bytes, JSON:
		return false
	}
	return true
}

// MustBeSet reports whether Validate checks that the field is not zero. A
// required string, uuid, time or json must be set; for the other kinds the
// zero value (0, false, empty list) is a meaningful value.
func (f *Field) MustBeSet() bool {
	if f.Optional || f.Type == nil {
		return false
	}
	switch f.Type.Kind {
	case String, UUID, Time, JSON:
		return true
	}
	return false
}

// Kind is the kind of a field type.
type Kind int

// Kinds of field types. The scalars map to Go's types of the same name.
const (
	String Kind = iota + 1
	Bool
	Int
	Int32
	Int64
	Uint32
	Uint64
	Float32
	Float64
	Bytes    // []byte, base64 in JSON
	Time     // time.Time
	Duration // time.Duration, nanoseconds in JSON
	UUID     // github.com/google/uuid.UUID
	JSON     // encoding/json.RawMessage
	Named    // a Type from types:
	Slice    // []Elem
	Map      // map[string]Elem
)

// builtins maps the spec's built-in type names to their kinds.
var builtins = map[string]Kind{
	"string": String, "bool": Bool, "int": Int, "int32": Int32, "int64": Int64,
	"uint32": Uint32, "uint64": Uint64, "float32": Float32, "float64": Float64,
	"bytes": Bytes, "time": Time, "duration": Duration, "uuid": UUID, "json": JSON,
}

// builtinNames lists the built-in type names in documentation order.
var builtinNames = []string{
	"string", "bool", "int", "int32", "int64", "uint32", "uint64",
	"float32", "float64", "bytes", "time", "duration", "uuid", "json",
}

// TypeRef is a field type.
type TypeRef struct {
	Kind  Kind
	Elem  *TypeRef // for Slice and Map
	Named *Type    // for Named
}

// Spec returns the type as the spec writes it, in canonical form, such as
// "[]LineItem" or "map[string]int64".
func (t *TypeRef) Spec() string {
	switch t.Kind {
	case Named:
		return t.Named.Name
	case Slice:
		return "[]" + t.Elem.Spec()
	case Map:
		return "map[string]" + t.Elem.Spec()
	}
	for _, n := range builtinNames {
		if builtins[n] == t.Kind {
			return n
		}
	}
	return "?"
}

// Validates reports whether values of the type have anything to validate:
// enums, structs whose Validates is set, and lists and maps of those.
func (t *TypeRef) Validates() bool {
	switch {
	case t == nil:
		return false
	case t.Kind == Named:
		return t.Named.IsEnum() || t.Named.Validates
	case t.Kind == Slice || t.Kind == Map:
		return t.Elem.Validates()
	}
	return false
}

// Event is an event from events:.
type Event struct {
	Name        string // the wire name
	GoName      string
	Version     int
	Topic       *Topic
	Description Text
	// Deprecated is set for deprecated events; DeprecatedText says what to
	// use instead and may be empty.
	Deprecated     bool
	DeprecatedText Text
	// Key is the field whose value orders and partitions the event, or nil.
	Key    *Field
	Fields []*Field
	// Validates reports whether the event's validation has anything to
	// check.
	Validates bool

	Handler         string // handler interface, like OrderPlacedHandler
	HandleMethod    string // its method, like HandleOrderPlaced
	RegisterHandler string // like RegisterOrderPlacedHandler
	PublishMethod   string // Publisher method, like PublishOrderPlaced

	// Positions of the event's name, topic:, key: and version: (each the
	// name's position when the key is absent).
	Pos, TopicPos, KeyPos, VersionPos diag.Pos
}

// Consumer is a consumer group from consumers:.
type Consumer struct {
	Name        string // the consumer group
	GoName      string
	Description Text
	Handles     []*Event // in spec order
	Interface   string   // like BillingHandler
	Register    string   // like RegisterBilling
	GroupConst  string   // like GroupBilling
	// Pos is where the consumer is declared; HandlePos holds the position
	// of each entry of Handles.
	Pos       diag.Pos
	HandlePos []diag.Pos
}

// Text is a description from the spec, cleaned so that it can be written
// into comments and documents as it is: lines are separated by \n, and it
// holds no control, format (bidi, zero-width) or invalid characters.
type Text string

// Lines returns the text's lines, or nil for empty text.
func (t Text) Lines() []string {
	if t == "" {
		return nil
	}
	return strings.Split(string(t), "\n")
}
