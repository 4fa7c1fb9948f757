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
	want := []string{"new.yaml:6:14: Tree.root.label: type changed from string to int (was at old.yaml:6:14)"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Compare = %q, want %q", got, want)
	}
}
