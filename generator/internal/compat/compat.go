// Package compat compares two validated specs and reports the changes that
// break consumers or producers already running. The rules are stated from
// the reader's side: a consumer generated from the old spec must still
// decode and validate what a producer generated from the new spec sends, and
// a consumer generated from the new spec must accept what a producer
// generated from the old spec still sends. docs/compatibility.md lists them.
package compat

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/eventgen/eventgen/generator/internal/diag"
	"github.com/eventgen/eventgen/generator/internal/model"
)

// Level says how a change is reported.
type Level int

// Levels of changes.
const (
	// Compatible changes keep every running consumer and producer working.
	Compatible Level = iota
	// Warning changes pass the check but are printed: a breaking change to
	// an event whose version was bumped, or an enum value added, which
	// consumers generated from the old spec reject until they are
	// regenerated.
	Warning
	// Breaking changes fail the check.
	Breaking
)

// Change is one difference between the specs.
type Change struct {
	Level Level
	// Rule is the rule's id, like FieldRemoved; docs/compatibility.md
	// lists them.
	Rule string
	// Subject is what changed: an event (OrderPlaced), a field path
	// (OrderPlaced.lines[].sku), an enum value (OrderPlaced.status=paid), a
	// consumer group (billing) or an event it handled (billing/OrderPlaced).
	// Rule and Subject together name the change.
	Subject string
	// VersionBumped is set on a breaking change to an event whose version
	// was bumped with it, which makes it a Warning.
	VersionBumped bool
	// Pos is the position in the new spec; it is zero when the change has
	// no place there, such as a removed event.
	Pos diag.Pos
	// OldPos is the position in the old spec, or zero for additions.
	OldPos diag.Pos
	// Msg names the event and field path, like OrderPlaced.total.currency,
	// and says what changed.
	Msg string
}

// Rule ids, stated in docs/compatibility.md. They are part of the command's
// output (-json, --allow): never rename one.
const (
	EventRemoved         = "EVENT_REMOVED"
	EventAdded           = "EVENT_ADDED"
	VersionLowered       = "VERSION_LOWERED"
	VersionBumped        = "VERSION_BUMPED"
	WireNameChanged      = "WIRE_NAME_CHANGED"
	TopicChanged         = "TOPIC_CHANGED"
	KeyChanged           = "KEY_CHANGED"
	FieldRemoved         = "FIELD_REMOVED"
	OptionalFieldAdded   = "OPTIONAL_FIELD_ADDED"
	RequiredFieldAdded   = "REQUIRED_FIELD_ADDED"
	JSONNameChanged      = "JSON_NAME_CHANGED"
	FieldMadeRequired    = "FIELD_MADE_REQUIRED"
	FieldMadeOptional    = "FIELD_MADE_OPTIONAL"
	FieldTypeChanged     = "FIELD_TYPE_CHANGED"
	EnumValueRemoved     = "ENUM_VALUE_REMOVED"
	EnumValueAdded       = "ENUM_VALUE_ADDED"
	ConsumerRemoved      = "CONSUMER_REMOVED"
	ConsumerEventDropped = "CONSUMER_EVENT_DROPPED"
)

// Rules returns every rule id, in the order of docs/compatibility.md.
func Rules() []string {
	return []string{
		EventRemoved, FieldRemoved, FieldTypeChanged, FieldMadeRequired, FieldMadeOptional,
		EnumValueRemoved, JSONNameChanged, WireNameChanged, TopicChanged, KeyChanged, VersionLowered,
		ConsumerEventDropped, ConsumerRemoved, RequiredFieldAdded, EnumValueAdded, OptionalFieldAdded,
		EventAdded, VersionBumped,
	}
}

// Compare returns the changes from old to new, sorted by position in the
// new spec, then in the old one, then by message.
func Compare(old, new *model.Package) []Change {
	c := &comparer{}
	newByName := make(map[string]*model.Event)
	newByGo := make(map[string]*model.Event)
	for _, e := range new.Events {
		newByName[e.Name] = e
		newByGo[e.GoName] = e
	}
	matched := make(map[*model.Event]bool)
	oldNames := make(map[string]bool)
	for _, e := range old.Events {
		oldNames[e.Name] = true
	}
	for _, oe := range old.Events {
		ne := newByName[oe.Name]
		if ne == nil {
			// An event renamed on the wire keeps its Go name, or go_name.
			if g := newByGo[oe.GoName]; g != nil && !oldNames[g.Name] {
				ne = g
			}
		}
		if ne == nil {
			c.add(Breaking, EventRemoved, oe.Name, diag.Pos{}, oe.Pos, "%s: event removed; consumers that handle it never receive it again, and code that publishes it no longer compiles", oe.Name)
			continue
		}
		matched[ne] = true
		c.event(oe, ne)
	}
	for _, ne := range new.Events {
		if !matched[ne] {
			c.add(Compatible, EventAdded, ne.Name, ne.Pos, diag.Pos{}, "%s: event added", ne.Name)
		}
	}
	c.consumers(old, new, newByName)
	slices.SortFunc(c.changes, func(a, b Change) int {
		return cmp.Or(
			cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Column, b.Pos.Column),
			cmp.Compare(a.OldPos.Line, b.OldPos.Line), cmp.Compare(a.OldPos.Column, b.OldPos.Column),
			cmp.Compare(a.Msg, b.Msg))
	})
	return c.changes
}

