package generator

import (
	"github.com/eventgen/eventgen/generator/internal/compat"
	"github.com/eventgen/eventgen/generator/internal/diag"
)

// ChangeLevel says whether a [Change] between two specs fails the check.
type ChangeLevel int

// Levels of changes; docs/compatibility.md gives the rules.
const (
	// Compatible changes keep every running consumer and producer working.
	Compatible ChangeLevel = ChangeLevel(compat.Compatible)
	// Warning changes pass but deserve attention: a breaking change to an
	// event whose version was bumped with it, or an added enum value, which
	// consumers generated from the old spec reject until regenerated.
	Warning ChangeLevel = ChangeLevel(compat.Warning)
	// Breaking changes break consumers or producers generated from the
	// other spec.
	Breaking ChangeLevel = ChangeLevel(compat.Breaking)
)

// Change is one difference between an old and a new spec.
type Change struct {
	Level ChangeLevel
	// At is the change in the new spec. At.Pos is zero when the change has
	// no place there, such as a removed event.
	At Error
	// Old is where the change was in the old spec; Old.Pos is zero for
	// additions.
	Old Error
}

// String formats c as "file:line:col: message (was at oldfile:line:col)",
// with "warning: " before the message of a Warning change and
// "compatible: " before a Compatible one.
func (c Change) String() string {
	e := c.At
	switch c.Level {
	case Warning:
		e.Msg = "warning: " + e.Msg
	case Compatible:
		e.Msg = "compatible: " + e.Msg
	}
	s := e.Error()
	if c.Old.Pos.IsValid() {
		s += " (was at " + c.Old.File + ":" + c.Old.Pos.String() + ")"
	}
	return s
}

// Compare returns the changes from old to new: breaking, warnings and
// compatible. They are sorted by their
// position in the new spec. Shared types are compared where each event uses
// them, and reported with the event and field path, like
// OrderPlaced.lines[].unit_price.currency.
func Compare(old, new *Spec) []Change {
	var out []Change
	for _, c := range compat.Compare(old.pkg, new.pkg) {
		out = append(out, Change{
			Level: ChangeLevel(c.Level),
			At:    diag.Error{File: new.file, Pos: c.Pos, Msg: c.Msg},
			Old:   diag.Error{File: old.file, Pos: c.OldPos, Msg: c.Msg},
		})
	}
	return out
}
