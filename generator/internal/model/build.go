package model

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/eventgen/eventgen/generator/internal/diag"
	"github.com/eventgen/eventgen/generator/internal/naming"
	"github.com/eventgen/eventgen/generator/internal/spec"
)

// Limits on names and types.
const (
	// MaxWireName bounds wire names, topic names, consumer groups and the
	// source: the runtime stores them in VARCHAR(255) columns.
	MaxWireName = 255
	// MaxTypeDepth bounds the nesting of []T and map[string]T.
	MaxTypeDepth = 8
	// MaxEntries bounds the topics, types, enum values, events, fields and
	// consumers of one spec, which keeps the generated package (and the time
	// to format it) within reason.
	MaxEntries = 50_000
)

// Build validates f and returns the package it describes. Every problem is
// recorded in errs and every warning in warns; the Package is only
// meaningful when errs is empty. specFile is the spec's path, whose base name
// goes into the generated header.
func Build(errs, warns *diag.Collector, f *spec.File, specFile string) *Package {
	b := &builder{
		errs:   errs,
		warns:  warns,
		pkg:    &Package{SpecFile: specBase(specFile)},
		topics: make(map[string]*Topic),
		types:  make(map[string]*Type),
		events: make(map[string]*Event),
		idents: make(map[string]owner),

		typePos:  make(map[*Type]diag.Pos),
		eventPos: make(map[*Event]diag.Pos),
		enumPos:  make(map[*EnumValue]diag.Pos),
	}
	if n := countEntries(f); n > MaxEntries {
		errs.Errorf(diag.Pos{}, "spec declares %d topics, types, enum values, events, fields and consumers, over the limit of %d; split it into several packages", n, MaxEntries)
		return b.pkg
	}
	b.header(f)
	for _, t := range f.Topics {
		b.topic(t)
	}
	for _, t := range f.Types {
		b.typeDecl(t)
	}
	for _, e := range f.Events {
		b.event(e)
	}
	if len(f.Events) == 0 {
		errs.Errorf(diag.Pos{}, "spec declares no events: add at least one under events:")
	}
	// Fields refer to types by name, so they are built once every type is
	// known.
	for i, t := range f.Types {
		if td := b.pkg.Types[i]; !td.IsEnum() && t.HasFields {
			td.Fields = b.fields(t.Fields, "type "+strconv.Quote(t.Name.Value), typeMethods, td.GoName)
		}
	}
	for i, e := range f.Events {
		ev := b.pkg.Events[i]
		ev.Fields = b.fields(e.Fields, "event "+strconv.Quote(e.Name.Value), eventMethods, ev.GoName)
		b.key(ev, e)
	}
	for _, c := range f.Consumers {
		b.consumer(c)
	}
	b.recursion()
	b.declare(f)
	b.validates()
	b.usage(f)
	return b.pkg
}

func countEntries(f *spec.File) int {
	n := len(f.Topics) + len(f.Types) + len(f.Events) + len(f.Consumers)
	for _, t := range f.Types {
		n += len(t.Fields) + len(t.Enum)
	}
	for _, e := range f.Events {
		n += len(e.Fields)
	}
	return n
}

