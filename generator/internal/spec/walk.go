package spec

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator/internal/diag"
)

// The keys each mapping accepts, in the order the documentation lists them.
var (
	topKeys      = []string{"package", "source", "topics", "types", "events", "consumers"}
	topicKeys    = []string{"name", "description"}
	typeKeys     = []string{"fields", "enum", "description", "go_name"}
	eventKeys    = []string{"topic", "version", "description", "key", "fields", "go_name", "deprecated"}
	fieldKeys    = []string{"type", "optional", "description", "json"}
	consumerKeys = []string{"handles", "description", "go_name"}
)

// decoder walks the YAML tree of a spec. It follows aliases and merge keys
// (<<), which Parse has already bounded.
type decoder struct {
	errs *diag.Collector
}

// pair is one key and value of a mapping, after merge keys are applied.
type pair struct {
	key, val *yaml.Node
}

func (d *decoder) file(root *yaml.Node) *File {
	f := &File{}
	for _, p := range d.pairs(root, "the spec") {
		switch p.key.Value {
		case "package":
			f.Package = d.str(p, "package")
		case "source":
			f.Source = d.str(p, "source")
		case "topics":
			for _, q := range d.entries(p, "topics") {
				f.Topics = append(f.Topics, d.topic(q))
			}
		case "types":
			for _, q := range d.entries(p, "types") {
				f.Types = append(f.Types, d.typ(q))
			}
		case "events":
			for _, q := range d.entries(p, "events") {
				f.Events = append(f.Events, d.event(q))
			}
		case "consumers":
			for _, q := range d.entries(p, "consumers") {
				f.Consumers = append(f.Consumers, d.consumer(q))
			}
		default:
			// Keys starting with x- hold anchors for aliases and
			// extensions for other tools, as in Compose files.
			if !strings.HasPrefix(p.key.Value, "x-") {
				d.unknownKey(p.key, "at the top level", topKeys)
			}
		}
	}
	return f
}

func (d *decoder) topic(e pair) *Topic {
	t := &Topic{ID: name(e)}
	what := "topic " + strconv.Quote(t.ID.Value)
	for _, p := range d.pairs(e.val, what) {
		switch p.key.Value {
		case "name":
			t.Name = d.str(p, what+" name")
		case "description":
			t.Description = d.str(p, what+" description")
		default:
			d.unknownKey(p.key, "in "+what, topicKeys)
		}
	}
	return t
}

func (d *decoder) typ(e pair) *Type {
	t := &Type{Name: name(e), Unknown: !isMapping(e.val)}
	what := "type " + strconv.Quote(t.Name.Value)
	for _, p := range d.pairs(e.val, what) {
		switch p.key.Value {
		case "fields":
			t.HasFields = true
			t.Fields = d.fields(p, what)
		case "enum":
			t.HasEnum = true
			t.EnumPos = nodePos(p.key)
			t.Enum, t.EnumInvalid = d.strs(p, what+" enum")
		case "description":
			t.Description = d.str(p, what+" description")
		case "go_name":
			t.GoName = d.str(p, what+" go_name")
		default:
			d.unknownKey(p.key, "in "+what, typeKeys)
			t.Unknown = true
		}
	}
	return t
}

func (d *decoder) event(e pair) *Event {
	ev := &Event{Name: name(e), Unknown: !isMapping(e.val)}
	ev.Topic.Pos = ev.Name.Pos
	what := "event " + strconv.Quote(ev.Name.Value)
	for _, p := range d.pairs(e.val, what) {
		switch p.key.Value {
		case "topic":
			ev.Topic = d.str(p, what+" topic")
		case "version":
			ev.Version = d.int(p, what+" version")
		case "description":
			ev.Description = d.str(p, what+" description")
		case "key":
			ev.Key = d.str(p, what+" key")
		case "fields":
			ev.Fields = d.fields(p, what)
		case "go_name":
			ev.GoName = d.str(p, what+" go_name")
		case "deprecated":
			ev.Deprecated = d.deprecated(p, what)
		default:
			d.unknownKey(p.key, "in "+what, eventKeys)
			ev.Unknown = true
		}
	}
	return ev
}

