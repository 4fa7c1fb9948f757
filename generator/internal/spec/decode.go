package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator/internal/diag"
)

// Parse decodes data, the contents of the spec file that c collects problems
// for. It returns nil when the file cannot be read as a spec at all (too
// large, empty, not YAML, not a mapping); otherwise it returns what it could
// decode, with every problem recorded in c.
func Parse(c *diag.Collector, data []byte) *File {
	if len(data) > MaxFileSize {
		c.Errorf(diag.Pos{}, "file is %d bytes, over the limit of %d bytes (1 MiB)", len(data), MaxFileSize)
		return nil
	}
	root, ok := parseYAML(c, data)
	if !ok {
		return nil
	}
	if n, cyclic, at := expandedSize(root, MaxNodes); cyclic {
		c.Errorf(nodePos(at), "alias *%s refers to a node that contains it", at.Value)
		return nil
	} else if n > MaxNodes {
		c.Errorf(diag.Pos{}, "spec expands to more than %d YAML nodes with its aliases expanded; refusing to read it", MaxNodes)
		return nil
	}
	d := &decoder{errs: c}
	return d.file(root)
}

// parseYAML parses data as exactly one YAML document and returns its root.
func parseYAML(c *diag.Collector, data []byte) (root *yaml.Node, ok bool) {
	docs, err := decodeAll(data, 2)
	if err != nil {
		pos := syntaxPos(data, err)
		c.Errorf(pos, "%s", syntaxMessage(data, err, pos))
		return nil, false
	}
	if len(docs) == 0 || len(docs[0].Content) == 0 {
		c.Errorf(diag.Pos{}, "spec is empty: it needs at least package: and events:")
		return nil, false
	}
	if len(docs) > 1 {
		c.Errorf(nodePos(docs[1]), "spec has more than one YAML document; remove the second ---")
		return nil, false
	}
	root = docs[0].Content[0]
	if root.Kind != yaml.MappingNode {
		c.Errorf(nodePos(root), "spec must be a mapping with keys %s", quoteList(topKeys))
		return nil, false
	}
	return root, true
}

// decodeAll parses up to max documents from data. yaml.v3 reports input
// errors by panicking internally and recovering; the recover here is a
// second line of defence so that no input can crash the generator.
func decodeAll(data []byte, max int) (docs []*yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			docs, err = nil, fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for len(docs) < max {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		docs = append(docs, &doc)
	}
	return docs, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxPos finds the line of a YAML syntax error. yaml.v3 names the line
// for most errors but not all; for the others, the line is found as the
// first one at which a prefix of the file stops parsing. yaml.v3 never
// reports a column, so the position has none.
func syntaxPos(data []byte, err error) diag.Pos {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return diag.Pos{Line: line}
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	lo, hi := 1, len(lines) // the first hi lines fail to parse
	for lo < hi {
		mid := (lo + hi) / 2
		if _, err := decodeAll(bytes.Join(lines[:mid], nil), 1<<30); err != nil {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return diag.Pos{Line: hi}
}

// syntaxMessage rewrites a yaml.v3 error for a spec author, adding a hint for
// the most common mistake: an unquoted type such as []LineItem, which YAML
// reads as the start of a list.
func syntaxMessage(data []byte, err error, p diag.Pos) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		msg = m[2]
	}
	msg = "invalid YAML: " + msg
	if p.Line > 0 {
		// yaml.v3 may name a line past the end of the input.
		lines := strings.Split(string(data), "\n")
		end := min(len(lines), p.Line+1)
		for _, l := range lines[min(end, max(0, p.Line-2)):end] {
			if strings.Contains(l, ": []") || strings.Contains(l, ": [ ]") {
				return msg + ` (quote types that start with "[", like "[]LineItem")`
			}
		}
	}
	return msg
}

// expandedSize counts the nodes under n with aliases expanded, stopping at
// limit+1. It reports an alias that refers to its own ancestor, whose
// expansion would never end.
func expandedSize(n *yaml.Node, limit int) (size int, cyclic bool, at *yaml.Node) {
	memo := make(map[*yaml.Node]int)
	active := make(map[*yaml.Node]bool)
	var count func(n *yaml.Node) int
	count = func(n *yaml.Node) int {
		if n == nil || cyclic {
			return 0
		}
		if s, ok := memo[n]; ok {
			return s
		}
		if active[n] {
			cyclic = true
			return limit + 1
		}
		active[n] = true
		s := 1
		if n.Kind == yaml.AliasNode {
			if active[n.Alias] && at == nil {
				at = n
			}
			s += count(n.Alias)
		}
		for _, ch := range n.Content {
			if s > limit {
				break
			}
			s += count(ch)
		}
		active[n] = false
		s = min(s, limit+1)
		memo[n] = s
		return s
	}
	size = count(n)
	if cyclic && at == nil {
		at = n
	}
	return size, cyclic, at
}

func nodePos(n *yaml.Node) diag.Pos {
	if n == nil {
		return diag.Pos{}
	}
	return diag.Pos{Line: n.Line, Column: n.Column}
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
