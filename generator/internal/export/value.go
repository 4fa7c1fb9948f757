package export

import (
	"bytes"
	"encoding/json"
	"strconv"

	"gopkg.in/yaml.v3"
)

// A document is built from these values, so that its keys keep the order
// in which they are added and the output is the same on every run:
//
//   - obj, an object whose keys are in insertion order;
//   - arr, an array;
//   - string, bool, int, and num (a number written as it is, such as
//     -9223372036854775808, which a float64 cannot hold).
type (
	obj struct{ kvs []kv }
	kv  struct {
		key string
		val any
	}
	arr []any
	num string
)

// set adds key with val, unless val is nil, and returns o.
func (o *obj) set(key string, val any) *obj {
	if val == nil {
		return o
	}
	o.kvs = append(o.kvs, kv{key, val})
	return o
}

// setText adds key with s unless s is empty.
func (o *obj) setText(key, s string) *obj {
	if s == "" {
		return o
	}
	return o.set(key, s)
}

// get returns the value of key, or nil.
func (o *obj) get(key string) any {
	for _, e := range o.kvs {
		if e.key == key {
			return e.val
		}
	}
	return nil
}

// strs converts ss to an arr.
func strs(ss []string) arr {
	a := make(arr, len(ss))
	for i, s := range ss {
		a[i] = s
	}
	return a
}

// encodeJSON writes v as indented JSON with a final newline. Strings are
// not HTML-escaped.
func encodeJSON(v any) []byte {
	var b bytes.Buffer
	writeJSON(&b, v, "")
	b.WriteByte('\n')
	return b.Bytes()
}

func writeJSON(b *bytes.Buffer, v any, indent string) {
	inner := indent + "  "
	switch v := v.(type) {
	case *obj:
		if len(v.kvs) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{\n")
		for i, e := range v.kvs {
			if i > 0 {
				b.WriteString(",\n")
			}
			b.WriteString(inner)
			writeString(b, e.key)
			b.WriteString(": ")
			writeJSON(b, e.val, inner)
		}
		b.WriteString("\n" + indent + "}")
	case arr:
		if len(v) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for i, e := range v {
			if i > 0 {
				b.WriteString(",\n")
			}
			b.WriteString(inner)
			writeJSON(b, e, inner)
		}
		b.WriteString("\n" + indent + "]")
	case string:
		writeString(b, v)
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case num:
		b.WriteString(string(v))
	default:
		panic("export: cannot encode a value of this type") // a bug in the exporter, not in the spec
	}
}

func writeString(b *bytes.Buffer, s string) {
	var sb bytes.Buffer
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(sb.Bytes(), []byte("\n")))
}

// encodeYAML writes v as YAML, indented by two spaces, after the comment
// lines in header. Arrays of scalars are written in flow style, [a, b].
func encodeYAML(header string, v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(yamlNode(v)); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func yamlNode(v any) *yaml.Node {
	switch v := v.(type) {
	case *obj:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, e := range v.kvs {
			n.Content = append(n.Content, scalar("!!str", e.key), yamlNode(e.val))
		}
		if len(v.kvs) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n
	case arr:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, e := range v {
			c := yamlNode(e)
			if c.Kind != yaml.ScalarNode {
				n.Style = 0
			}
			n.Content = append(n.Content, c)
		}
		return n
	case string:
		return scalar("!!str", v)
	case bool:
		return scalar("!!bool", strconv.FormatBool(v))
	case int:
		return scalar("!!int", strconv.Itoa(v))
	case num:
		return numNode(string(v))
	}
	panic("export: cannot encode a value of this type") // a bug in the exporter, not in the spec
}

// numNode writes an integer as it is if YAML decoders read it into a 64-bit
// integer, and otherwise as the float64 nearest to it, which is what they
// read it as. The only such number, float32Limit, is a float64 exactly.
func numNode(s string) *yaml.Node {
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return scalar("!!int", s)
	}
	if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		return scalar("!!int", s)
	}
	f, _ := strconv.ParseFloat(s, 64) // a num is always a number
	return scalar("!!float", strconv.FormatFloat(f, 'g', -1, 64))
}

func scalar(tag, value string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
	if tag == "!!str" && value != "" && value[len(value)-1] != '\n' && bytes.ContainsRune([]byte(value), '\n') {
		n.Style = yaml.LiteralStyle
	}
	return n
}
