package eventgen

// EventInfo describes one event of a generated package. Generated packages
// return every event's info from their Catalog function, for tools and for
// documentation.
type EventInfo struct {
	// Name is the event's wire name.
	Name string
	// GoName is the name of the generated struct.
	GoName string
	// Version is the event's schema version.
	Version int
	// Topic is the broker topic name.
	Topic string
	// Key is the wire name of the key field, empty if the event has none.
	Key string
	// Description is the spec's description of the event.
	Description string
	// Fields lists the event's fields in spec order.
	Fields []FieldInfo
}

// FieldInfo describes one field of an event.
type FieldInfo struct {
	// Name is the field's JSON name.
	Name string
	// Type is the field's type as written in the spec, such as "[]LineItem".
	Type string
	// Optional reports whether the field may be absent.
	Optional bool
	// Description is the spec's description of the field.
	Description string
}