func (d *decoder) deprecated(p pair, what string) Deprecated {
	v := resolve(p.val)
	dep := Deprecated{Pos: nodePos(v)}
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!bool":
		dep.Set, _ = strconv.ParseBool(v.Value)
	case v.Kind == yaml.ScalarNode && v.Tag != "!!null" && v.Value != "":
		dep.Set, dep.Reason = true, v.Value
	default:
		d.errs.Errorf(nodePos(v), "%s deprecated must be true, false or a text saying what to use instead", what)
	}
	return dep
}

func (d *decoder) fields(p pair, owner string) []*Field {
	var fields []*Field
	for _, q := range d.entries(p, owner+" fields") {
		fields = append(fields, d.field(q, owner))
	}
	return fields
}

// field decodes `name: type` or `name: {type: T, optional: true, ...}`.
func (d *decoder) field(e pair, owner string) *Field {
	f := &Field{Name: name(e)}
	what := "field " + strconv.Quote(f.Name.Value) + " of " + owner
	v := resolve(e.val)
	switch v.Kind {
	case yaml.ScalarNode:
		f.Type = d.str(e, what+" type")
	case yaml.MappingNode:
		for _, p := range d.pairs(v, what) {
			switch p.key.Value {
			case "type":
				f.Type = d.str(p, what+" type")
			case "optional":
				f.Optional = d.bool(p, what+" optional")
			case "description":
				f.Description = d.str(p, what+" description")
			case "json":
				f.JSON = d.str(p, what+" json")
			case "go_name":
				d.errs.Errorf(nodePos(p.key), "unknown key %q in %s: fields take no go_name; the Go name comes from the field's name, so rename the field and keep its wire name with json: %s",
					p.key.Value, what, f.Name.Value)
			default:
				d.unknownKey(p.key, "in "+what, fieldKeys)
			}
		}
	default:
		d.errs.Errorf(nodePos(v), "%s must be a type, like string, or a mapping with keys %s", what, quoteList(fieldKeys))
		f.Type.Invalid = true
	}
	if !f.Type.Set && f.Type.Pos == (diag.Pos{}) {
		f.Type.Pos = f.Name.Pos
	}
	return f
}

func (d *decoder) consumer(e pair) *Consumer {
	c := &Consumer{Name: name(e), Unknown: !isMapping(e.val)}
	what := "consumer " + strconv.Quote(c.Name.Value)
	for _, p := range d.pairs(e.val, what) {
		switch p.key.Value {
		case "handles":
			c.Handles, c.HandlesInvalid = d.strs(p, what+" handles")
		case "description":
			c.Description = d.str(p, what+" description")
		case "go_name":
			c.GoName = d.str(p, what+" go_name")
		default:
			d.unknownKey(p.key, "in "+what, consumerKeys)
			c.Unknown = true
		}
	}
	return c
}

// entries returns the pairs of a mapping of named entries, such as events:.
func (d *decoder) entries(p pair, what string) []pair {
	v := resolve(p.val)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		d.errs.Errorf(nodePos(v), "%s must be a mapping from names to entries", what)
		return nil
	}
	return d.pairs(v, what)
}

// pairs returns the keys and values of mapping n, with merge keys (<<)
// applied: keys written in n win over merged ones, and earlier merge sources
// win over later ones. A null n has no pairs. Duplicate keys are errors.
func (d *decoder) pairs(n *yaml.Node, what string) []pair {
	return d.mergePairs(n, what, make(map[*yaml.Node]bool))
}

func (d *decoder) mergePairs(n *yaml.Node, what string, active map[*yaml.Node]bool) []pair {
	n = resolve(n)
	if isNull(n) || active[n] {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errs.Errorf(nodePos(n), "%s must be a mapping", what)
		return nil
	}
	active[n] = true
	defer delete(active, n)

	seen := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k.Tag == "!!merge" || k.Kind != yaml.ScalarNode {
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errs.Errorf(nodePos(k), "duplicate key %q in %s (first at line %d)", k.Value, what, first.Line)
			continue
		}
		seen[k.Value] = k
	}

	var out []pair
	added := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		switch {
		case k.Tag == "!!merge":
			for _, p := range d.merged(v, what, active) {
				if seen[p.key.Value] == nil && !added[p.key.Value] {
					added[p.key.Value] = true
					out = append(out, p)
				}
			}
		case k.Kind != yaml.ScalarNode || k.Tag == "!!null":
			d.errs.Errorf(nodePos(k), "keys in %s must be names", what)
		case seen[k.Value] == k:
			out = append(out, pair{key: k, val: v})
		}
	}
	return out
}