type comparer struct {
	changes []Change
	// level is the level of a breaking change in the event being compared:
	// Warning when its version was bumped.
	level Level
	// seen holds the pairs of shared types compared in the current event,
	// so that each is reported once, at its first path, and recursive
	// types end.
	seen map[[2]*model.Type]bool
}

func (c *comparer) add(l Level, rule, subject string, pos, oldPos diag.Pos, format string, args ...any) {
	c.changes = append(c.changes, Change{Level: l, Rule: rule, Subject: subject, Pos: pos, OldPos: oldPos, Msg: fmt.Sprintf(format, args...)})
}

// breaking records a breaking change in the current event, a Warning if
// its version was bumped.
func (c *comparer) breaking(rule, subject string, pos, oldPos diag.Pos, format string, args ...any) {
	c.add(c.level, rule, subject, pos, oldPos, format, args...)
	if c.level == Warning {
		ch := &c.changes[len(c.changes)-1]
		ch.VersionBumped = true
		ch.Msg += " (allowed: version bumped)"
	}
}

func (c *comparer) event(oe, ne *model.Event) {
	c.level = Breaking
	c.seen = make(map[[2]*model.Type]bool)
	switch {
	case ne.Version < oe.Version:
		c.add(Breaking, VersionLowered, ne.Name, ne.VersionPos, oe.VersionPos, "%s: version lowered from %d to %d", ne.Name, oe.Version, ne.Version)
	case ne.Version > oe.Version:
		c.level = Warning
		c.add(Compatible, VersionBumped, ne.Name, ne.VersionPos, oe.VersionPos, "%s: version bumped from %d to %d", ne.Name, oe.Version, ne.Version)
	}
	if oe.Name != ne.Name {
		c.breaking(WireNameChanged, ne.Name, ne.Pos, oe.Pos, "%s: wire name changed from %s to %s; consumers generated from the old spec do not recognise it", ne.Name, strconv.Quote(oe.Name), strconv.Quote(ne.Name))
	}
	if ot, nt := oe.Topic.Name, ne.Topic.Name; ot != nt {
		c.breaking(TopicChanged, ne.Name, ne.TopicPos, oe.TopicPos, "%s: topic changed from %s to %s; consumers subscribed to the old topic no longer receive it", ne.Name, strconv.Quote(ot), strconv.Quote(nt))
	}
	if ok, nk := keyName(oe.Key), keyName(ne.Key); ok != nk {
		c.breaking(KeyChanged, ne.Name, ne.KeyPos, oe.KeyPos, "%s: key changed from %s to %s; ordering and partitioning change", ne.Name, ok, nk)
	}
	c.fields(ne.Name, ne.Pos, oe.Fields, ne.Fields)
}

func keyName(f *model.Field) string {
	if f == nil {
		return "none"
	}
	return strconv.Quote(f.JSON)
}

// fields compares the fields of two structs at path. pos is the struct's
// position in the new spec, where removed fields are reported.
func (c *comparer) fields(path string, pos diag.Pos, old, new []*model.Field) {
	byJSON := make(map[string]*model.Field)
	byName := make(map[string]*model.Field)
	for _, f := range new {
		byJSON[f.JSON] = f
		byName[f.Name] = f
	}
	oldJSON := make(map[string]bool)
	for _, f := range old {
		oldJSON[f.JSON] = true
	}
	matched := make(map[*model.Field]bool)
	for _, of := range old {
		nf := byJSON[of.JSON]
		if nf == nil {
			if n := byName[of.Name]; n != nil && !oldJSON[n.JSON] {
				nf = n
			}
		}
		if nf == nil {
			c.breaking(FieldRemoved, path+"."+of.Name, pos, of.Pos, "%s.%s: field removed; consumers generated from the old spec no longer receive it", path, of.Name)
			continue
		}
		matched[nf] = true
		c.field(path+"."+nf.Name, of, nf)
	}
	for _, nf := range new {
		switch {
		case matched[nf]:
		case nf.Optional:
			c.add(Compatible, OptionalFieldAdded, path+"."+nf.Name, nf.Pos, diag.Pos{}, "%s.%s: optional field added", path, nf.Name)
		default:
			c.breaking(RequiredFieldAdded, path+"."+nf.Name, nf.Pos, diag.Pos{}, "%s.%s: required field added; producers generated from the old spec do not send it", path, nf.Name)
		}
	}
}

