// Package diag holds the positioned errors that the generator reports about
// a spec, and collects them so that one run reports every problem.
package diag

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Pos is a position in a spec file. Line and Column count from 1. Column is 0
// when only the line is known, and both are 0 when the problem concerns the
// whole file.
type Pos struct {
	Line   int
	Column int
}

// IsValid reports whether p names a line.
func (p Pos) IsValid() bool { return p.Line > 0 }

// String formats p as "line:column", "line", or "" when p is not valid.
func (p Pos) String() string {
	switch {
	case p.Line <= 0:
		return ""
	case p.Column <= 0:
		return strconv.Itoa(p.Line)
	default:
		return strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Column)
	}
}

// Error is one problem in a spec file.
type Error struct {
	// File is the spec file's name as it was given to the generator.
	File string
	// Pos is where the problem is; see [Pos] for its zero values.
	Pos Pos
	// Msg describes the problem. It names the offending spec name.
	Msg string
}

// Error formats e as "file:line:column: message", the form that editors and
// CI annotations understand. Unknown parts are left out.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if p := e.Pos.String(); p != "" {
		b.WriteString(p)
		b.WriteString(":")
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// List is every problem found in one spec. It implements error; Error
// returns one problem per line, in position order.
type List []*Error

// Error returns the problems, one per line.
func (l List) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders l by file, position and message, so that output never depends
// on the order in which problems were found.
func (l List) Sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Column, b.Pos.Column),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
}

// Err returns l sorted and with exact duplicates removed, or nil when l is
// empty.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	l.Sort()
	return slices.CompactFunc(l, func(a, b *Error) bool { return *a == *b })
}

// MaxErrors bounds the problems collected for one file. Past it, further
// problems are dropped and the list ends with a note saying so, like a
// compiler's "too many errors".
const MaxErrors = 100

// Collector gathers the problems of one file.
type Collector struct {
	file    string
	list    List
	dropped int
}

// NewCollector returns a Collector for the named file.
func NewCollector(file string) *Collector {
	return &Collector{file: file}
}

// File returns the name of the file problems are collected for.
func (c *Collector) File() string { return c.file }

// Errorf records a problem at pos. Spec strings must be passed as arguments,
// never as part of format.
func (c *Collector) Errorf(pos Pos, format string, args ...any) {
	if c.Full() {
		c.dropped++
		return
	}
	c.list = append(c.list, &Error{File: c.file, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Full reports whether the collector holds MaxErrors problems and drops
// any more; callers may then skip costly work such as suggestions.
func (c *Collector) Full() bool { return len(c.list) >= MaxErrors }

// Len returns the number of problems recorded so far.
func (c *Collector) Len() int { return len(c.list) + c.dropped }

// List returns the problems recorded so far, sorted, followed by a note
// when some were dropped.
func (c *Collector) List() List {
	l := slices.Clone(c.list)
	l.Sort()
	l = slices.CompactFunc(l, func(a, b *Error) bool { return *a == *b })
	if c.dropped > 0 {
		l = append(l, &Error{File: c.file, Msg: fmt.Sprintf("too many errors: %d more not shown", c.dropped)})
	}
	return l
}

// Err returns the problems as a [List], or nil when there are none.
func (c *Collector) Err() error {
	if c.Len() == 0 {
		return nil
	}
	return c.List()
}
