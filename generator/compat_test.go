package generator_test

import (
	"os"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/generator"
)

func parse(t *testing.T, name, src string) *generator.Spec {
	t.Helper()
	s, err := generator.Parse(name, []byte(src))
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return s
}

// TestCompareExampleWithItself checks that a spec has no changes against
// itself.
func TestCompareExampleWithItself(t *testing.T) {
	data, err := os.ReadFile("../examples/events.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := parse(t, "events.yaml", string(data))
	if changes := generator.Compare(s, s); len(changes) != 0 {
		t.Errorf("Compare(example, example) = %v", changes)
	}
}

// TestCompareRecursiveTypes checks that recursive types end, and that a
// shared type is reported once per event, at its first path.
func TestCompareRecursiveTypes(t *testing.T) {
	const old = `package: p
topics: {t: {}}
types:
  Node:
    fields:
      label: string
      children: "[]Node"
      next: {type: Node, optional: true}
events:
  Tree:
    topic: t
    fields:
      root: Node
      other: "map[string]Node"
`
	changes := generator.Compare(parse(t, "old.yaml", old), parse(t, "new.yaml", strings.Replace(old, "label: string", "label: int", 1)))
	var got []string
	for _, c := range changes {
		got = append(got, c.String())
	}
	want := []string{"new.yaml:6:14: Tree.root.label: type changed from string to int (was at old.yaml:6:14) [FIELD_TYPE_CHANGED:Tree.root.label]"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Compare = %q, want %q", got, want)
	}
}

// TestRulesDocumented checks that docs/compatibility.md names every rule
// id, and that ParseChangeID accepts exactly those.
func TestRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/compatibility.md")
	if err != nil {
		t.Fatal(err)
	}
	rules := generator.Rules()
	if len(rules) < 18 {
		t.Fatalf("Rules() = %q", rules)
	}
	for _, r := range rules {
		if !strings.Contains(string(doc), "`"+r+"`") {
			t.Errorf("docs/compatibility.md does not name rule %s", r)
		}
		if err := generator.ParseChangeID(r + ":OrderPlaced.note"); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"", "FIELD_REMOVED", "FIELD_REMOVED:", "field_removed:x", "NOPE:x"} {
		if err := generator.ParseChangeID(bad); err == nil {
			t.Errorf("ParseChangeID(%q) = nil", bad)
		}
	}
}

// TestAllow checks that Allow accepts exactly the changes it names.
func TestAllow(t *testing.T) {
	const old = `package: p
topics: {t: {}}
events:
  A:
    topic: t
    fields: {x: string, y: string}
  B:
    topic: t
    fields: {x: string}
`
	changes := generator.Compare(parse(t, "old.yaml", old), parse(t, "new.yaml", strings.NewReplacer("x: string, y: string", "x: int", "  B:\n    topic: t\n    fields: {x: string}\n", "").Replace(old)))
	var ids []string
	for _, c := range changes {
		ids = append(ids, c.ID())
	}
	if want := []string{"EVENT_REMOVED:B", "FIELD_REMOVED:A.y", "FIELD_TYPE_CHANGED:A.x"}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("ids = %q, want %q", ids, want)
	}
	out, unused := generator.Allow(changes, []string{"FIELD_REMOVED:A.y", "FIELD_REMOVED:A.x", "FIELD_REMOVED:A.y"})
	if len(unused) != 1 || unused[0] != "FIELD_REMOVED:A.x" {
		t.Errorf("unused = %q", unused)
	}
	for i, c := range out {
		allowed := c.ID() == "FIELD_REMOVED:A.y"
		if allowed != (c.Level == generator.Warning) || allowed != (c.Allowed == generator.AllowedExplicitly) || changes[i].Level != generator.Breaking {
			t.Errorf("change %s after Allow: level %v, allowed %q", c.ID(), c.Level, c.Allowed)
		}
	}
}