func (c *comparer) field(path string, of, nf *model.Field) {
	if of.JSON != nf.JSON {
		c.breaking(JSONNameChanged, path, nf.JSONPos, of.JSONPos, "%s: JSON name changed from %s to %s", path, strconv.Quote(of.JSON), strconv.Quote(nf.JSON))
	}
	switch {
	case of.Optional && !nf.Optional:
		c.breaking(FieldMadeRequired, path, nf.OptionalPos, of.OptionalPos, "%s: optional field made required; producers generated from the old spec may leave it out", path)
	case !of.Optional && nf.Optional:
		c.breaking(FieldMadeOptional, path, nf.OptionalPos, of.OptionalPos, "%s: required field made optional; consumers generated from the old spec expect it", path)
	}
	c.typeRef(path, nf.TypePos, of.TypePos, of.Type, nf.Type)
}

// typeRef compares field types structurally: a shared type may be renamed,
// what matters is what goes on the wire.
func (c *comparer) typeRef(path string, pos, oldPos diag.Pos, ot, nt *model.TypeRef) {
	if ot == nil || nt == nil {
		return
	}
	if !sameShape(ot, nt) {
		c.breaking(FieldTypeChanged, path, pos, oldPos, "%s: type changed from %s to %s", path, ot.Spec(), nt.Spec())
		return
	}
	switch ot.Kind {
	case model.Slice:
		c.typeRef(path+"[]", pos, oldPos, ot.Elem, nt.Elem)
	case model.Map:
		c.typeRef(path+"{}", pos, oldPos, ot.Elem, nt.Elem)
	case model.Named:
		pair := [2]*model.Type{ot.Named, nt.Named}
		if c.seen[pair] {
			return
		}
		c.seen[pair] = true
		if ot.Named.IsEnum() {
			c.enum(path, ot.Named, nt.Named)
		} else {
			c.fields(path, nt.Named.Pos, ot.Named.Fields, nt.Named.Fields)
		}
	}
}

// sameShape reports whether two types have the same kinds, down to their
// named types, and whether named types are both enums or both structs.
func sameShape(ot, nt *model.TypeRef) bool {
	for ot != nil && nt != nil {
		if ot.Kind != nt.Kind {
			return false
		}
		if ot.Kind == model.Named {
			return ot.Named.IsEnum() == nt.Named.IsEnum()
		}
		ot, nt = ot.Elem, nt.Elem
	}
	return ot == nil && nt == nil
}

func (c *comparer) enum(path string, ot, nt *model.Type) {
	newValues := make(map[string]bool)
	for _, v := range nt.Enum {
		newValues[v.Value] = true
	}
	oldValues := make(map[string]bool)
	for _, v := range ot.Enum {
		oldValues[v.Value] = true
		if !newValues[v.Value] {
			c.breaking(EnumValueRemoved, path+"="+v.Value, nt.EnumPos, v.Pos, "%s: enum value %s removed or renamed; consumers generated from the new spec reject it from producers generated from the old spec", path, strconv.Quote(v.Value))
		}
	}
	for _, v := range nt.Enum {
		if !oldValues[v.Value] {
			c.add(Warning, EnumValueAdded, path+"="+v.Value, v.Pos, diag.Pos{}, "%s: enum value %s added; consumers generated from the old spec reject it until they are regenerated, so deploy consumers first", path, strconv.Quote(v.Value))
		}
	}
}

func (c *comparer) consumers(old, new *model.Package, events map[string]*model.Event) {
	byName := make(map[string]*model.Consumer)
	for _, nc := range new.Consumers {
		byName[nc.Name] = nc
	}
	for _, oc := range old.Consumers {
		nc := byName[oc.Name]
		if nc == nil {
			c.add(Breaking, ConsumerRemoved, oc.Name, diag.Pos{}, oc.Pos, "consumer group %s removed; the events it handled are no longer delivered to it", strconv.Quote(oc.Name))
			continue
		}
		handled := make(map[string]bool)
		for _, e := range nc.Handles {
			handled[e.Name] = true
		}
		for i, e := range oc.Handles {
			if !handled[e.Name] && events[e.Name] != nil {
				c.add(Breaking, ConsumerEventDropped, oc.Name+"/"+e.Name, nc.Pos, oc.HandlePos[i], "consumer group %s no longer handles %s", strconv.Quote(oc.Name), e.Name)
			}
		}
	}
}