// merged returns the pairs that a merge key's value brings in: a mapping or
// a sequence of mappings.
func (d *decoder) merged(v *yaml.Node, what string, active map[*yaml.Node]bool) []pair {
	v = resolve(v)
	if v.Kind != yaml.SequenceNode {
		return d.mergePairs(v, what, active)
	}
	var out []pair
	for _, m := range v.Content {
		out = append(out, d.mergePairs(m, what, active)...)
	}
	return out
}

// str decodes a scalar as a string. Null is an unset String positioned at
// the key; a collection is an error.
func (d *decoder) str(p pair, what string) String {
	v := resolve(p.val)
	switch {
	case isNull(v):
		return String{Pos: nodePos(p.key)}
	case v.Kind != yaml.ScalarNode:
		d.errs.Errorf(nodePos(v), "%s must be a string", what)
		return String{Pos: nodePos(v), Invalid: true}
	}
	return String{Value: v.Value, Pos: nodePos(v), Set: true}
}

// strs decodes a sequence of scalars. invalid reports a value that is not a
// list, which is reported here.
func (d *decoder) strs(p pair, what string) (list []String, invalid bool) {
	v := resolve(p.val)
	if isNull(v) {
		return nil, false
	}
	if v.Kind != yaml.SequenceNode {
		d.errs.Errorf(nodePos(v), "%s must be a list, like [a, b]", what)
		return nil, true
	}
	out := make([]String, 0, len(v.Content))
	for _, it := range v.Content {
		out = append(out, d.str(pair{key: it, val: it}, what+" entry"))
	}
	return out, false
}

func (d *decoder) int(p pair, what string) Int {
	v := resolve(p.val)
	if isNull(v) {
		return Int{Pos: nodePos(p.key)}
	}
	if v.Kind == yaml.ScalarNode && v.Tag == "!!int" {
		if n, err := strconv.ParseInt(v.Value, 0, 32); err == nil {
			return Int{Value: int(n), Pos: nodePos(v), Set: true}
		}
	}
	d.errs.Errorf(nodePos(v), "%s must be a whole number, not %s", what, describe(v))
	return Int{Pos: nodePos(v)}
}

func (d *decoder) bool(p pair, what string) Bool {
	v := resolve(p.val)
	if isNull(v) {
		return Bool{Pos: nodePos(p.key)}
	}
	if v.Kind == yaml.ScalarNode && v.Tag == "!!bool" {
		if b, err := strconv.ParseBool(v.Value); err == nil {
			return Bool{Value: b, Pos: nodePos(v), Set: true}
		}
	}
	d.errs.Errorf(nodePos(v), "%s must be true or false, not %s", what, describe(v))
	return Bool{Pos: nodePos(v)}
}

// unknownKey reports a key that the mapping does not accept, suggesting the
// nearest known key.
func (d *decoder) unknownKey(k *yaml.Node, where string, known []string) {
	if s := diag.Suggest(k.Value, known); s != "" {
		d.errs.Errorf(nodePos(k), "unknown key %q %s; did you mean %q?", k.Value, where, s)
		return
	}
	d.errs.Errorf(nodePos(k), "unknown key %q %s; known keys are %s", k.Value, where, quoteList(known))
}

// name returns an entry's key as its name.
func name(e pair) String {
	return String{Value: e.key.Value, Pos: nodePos(e.key), Set: true}
}

// resolve follows aliases. Parse has rejected aliases that refer to their
// own ancestors, and yaml.v3 rejects unknown anchors.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isMapping reports whether n is a mapping or null (an empty entry).
func isMapping(n *yaml.Node) bool {
	n = resolve(n)
	return isNull(n) || n.Kind == yaml.MappingNode
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" || n.Kind == 0
}

// describe names a node's value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}
