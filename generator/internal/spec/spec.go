// Package spec reads an eventgen spec file: strict YAML, decoded by hand from
// yaml.Node so that unknown keys are errors and every value keeps its
// position. It checks the shape of the file only; what the names mean is
// checked by package model.
package spec

import "github.com/eventgen/eventgen/generator/internal/diag"

// Limits on input. A spec is a small hand-written file; these bounds keep a
// hostile or broken one from exhausting memory.
const (
	// MaxFileSize is the largest spec file accepted, in bytes.
	MaxFileSize = 1 << 20
	// MaxNodes bounds the YAML nodes of a spec counted with every alias
	// expanded, so that an alias bomb is refused before it is walked.
	MaxNodes = 250_000
)

// String is a string value with the position it was written at. Set is false
// when the key was absent or its value was null; Pos is then the position of
// the enclosing entry. Invalid is set when the value was present but not a
// string, which is already reported.
type String struct {
	Value   string
	Pos     diag.Pos
	Set     bool
	Invalid bool
}

// Int is an integer value with its position.
type Int struct {
	Value int
	Pos   diag.Pos
	Set   bool
}

// Bool is a boolean value with its position.
type Bool struct {
	Value bool
	Pos   diag.Pos
	Set   bool
}

// File is a decoded spec. Slices keep the order of the file.
type File struct {
	Package   String
	Source    String
	Topics    []*Topic
	Types     []*Type
	Events    []*Event
	Consumers []*Consumer
}

// Topic is an entry of topics:. ID is the key that events refer to.
type Topic struct {
	ID          String
	Name        String
	Description String
}

// Type is an entry of types:, a struct (Fields) or an enum (Enum).
type Type struct {
	Name        String
	HasFields   bool
	Fields      []*Field
	HasEnum     bool
	EnumPos     diag.Pos
	Enum        []String
	EnumInvalid bool // enum: was not a list (already reported)
	Description String
	GoName      String
	// Unknown is set when the entry has unknown keys or is not a mapping,
	// both already reported: a missing key may then be a misspelt one.
	Unknown bool
}

// Event is an entry of events:. Name is the wire name.
type Event struct {
	Name        String
	Topic       String
	Version     Int
	Description String
	Key         String
	Fields      []*Field
	GoName      String
	Deprecated  Deprecated
	// Unknown is set when the entry has unknown keys; see Type.Unknown.
	Unknown bool
}

// Deprecated records an event's deprecated: value, either true or a text
// saying what to use instead.
type Deprecated struct {
	Set    bool
	Reason string
	Pos    diag.Pos
}

// Field is one entry of fields:, written as `name: type` or as a mapping.
type Field struct {
	Name        String
	Type        String
	Optional    Bool
	Description String
	JSON        String
}

// Consumer is an entry of consumers:. Name is the consumer group.
type Consumer struct {
	Name    String
	Handles []String
	// HandlesInvalid is set when handles: was not a list (already reported).
	HandlesInvalid bool
	Description    String
	GoName         String
	// Unknown is set when the entry has unknown keys; see Type.Unknown.
	Unknown bool
}
