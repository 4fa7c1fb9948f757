package export

import (
	"github.com/eventgen/eventgen/generator/internal/model"
)

// Patterns of the string encodings that the generated Go decoder accepts.
// JSON Schema patterns are ECMA-262 regular expressions; these use only
// what ECMA-262 and RE2 share.
const (
	hex    = `[0-9A-Fa-f]`
	uuid36 = hex + `{8}-` + hex + `{4}-` + hex + `{4}-` + hex + `{4}-` + hex + `{12}`
	nil36  = `0{8}-0{4}-0{4}-0{4}-0{12}`
	urn    = `[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:`

	// uuidPattern matches the four forms github.com/google/uuid parses: the
	// standard form, with a urn:uuid: prefix, between two ASCII characters
	// (braces, which it does not check), and 32 hex digits. Hex digits may
	// be of either case.
	uuidPattern = `^(?:` + uuid36 + `|` + urn + uuid36 + `|[\x00-\x7F]` + uuid36 + `[\x00-\x7F]|` + hex + `{32})$`
	// nilUUIDPattern matches the nil UUID in those forms, which Validate
	// rejects in a required field.
	nilUUIDPattern = `^(?:` + nil36 + `|` + urn + nil36 + `|[\x00-\x7F]` + nil36 + `[\x00-\x7F]|0{32})$`

	// timePattern matches what time.Time's UnmarshalJSON accepts, which is
	// time.Parse with the RFC 3339 layout (its stricter checks are turned
	// off in Go 1.26): upper-case T and Z, an hour of one or two digits,
	// fractional seconds after a period or a comma, offsets up to 24:60.
	// Days past the end of their month pass the pattern and fail in Go.
	timePattern = `^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01]?[0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.,][0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-4]):(?:[0-5][0-9]|60))$`
	// zeroTimePattern matches the usual spellings of the zero time, which
	// Validate rejects in a required field.
	zeroTimePattern = `^0001-01-01T0?0:00:00(?:[.,]0+)?(?:Z|[+-]00:00)$`

	// base64Pattern matches standard base64 with padding, as
	// encoding/base64.StdEncoding decodes it: line breaks are ignored
	// anywhere.
	base64Pattern = `^[\r\n]*(?:(?:[A-Za-z0-9+/][\r\n]*){4})*(?:(?:[A-Za-z0-9+/][\r\n]*){2}=[\r\n]*=|(?:[A-Za-z0-9+/][\r\n]*){3}=)?[\r\n]*$`
)

// Integer and float bounds, as encoding/json enforces them.
const (
	minInt64  = num("-9223372036854775808")
	maxInt64  = num("9223372036854775807")
	minInt32  = num("-2147483648")
	maxInt32  = num("2147483647")
	maxUint32 = num("4294967295")
	maxUint64 = num("18446744073709551615")
	// float32Limit is 2^128 - 2^103, halfway between the largest float32
	// and 2^128: strconv.ParseFloat(s, 32) rounds anything smaller in
	// magnitude to a finite float32 and reports anything else out of range.
	float32Limit    = num("340282356779733661637539395458142568448")
	negFloat32Limit = num("-340282356779733661637539395458142568448")
)

// schemas builds the JSON Schemas of a package's events and shared types.
// The schemas say what the generated Go consumer accepts: what
// encoding/json decodes into the generated struct and its Validate method
// then accepts. docs/export.md explains the mapping.
type schemas struct {
	// ref is the prefix of references to shared types, such as "#/$defs/".
	ref string
	// zero memoises zeroValid for shared structs.
	zero map[*model.Type]bool
}

func newSchemas(ref string) *schemas {
	return &schemas{ref: ref, zero: make(map[*model.Type]bool)}
}

// zeroValid reports whether the Go consumer accepts the zero value of t
// where it is validated as a value of its type (a required field that
// Validate does not check for being set, or a list or map element). That is
// also whether it accepts JSON null there: null leaves a non-pointer Go
// value as it is, except for enums, whose UnmarshalJSON rejects it.
func (s *schemas) zeroValid(t *model.TypeRef) bool {
	if t.Kind != model.Named {
		return true
	}
	if t.Named.IsEnum() {
		return false // "" is never a value: enum values are not empty
	}
	return s.structZeroValid(t.Named)
}

func (s *schemas) structZeroValid(t *model.Type) bool {
	if v, ok := s.zero[t]; ok {
		return v
	}
	s.zero[t] = true // a struct only contains itself through a pointer, list or map
	v := s.fieldsZeroValid(t.Fields)
	s.zero[t] = v
	return v
}

func (s *schemas) fieldsZeroValid(fields []*model.Field) bool {
	for _, f := range fields {
		if s.fieldRequired(f) {
			return false
		}
	}
	return true
}

// fieldRequired reports whether the Go consumer rejects a payload without
// the field, or with null for it: a required string, uuid, time or json,
// which Validate checks is set; an enum; a struct whose zero value does not
// validate. Other fields read as their zero value when absent or null.
func (s *schemas) fieldRequired(f *model.Field) bool {
	if f.Optional {
		return false
	}
	return f.MustBeSet() || !s.zeroValid(f.Type)
}

// object returns the schema of a struct's fields: their properties and the
// required ones, in spec order.
func (s *schemas) object(o *obj, fields []*model.Field) {
	props := &obj{}
	var required []string
	for _, f := range fields {
		req := s.fieldRequired(f)
		if req {
			required = append(required, f.JSON)
		}
		fs := s.value(f.Type, f.MustBeSet(), !req)
		if d := string(f.Description); d != "" {
			fs = describe(fs, d)
		}
		props.set(f.JSON, fs)
	}
	o.set("properties", props)
	if len(required) > 0 {
		o.set("required", strs(required))
	}
}

