package generator

import (
	"fmt"
	"slices"
	"strings"

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
	// Rule is the id of the rule, like FIELD_REMOVED ([Rules] lists them).
	Rule string
	// Subject is what changed: an event (OrderPlaced), a field path
	// (OrderPlaced.lines[].sku), an enum value (OrderPlaced.status=paid), a
	// consumer group (billing) or an event it handled (billing/OrderPlaced).
	Subject string
	// Allowed says why a breaking change is only a Warning: AllowedVersion
	// or AllowedExplicitly; it is empty for other changes.
	Allowed string
	// At is the change in the new spec. At.Pos is zero when the change has
	// no place there, such as a removed event.
	At Error
	// Old is where the change was in the old spec; Old.Pos is zero for
	// additions.
	Old Error
}

// Why a breaking change was allowed, in [Change.Allowed].
const (
	// AllowedVersion: the event's version was bumped with the change.
	AllowedVersion = "version"
	// AllowedExplicitly: [Allow] named the change.
	AllowedExplicitly = "allow"
)

// ID names the change exactly: its rule and subject, as in
// "FIELD_REMOVED:OrderPlaced.note". [Allow] takes these.
func (c Change) ID() string { return c.Rule + ":" + c.Subject }

// String formats c as "file:line:col: message (was at oldfile:line:col)",
// with "warning: " before the message of a Warning change and
// "compatible: " before a Compatible one, and a Breaking one's ID at the
// end in brackets.
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
	if c.Level == Breaking {
		s += " [" + c.ID() + "]"
	}
	return s
}

// Rules lists the id of every rule, in the order of docs/compatibility.md.
func Rules() []string { return compat.Rules() }

// Allow accepts the breaking changes whose [Change.ID] is in ids: they
// become Warnings, allowed explicitly, with " (allowed: --allow)" after
// their message. Other breaking changes stay breaking. It returns the
// changes and the ids that name no breaking change, in the order given.
func Allow(changes []Change, ids []string) (out []Change, unused []string) {
	used := make(map[string]bool)
	out = slices.Clone(changes)
	for i, c := range out {
		if c.Level == Breaking && slices.Contains(ids, c.ID()) {
			used[c.ID()] = true
			out[i].Level = Warning
			out[i].Allowed = AllowedExplicitly
			out[i].At.Msg += " (allowed: --allow)"
		}
	}
	for _, id := range ids {
		if !used[id] && !slices.Contains(unused, id) {
			unused = append(unused, id)
		}
	}
	return out, unused
}

// ParseChangeID checks a change id given to [Allow], RULE:SUBJECT: the
// rule must be one of [Rules], and the subject must not be empty.
func ParseChangeID(id string) error {
	rule, subject, ok := strings.Cut(id, ":")
	switch {
	case !ok || subject == "":
		return fmt.Errorf("%q is not RULE:SUBJECT, such as FIELD_REMOVED:OrderPlaced.note", id)
	case !slices.Contains(compat.Rules(), rule):
		return fmt.Errorf("%q: unknown rule %q; the rules are %s", id, rule, strings.Join(compat.Rules(), ", "))
	}
	return nil
}

// Compare returns the changes from old to new: breaking, warnings and
// compatible. They are sorted by their
// position in the new spec. Shared types are compared where each event uses
// them, and reported with the event and field path, like
// OrderPlaced.lines[].unit_price.currency.
func Compare(old, new *Spec) []Change {
	var out []Change
	for _, c := range compat.Compare(old.pkg, new.pkg) {
		ch := Change{
			Level:   ChangeLevel(c.Level),
			Rule:    c.Rule,
			Subject: c.Subject,
			At:      diag.Error{File: new.file, Pos: c.Pos, Msg: c.Msg},
			Old:     diag.Error{File: old.file, Pos: c.OldPos, Msg: c.Msg},
		}
		if c.VersionBumped {
			ch.Allowed = AllowedVersion
		}
		out = append(out, ch)
	}
	return out
}