// specBase returns the base name of the spec file for generated headers,
// with any character other than ASCII letters, digits and . _ + - replaced
// by _ (and no "--", which would end an HTML comment), so that a strange file
// name cannot change the generated files.
func specBase(name string) string {
	base := []byte(path.Base(strings.ReplaceAll(name, `\`, "/")))
	for i, c := range base {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+-", c) >= 0
		if !ok || c == '-' && i > 0 && base[i-1] == '-' {
			base[i] = '_'
		}
	}
	return string(base)
}

// builder holds the state of one Build.
type builder struct {
	errs, warns *diag.Collector
	pkg         *Package

	topics map[string]*Topic // by id
	types  map[string]*Type  // by spec name
	events map[string]*Event // by wire name
	idents map[string]owner  // package-level Go identifiers
	// positions of spec entries, for messages.
	typePos  map[*Type]diag.Pos
	eventPos map[*Event]diag.Pos
	enumPos  map[*EnumValue]diag.Pos
}

// owner says which spec entry declared a Go identifier.
type owner struct {
	what string // like `event "OrderPlaced"` or "eventgen"
	role string // like "Go type", "handler interface"
	pos  diag.Pos
}

func (b *builder) header(f *spec.File) {
	p := f.Package
	switch {
	case p.Invalid:
		// Already reported.
	case !p.Set:
		b.errs.Errorf(p.Pos, "package is required: the Go package name of the generated code, like package: shopevents")
	case !naming.IsPackageName(p.Value):
		b.errs.Errorf(p.Pos, "package %q is not a valid Go package name: use lower-case letters and digits, starting with a letter", p.Value)
	case p.Value == "main":
		b.errs.Errorf(p.Pos, "package %q cannot be imported; choose the name of a library package", p.Value)
	default:
		b.pkg.Name = p.Value
	}
	b.pkg.Source = b.pkg.Name
	if s := f.Source; s.Set {
		if msg := checkWireName(s.Value, "._-:/"); msg != "" {
			b.errs.Errorf(s.Pos, "source %q %s", s.Value, msg)
		}
		b.pkg.Source = s.Value
	}
}

func (b *builder) topic(t *spec.Topic) {
	id := t.ID.Value
	tp := &Topic{ID: id, Name: id, Description: b.text(t.Description)}
	if msg := checkWireName(id, "._-"); msg != "" {
		b.errs.Errorf(t.ID.Pos, "topic id %q %s", id, msg)
	}
	if t.Name.Set {
		tp.Name = t.Name.Value
		if msg := checkWireName(tp.Name, "._-"); msg != "" {
			b.errs.Errorf(t.Name.Pos, "topic %q: name %q %s", id, tp.Name, msg)
		}
	}
	if c, ok := naming.Camel(id); ok {
		tp.Const = "Topic" + c
	} else {
		b.errs.Errorf(t.ID.Pos, "topic id %q: cannot derive a Go constant name from it; use ASCII letters and digits", id)
	}
	b.topics[id] = tp
	b.pkg.Topics = append(b.pkg.Topics, tp)
}

func (b *builder) typeDecl(t *spec.Type) {
	name := t.Name.Value
	what := "type " + strconv.Quote(name)
	td := &Type{Name: name, Description: b.text(t.Description), Pos: t.Name.Pos, EnumPos: t.EnumPos}
	if !t.HasEnum {
		td.EnumPos = t.Name.Pos
	}
	b.types[name] = td
	b.pkg.Types = append(b.pkg.Types, td)
	b.typePos[td] = t.Name.Pos

	switch _, builtin := builtins[name]; {
	case builtin:
		b.errs.Errorf(t.Name.Pos, "%s redeclares the built-in type %s; choose another name", what, name)
	case !isTypeName(name):
		b.errs.Errorf(t.Name.Pos, "%s: type names must start with a letter and hold only ASCII letters, digits and underscores, so that field types can refer to them", what)
	default:
		td.GoName = b.goName(what, name, t.Name.Pos, t.GoName)
	}

	switch {
	case t.HasFields && t.HasEnum:
		b.errs.Errorf(t.Name.Pos, "%s has both fields and enum; a type is either a struct or an enum", what)
	case t.HasEnum:
		td.Enum = b.enum(td, t)
	case !t.HasFields && !t.Unknown:
		b.errs.Errorf(t.Name.Pos, "%s needs fields: (a struct) or enum: (a list of values)", what)
	}
}

func (b *builder) enum(td *Type, t *spec.Type) []*EnumValue {
	what := "type " + strconv.Quote(td.Name)
	values := []*EnumValue{}
	if len(t.Enum) == 0 && !t.EnumInvalid {
		b.errs.Errorf(t.EnumPos, "%s enum has no values", what)
	}
	seen := make(map[string]diag.Pos)
	consts := make(map[string]string)
	for _, v := range t.Enum {
		switch {
		case v.Invalid:
			continue
		case !v.Set || v.Value == "":
			b.errs.Errorf(v.Pos, "%s enum has an empty value", what)
			continue
		case hasControl(v.Value):
			b.errs.Errorf(v.Pos, "%s enum value %q holds a control or invisible character", what, v.Value)
			continue
		case len(v.Value) > MaxWireName:
			b.errs.Errorf(v.Pos, "%s enum value %q is %d bytes, over the limit of %d", what, v.Value, len(v.Value), MaxWireName)
			continue
		}
		if first, dup := seen[v.Value]; dup {
			b.errs.Errorf(v.Pos, "%s enum lists %q twice (first at %s)", what, v.Value, first)
			continue
		}
		seen[v.Value] = v.Pos
		ev := &EnumValue{Value: v.Value, Pos: v.Pos}
		b.enumPos[ev] = v.Pos
		if c, ok := naming.Camel(v.Value); !ok {
			b.errs.Errorf(v.Pos, "%s enum value %q: cannot derive a Go constant name from it; use ASCII letters and digits", what, v.Value)
		} else if td.GoName != "" {
			name := td.GoName + c
			if other, dup := consts[name]; dup {
				b.errs.Errorf(v.Pos, "%s enum values %q and %q both give the Go constant %s; rename one", what, other, v.Value, name)
			} else {
				consts[name] = v.Value
				ev.Const = name
			}
		}
		values = append(values, ev)
	}
	return values
}

func (b *builder) event(e *spec.Event) {
	name := e.Name.Value
	what := "event " + strconv.Quote(name)
	ev := &Event{Name: name, Version: 1, Description: b.text(e.Description),
		Pos: e.Name.Pos, TopicPos: orPos(e.Topic.Set, e.Topic.Pos, e.Name.Pos),
		KeyPos: orPos(e.Key.Set, e.Key.Pos, e.Name.Pos), VersionPos: orPos(e.Version.Set, e.Version.Pos, e.Name.Pos)}
	b.events[name] = ev
	b.pkg.Events = append(b.pkg.Events, ev)
	b.eventPos[ev] = e.Name.Pos

	if msg := checkWireName(name, "._-"); msg != "" {
		b.errs.Errorf(e.Name.Pos, "%s: the name %s", what, msg)
	}
	ev.GoName = b.goName(what, name, e.Name.Pos, e.GoName)
	if ev.GoName != "" {
		ev.Handler = ev.GoName + "Handler"
		ev.HandleMethod = "Handle" + ev.GoName
		ev.RegisterHandler = "Register" + ev.GoName + "Handler"
		ev.PublishMethod = "Publish" + ev.GoName
	}

	switch t := e.Topic; {
	case t.Invalid || !t.Set && e.Unknown:
		// Already reported, or probably a misspelt key.
	case !t.Set:
		b.errs.Errorf(t.Pos, "%s needs a topic: one of the ids under topics:", what)
	case b.topics[t.Value] == nil:
		b.errs.Errorf(t.Pos, "%s: topic %q is not defined under topics:%s", what, t.Value, b.hint(t.Value, b.topicIDs()))
	default:
		ev.Topic = b.topics[t.Value]
		ev.Topic.Events = append(ev.Topic.Events, ev)
	}

	if v := e.Version; v.Set {
		if v.Value < 1 {
			b.errs.Errorf(v.Pos, "%s version %d must be 1 or more", what, v.Value)
		}
		ev.Version = v.Value
	}
	if d := e.Deprecated; d.Set {
		ev.Deprecated = true
		ev.DeprecatedText = b.text(spec.String{Value: d.Reason, Set: true})
	}
}

// goName returns the Go name of a type, event or consumer: its go_name, or
// one derived from its spec name.
func (b *builder) goName(what, name string, pos diag.Pos, goName spec.String) string {
	if goName.Set {
		if !naming.IsExported(goName.Value) {
			b.errs.Errorf(goName.Pos, "%s: go_name %q must be an exported Go identifier: an upper-case ASCII letter, then letters, digits or underscores", what, goName.Value)
			return ""
		}
		return goName.Value
	}
	switch {
	case naming.IsKeyword(name):
		b.errs.Errorf(pos, "%s: %q is a Go keyword; set go_name to choose its Go name (the spec and wire name stay %q)", what, name, name)
		return ""
	case naming.IsPredeclared(name):
		b.errs.Errorf(pos, "%s: %q is a predeclared Go identifier; set go_name to choose its Go name (the spec and wire name stay %q)", what, name, name)
		return ""
	}
	g, ok := naming.GoName(name)
	if !ok {
		b.errs.Errorf(pos, "%s: cannot derive a Go name from it (it needs ASCII letters or digits and must not start with a digit); set go_name", what)
		return ""
	}
	return g
}

// fields builds the fields of a struct. methods are the generated methods of
// the struct, which fields must not shadow.
func (b *builder) fields(fs []*spec.Field, owner string, methods []string, goType string) []*Field {
	out := make([]*Field, 0, len(fs))
	goNames := make(map[string]diag.Pos)
	goNameOf := make(map[string]string)
	jsonNames := make(map[string]diag.Pos)
	jsonOf := make(map[string]string)
	for _, f := range fs {
		name := f.Name.Value
		what := "field " + strconv.Quote(name) + " of " + owner
		fd := &Field{Name: name, JSON: name, Optional: f.Optional.Value, Description: b.text(f.Description),
			Pos: f.Name.Pos, TypePos: orPos(f.Type.Set, f.Type.Pos, f.Name.Pos),
			JSONPos: orPos(f.JSON.Set, f.JSON.Pos, f.Name.Pos), OptionalPos: orPos(f.Optional.Set, f.Optional.Pos, f.Name.Pos)}
		if f.JSON.Set {
			fd.JSON = f.JSON.Value
		}
		jsonPos := f.Name.Pos
		if f.JSON.Set {
			jsonPos = f.JSON.Pos
		}
		if !validJSONName(fd.JSON) {
			b.errs.Errorf(jsonPos, "%s: %q is not a usable JSON name: use letters, digits and punctuation other than quotes, backslashes, commas and spaces", what, fd.JSON)
		} else if first, dup := jsonNames[fd.JSON]; dup {
			b.errs.Errorf(jsonPos, "%s: JSON name %q is also used by field %q (%s)", what, fd.JSON, jsonOf[fd.JSON], first)
		} else {
			jsonNames[fd.JSON], jsonOf[fd.JSON] = jsonPos, name
		}

		if g, ok := naming.GoName(name); !ok {
			b.errs.Errorf(f.Name.Pos, "%s: cannot derive a Go name from it (it needs ASCII letters or digits and must not start with a digit); rename the field and keep its wire name with json: %q", what, fd.JSON)
		} else if slices.Contains(methods, g) {
			b.errs.Errorf(f.Name.Pos, "%s: Go name %s collides with the generated method %s.%s; rename the field and keep its wire name with json: %q", what, g, goType, g, fd.JSON)
		} else if first, dup := goNames[g]; dup {
			b.errs.Errorf(f.Name.Pos, "%s: Go name %s collides with field %q (%s); rename one and keep its wire name with json:", what, g, goNameOf[g], first)
		} else {
			goNames[g], goNameOf[g] = f.Name.Pos, name
			fd.GoName = g
		}

		if !f.Type.Set && !f.Type.Invalid {
			b.errs.Errorf(f.Type.Pos, "%s has no type", what)
		} else if f.Type.Set {
			fd.Type = b.typeRef(f.Type, what)
		}
		out = append(out, fd)
	}
	return out
}

// typeRef parses a field type: a built-in or declared name, []T or
// map[string]T.
func (b *builder) typeRef(s spec.String, what string) *TypeRef {
	text := strings.TrimSpace(s.Value)
	var wrap []Kind
	for {
		if len(wrap) > MaxTypeDepth {
			b.errs.Errorf(s.Pos, "%s: type %q nests more than %d levels deep", what, s.Value, MaxTypeDepth)
			return nil
		}
		switch {
		case strings.HasPrefix(text, "[]"):
			wrap = append(wrap, Slice)
			text = text[2:]
			continue
		case strings.HasPrefix(text, "map[string]"):
			wrap = append(wrap, Map)
			text = text[len("map[string]"):]
			continue
		case strings.HasPrefix(text, "map["):
			b.errs.Errorf(s.Pos, "%s: type %q: map keys must be string, as in map[string]T", what, s.Value)
			return nil
		case strings.HasPrefix(text, "*"):
			b.errs.Errorf(s.Pos, "%s: type %q: the spec has no pointers; write optional: true", what, s.Value)
			return nil
		case strings.HasPrefix(text, "["):
			b.errs.Errorf(s.Pos, "%s: type %q: the spec has no arrays; use []T", what, s.Value)
			return nil
		}
		break
	}
	t := b.namedType(text, s, what)
	if t == nil {
		return nil
	}
	for i := len(wrap) - 1; i >= 0; i-- {
		t = &TypeRef{Kind: wrap[i], Elem: t}
	}
	return t
}

func (b *builder) namedType(name string, s spec.String, what string) *TypeRef {
	if k, ok := builtins[name]; ok {
		return &TypeRef{Kind: k}
	}
	if td := b.types[name]; td != nil {
		return &TypeRef{Kind: Named, Named: td}
	}
	switch {
	case name == "":
		b.errs.Errorf(s.Pos, "%s: type %q names no type", what, s.Value)
	case b.events[name] != nil:
		b.errs.Errorf(s.Pos, "%s: %q is an event, not a type; declare the shared struct under types:", what, name)
	default:
		known := slices.Clone(builtinNames)
		for _, t := range b.pkg.Types {
			known = append(known, t.Name)
		}
		b.errs.Errorf(s.Pos, "%s: unknown type %q%s", what, name, b.hint(name, known))
	}
	return nil
}

// key resolves an event's key: a required field of a scalar type that has
// an obvious string form.
func (b *builder) key(ev *Event, e *spec.Event) {
	k := e.Key
	if !k.Set {
		return
	}
	what := "event " + strconv.Quote(ev.Name)
	var f *Field
	var names []string
	for _, fd := range ev.Fields {
		names = append(names, fd.Name)
		if fd.Name == k.Value {
			f = fd
		}
	}
	switch {
	case f == nil:
		b.errs.Errorf(k.Pos, "%s: key %q names no field of the event%s", what, k.Value, b.hint(k.Value, names))
	case f.Type == nil:
		// The field's type is already reported.
	case f.Optional:
		b.errs.Errorf(k.Pos, "%s: key %q names an optional field; a key must always be present", what, k.Value)
	case !isKeyType(f.Type):
		b.errs.Errorf(k.Pos, "%s: key %q names a field of type %s; a key must be a string, int, int32, int64, uint32, uint64, uuid or enum field", what, k.Value, f.Type.Spec())
	default:
		ev.Key = f
	}
}

func isKeyType(t *TypeRef) bool {
	switch t.Kind {
	case String, Int, Int32, Int64, Uint32, Uint64, UUID:
		return true
	case Named:
		return t.Named.IsEnum()
	}
	return false
}

func (b *builder) consumer(c *spec.Consumer) {
	name := c.Name.Value
	what := "consumer " + strconv.Quote(name)
	cd := &Consumer{Name: name, Description: b.text(c.Description), Pos: c.Name.Pos}
	b.pkg.Consumers = append(b.pkg.Consumers, cd)
	if msg := checkWireName(name, "._-"); msg != "" {
		b.errs.Errorf(c.Name.Pos, "%s: the name %s", what, msg)
	}
	cd.GoName = b.goName(what, name, c.Name.Pos, c.GoName)
	if cd.GoName != "" {
		cd.Interface = cd.GoName + "Handler"
		cd.Register = "Register" + cd.GoName
		cd.GroupConst = "Group" + cd.GoName
	}
	if len(c.Handles) == 0 && !c.Unknown && !c.HandlesInvalid {
		b.errs.Errorf(c.Name.Pos, "%s handles no events: list them under handles:", what)
	}
	seen := make(map[string]diag.Pos)
	for _, h := range c.Handles {
		if h.Invalid {
			continue
		}
		if first, dup := seen[h.Value]; dup {
			b.errs.Errorf(h.Pos, "%s lists event %q twice (first at %s)", what, h.Value, first)
			continue
		}
		seen[h.Value] = h.Pos
		ev := b.events[h.Value]
		if ev == nil {
			b.errs.Errorf(h.Pos, "%s handles %q, which is not an event under events:%s", what, h.Value, b.hint(h.Value, b.eventNames()))
			continue
		}
		cd.Handles = append(cd.Handles, ev)
		cd.HandlePos = append(cd.HandlePos, h.Pos)
	}
}

// orPos returns pos when a key is set and def, the entry's position,
// otherwise.
func orPos(set bool, pos, def diag.Pos) diag.Pos {
	if set {
		return pos
	}
	return def
}

// recursion reports struct types that contain themselves without a pointer,
// slice or map in between: Go cannot lay them out, and JSON could never end.
// Each cycle is reported once, at its first type in spec order, with the
// shortest path around it. The work is linear in the number of fields.
func (b *builder) recursion() {
	// direct returns the fields of t that embed another struct by value.
	direct := func(t *Type) []*Field {
		var out []*Field
		for _, fd := range t.Fields {
			if fd.Type != nil && fd.Type.Kind == Named && !fd.Type.Named.IsEnum() && !fd.Optional {
				out = append(out, fd)
			}
		}
		return out
	}
	for _, scc := range components(b.pkg.Types, direct) {
		start := scc[0]
		in := make(map[*Type]bool, len(scc))
		for _, t := range scc {
			in[t] = true
		}
		// Breadth-first search within the component for the shortest path
		// from start back to itself.
		type step struct {
			t    *Type
			via  *Field
			prev *step
		}
		seen := map[*Type]bool{start: true}
		var found *step
		for queue := []*step{{t: start}}; len(queue) > 0 && found == nil; queue = queue[1:] {
			for _, fd := range direct(queue[0].t) {
				next := &step{t: fd.Type.Named, via: fd, prev: queue[0]}
				if next.t == start {
					found = next
					break
				}
				if in[next.t] && !seen[next.t] {
					seen[next.t] = true
					queue = append(queue, next)
				}
			}
		}
		if found == nil {
			continue // a single type without a self-reference
		}
		var path []string
		for s := found; s.prev != nil; s = s.prev {
			path = append(path, s.prev.t.Name+"."+s.via.Name)
		}
		slices.Reverse(path)
		b.errs.Errorf(b.typePos[start], "type %q contains itself without indirection (%s -> %s); make one of these fields optional, a list or a map",
			start.Name, strings.Join(path, " -> "), start.Name)
	}
}

// components returns the strongly connected components of the graph whose
// edges are the fields that edges returns, by Tarjan's algorithm. Each
// component lists its types in spec order, and components are ordered by
// their first type.
func components(types []*Type, edges func(*Type) []*Field) [][]*Type {
	order := make(map[*Type]int, len(types))
	for i, t := range types {
		order[t] = i
	}
	index := make(map[*Type]int, len(types))
	low := make(map[*Type]int, len(types))
	onStack := make(map[*Type]bool)
	var stack []*Type
	var out [][]*Type
	var visit func(t *Type)
	visit = func(t *Type) {
		index[t] = len(index)
		low[t] = index[t]
		stack = append(stack, t)
		onStack[t] = true
		for _, fd := range edges(t) {
			u := fd.Type.Named
			if _, seen := index[u]; !seen {
				visit(u)
				low[t] = min(low[t], low[u])
			} else if onStack[u] {
				low[t] = min(low[t], index[u])
			}
		}
		if low[t] != index[t] {
			return
		}
		var scc []*Type
		for {
			u := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			onStack[u] = false
			scc = append(scc, u)
			if u == t {
				break
			}
		}
		slices.SortFunc(scc, func(a, b *Type) int { return order[a] - order[b] })
		out = append(out, scc)
	}
	for _, t := range types {
		if _, seen := index[t]; !seen && !t.IsEnum() {
			visit(t)
		}
	}
	slices.SortFunc(out, func(a, b []*Type) int { return order[a[0]] - order[b[0]] })
	return out
}

// declare registers every package-level Go identifier and reports
// collisions, naming both entries. Identifiers are registered in spec
// order, so the later entry of a colliding pair is the one reported. When
// an entry's Go name collides, the names derived from it (handler
// interface, functions) would too, so only the first collision is
// reported.
func (b *builder) declare(f *spec.File) {
	for _, id := range []struct{ name, role string }{
		{IdentSource, "constant"}, {IdentEvent, "interface"}, {IdentPublisher, "type"},
		{IdentNewPublisher, "function"}, {IdentCatalog, "function"},
	} {
		b.idents[id.name] = owner{what: "eventgen", role: id.role}
	}
	for i, t := range b.pkg.Topics {
		b.ident(b.idents, "rename the topic id",
			decl{t.Const, owner{what: "topic " + strconv.Quote(t.ID), role: "constant", pos: f.Topics[i].ID.Pos}})
	}
	for _, t := range b.pkg.Types {
		o := owner{what: "type " + strconv.Quote(t.Name), role: "Go type", pos: b.typePos[t]}
		b.ident(b.idents, "set go_name to choose another Go name", decl{t.GoName, o})
		for _, v := range t.Enum {
			o := owner{what: "enum value " + strconv.Quote(v.Value) + " of type " + strconv.Quote(t.Name), role: "constant", pos: b.enumPos[v]}
			b.ident(b.idents, "rename the value or set the type's go_name", decl{v.Const, o})
		}
	}
	methods := map[string]owner{"Publisher." + MethodBatch: {what: "eventgen", role: "method"}}
	for _, e := range b.pkg.Events {
		o := func(role string) owner {
			return owner{what: "event " + strconv.Quote(e.Name), role: role, pos: b.eventPos[e]}
		}
		fix := "set go_name to choose another Go name"
		if b.ident(b.idents, fix, decl{e.GoName, o("Go type")}, decl{e.Handler, o("handler interface")}, decl{e.RegisterHandler, o("function")}) &&
			e.PublishMethod != "" {
			b.ident(methods, fix, decl{"Publisher." + e.PublishMethod, o("method")})
		}
	}
	for i, c := range b.pkg.Consumers {
		o := func(role string) owner {
			return owner{what: "consumer " + strconv.Quote(c.Name), role: role, pos: f.Consumers[i].Name.Pos}
		}
		b.ident(b.idents, "set go_name to choose another Go name",
			decl{c.Interface, o("interface")}, decl{c.Register, o("function")}, decl{c.GroupConst, o("constant")})
	}
}

// decl is a Go identifier that a spec entry declares.
type decl struct {
	name string
	o    owner
}

// ident registers the identifiers that one spec entry declares in scope,
// stopping at the first collision, which it reports. An empty name was not
// derived, and that is already reported. It returns whether all were
// registered.
func (b *builder) ident(scope map[string]owner, fix string, decls ...decl) bool {
	for _, d := range decls {
		if d.name == "" {
			return false
		}
		if prev, dup := scope[d.name]; dup {
			if prev.what == "eventgen" {
				b.errs.Errorf(d.o.pos, "%s: its %s %s collides with the %s %s that eventgen generates; %s",
					d.o.what, d.o.role, d.name, prev.role, d.name, fix)
			} else {
				b.errs.Errorf(d.o.pos, "%s: its %s %s collides with the %s %s of %s (%s); %s",
					d.o.what, d.o.role, d.name, prev.role, d.name, prev.what, prev.pos, fix)
			}
			return false
		}
	}
	for _, d := range decls {
		scope[d.name] = d.o
	}
	return true
}

// validates decides which structs and events have anything to validate:
// see Field.MustBeSet and TypeRef.Validates. A struct validates when one of
// its fields needs checking itself or holds a struct that validates, so the
// decision spreads from the structs that contain such fields to the structs
// that contain them, through a work list.
func (b *builder) validates() {
	containers := make(map[*Type][]*Type) // struct -> structs that hold it
	var work []*Type
	for _, t := range b.pkg.Types {
		if t.IsEnum() {
			continue
		}
		for _, f := range t.Fields {
			if f.MustBeSet() || f.Type.Validates() {
				t.Validates = true
			}
			if held := namedStruct(f.Type); held != nil {
				containers[held] = append(containers[held], t)
			}
		}
		if t.Validates {
			work = append(work, t)
		}
	}
	for len(work) > 0 {
		t := work[len(work)-1]
		work = work[:len(work)-1]
		for _, c := range containers[t] {
			if !c.Validates {
				c.Validates = true
				work = append(work, c)
			}
		}
	}
	for _, e := range b.pkg.Events {
		for _, f := range e.Fields {
			if f.MustBeSet() || f.Type.Validates() {
				e.Validates = true
			}
		}
	}
}

// namedStruct returns the struct that t holds, directly or in lists and
// maps, or nil.
func namedStruct(t *TypeRef) *Type {
	for t != nil && (t.Kind == Slice || t.Kind == Map) {
		t = t.Elem
	}
	if t == nil || t.Kind != Named || t.Named.IsEnum() {
		return nil
	}
	return t.Named
}

// usage marks the types that events use and warns about declarations that
// nothing uses.
func (b *builder) usage(f *spec.File) {
	var mark func(t *TypeRef)
	mark = func(t *TypeRef) {
		switch {
		case t == nil:
		case t.Kind == Named && !t.Named.Used:
			t.Named.Used = true
			for _, fd := range t.Named.Fields {
				mark(fd.Type)
			}
		case t.Kind == Slice || t.Kind == Map:
			mark(t.Elem)
		}
	}
	for _, e := range b.pkg.Events {
		for _, fd := range e.Fields {
			mark(fd.Type)
		}
	}
	for _, t := range b.pkg.Types {
		if !t.Used {
			b.warns.Errorf(b.typePos[t], "type %q is not used by any event", t.Name)
		}
	}
	for i, t := range b.pkg.Topics {
		if len(t.Events) == 0 {
			b.warns.Errorf(f.Topics[i].ID.Pos, "topic %q has no events", t.ID)
		}
	}
}

// hint suggests the nearest of known, or lists them when there are few.
func (b *builder) hint(s string, known []string) string {
	if b.errs.Full() {
		return ""
	}
	if sug := diag.Suggest(s, known); sug != "" {
		return fmt.Sprintf("; did you mean %q?", sug)
	}
	if len(known) > 0 && len(known) <= 8 {
		q := make([]string, len(known))
		for i, k := range known {
			q[i] = strconv.Quote(k)
		}
		return " (known: " + strings.Join(q, ", ") + ")"
	}
	return ""
}

func (b *builder) topicIDs() []string {
	ids := make([]string, len(b.pkg.Topics))
	for i, t := range b.pkg.Topics {
		ids[i] = t.ID
	}
	return ids
}

func (b *builder) eventNames() []string {
	names := make([]string, len(b.pkg.Events))
	for i, e := range b.pkg.Events {
		names[i] = e.Name
	}
	return names
}