// value returns the schema of a value of type t. set adds what Validate
// checks of a required string, uuid, time or json: that it is not zero.
// nullable adds JSON null.
func (s *schemas) value(t *model.TypeRef, set, nullable bool) *obj {
	o := &obj{}
	typ := func(name string) {
		if nullable {
			o.set("type", arr{name, "null"})
		} else {
			o.set("type", name)
		}
	}
	switch t.Kind {
	case model.String:
		typ("string")
		if set {
			o.set("minLength", 1)
		}
	case model.Bool:
		typ("boolean")
	case model.Int, model.Int64, model.Duration:
		typ("integer")
		o.set("minimum", minInt64).set("maximum", maxInt64)
		if t.Kind == model.Duration {
			o.set("description", "A duration in nanoseconds.")
		}
	case model.Int32:
		typ("integer")
		o.set("minimum", minInt32).set("maximum", maxInt32)
	case model.Uint32:
		typ("integer")
		o.set("minimum", 0).set("maximum", maxUint32)
	case model.Uint64:
		typ("integer")
		o.set("minimum", 0).set("maximum", maxUint64)
	case model.Float32:
		typ("number")
		o.set("exclusiveMinimum", negFloat32Limit).set("exclusiveMaximum", float32Limit)
	case model.Float64:
		typ("number")
	case model.Bytes:
		// encoding/json decodes a []byte from a base64 string, or from an
		// array of numbers from 0 to 255; null is nil.
		o.set("type", arr{"string", "array", "null"})
		o.set("contentEncoding", "base64").set("pattern", base64Pattern)
		o.set("items", (&obj{}).set("type", arr{"integer", "null"}).set("minimum", 0).set("maximum", 255))
	case model.Time:
		typ("string")
		o.set("format", "date-time").set("pattern", timePattern)
		if set {
			o.set("not", (&obj{}).set("pattern", zeroTimePattern))
		}
	case model.UUID:
		typ("string")
		o.set("format", "uuid").set("pattern", uuidPattern)
		if set {
			o.set("not", (&obj{}).set("pattern", nilUUIDPattern))
		}
	case model.JSON:
		// Any JSON value; a required one must not be null.
		if set {
			o.set("not", (&obj{}).set("type", "null"))
		}
	case model.Slice:
		o.set("type", arr{"array", "null"}) // null is a nil slice
		o.set("items", s.value(t.Elem, false, s.zeroValid(t.Elem)))
	case model.Map:
		o.set("type", arr{"object", "null"}) // null is a nil map
		o.set("additionalProperties", s.value(t.Elem, false, s.zeroValid(t.Elem)))
	case model.Named:
		r := ref(s.ref + t.Named.Name)
		if !nullable {
			return r
		}
		return o.set("anyOf", arr{r, (&obj{}).set("type", "null")})
	}
	return o
}

// describe adds a description to a field's schema. A reference gets it
// beside an allOf, since JSON Schema draft-07, on which AsyncAPI's schemas
// are based, ignores the siblings of $ref.
func describe(o *obj, d string) *obj {
	if o.get("$ref") != nil {
		return (&obj{}).set("description", d).set("allOf", arr{o})
	}
	if prev, ok := o.get("description").(string); ok {
		d += "\n\n" + prev
		for i := range o.kvs {
			if o.kvs[i].key == "description" {
				o.kvs[i].val = d
				return o
			}
		}
	}
	return (&obj{kvs: append([]kv{{"description", d}}, o.kvs...)})
}

// typeSchema returns the schema of a shared type, as a definition.
func (s *schemas) typeSchema(t *model.Type) *obj {
	o := &obj{}
	o.setText("description", string(t.Description))
	if t.IsEnum() {
		values := make([]string, len(t.Enum))
		for i, v := range t.Enum {
			values[i] = v.Value
		}
		return o.set("type", "string").set("enum", strs(values))
	}
	o.set("type", "object")
	s.object(o, t.Fields)
	return o
}

// eventSchema returns the schema of an event's payload, without $schema
// and definitions. The payload itself may be null when every field may be
// absent: encoding/json then leaves the event zero, and it validates.
func (s *schemas) eventSchema(e *model.Event) *obj {
	o := &obj{}
	o.set("title", e.Name)
	o.setText("description", description(e))
	if e.Deprecated {
		o.set("deprecated", true)
	}
	if s.fieldsZeroValid(e.Fields) {
		o.set("type", arr{"object", "null"})
	} else {
		o.set("type", "object")
	}
	s.object(o, e.Fields)
	return o
}

// description returns an event's description followed by its deprecation.
func description(e *model.Event) string {
	d := string(e.Description)
	if e.Deprecated {
		dep := "Deprecated."
		if e.DeprecatedText != "" {
			dep = "Deprecated: " + string(e.DeprecatedText)
		}
		if d != "" {
			d += "\n\n"
		}
		d += dep
	}
	return d
}

// usedTypes returns the shared types that fields refer to, directly or
// not, in the order of all (the spec's).
func usedTypes(all []*model.Type, fields []*model.Field) []*model.Type {
	seen := make(map[*model.Type]bool)
	var walk func(t *model.TypeRef)
	walk = func(t *model.TypeRef) {
		for t.Kind == model.Slice || t.Kind == model.Map {
			t = t.Elem
		}
		if t.Kind != model.Named || seen[t.Named] {
			return
		}
		seen[t.Named] = true
		for _, f := range t.Named.Fields {
			walk(f.Type)
		}
	}
	for _, f := range fields {
		walk(f.Type)
	}
	var out []*model.Type
	for _, t := range all {
		if seen[t] {
			out = append(out, t)
		}
	}
	return out
}
