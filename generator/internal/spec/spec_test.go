package spec

import (
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator/internal/diag"
)

func parse(t *testing.T, src string) (*File, error) {
	t.Helper()
	c := diag.NewCollector("s.yaml")
	return Parse(c, []byte(src)), c.Err()
}

func TestMergeKeys(t *testing.T) {
	f, err := parse(t, `
x-a: &a {one: string, two: string}
x-b: &b {two: int, three: int}
events:
  E:
    fields:
      zero: bool
      <<: [*a, *b]
      one: uuid
`)
	if err != nil {
		t.Fatal(err)
	}
	// Explicit keys win over merged ones; earlier sources over later ones;
	// merged keys take the place of the merge key.
	var got []string
	for _, fd := range f.Events[0].Fields {
		got = append(got, fd.Name.Value+":"+fd.Type.Value)
	}
	want := []string{"zero:bool", "two:string", "three:int", "one:uuid"}
	if len(got) != len(want) {
		t.Fatalf("fields = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("fields = %v, want %v", got, want)
		}
	}
}

func TestPositions(t *testing.T) {
	f, err := parse(t, "package: p\nevents:\n  E:\n    topic: t\n    fields:\n      a: {type: string}\n")
	if err != nil {
		t.Fatal(err)
	}
	e := f.Events[0]
	for what, got := range map[string]diag.Pos{
		"package": f.Package.Pos, "event": e.Name.Pos, "topic": e.Topic.Pos,
		"field": e.Fields[0].Name.Pos, "type": e.Fields[0].Type.Pos,
	} {
		want := map[string]diag.Pos{
			"package": {Line: 1, Column: 10}, "event": {Line: 3, Column: 3}, "topic": {Line: 4, Column: 12},
			"field": {Line: 6, Column: 7}, "type": {Line: 6, Column: 17},
		}[what]
		if got != want {
			t.Errorf("%s at %v, want %v", what, got, want)
		}
	}
}

func TestAliasesExpandWithinBounds(t *testing.T) {
	f, err := parse(t, "x-t: &t orders\nevents:\n  A: {topic: *t}\n  B: {topic: *t}\n")
	if err != nil || f.Events[1].Topic.Value != "orders" {
		t.Fatalf("aliases: %v, %+v", err, f)
	}
	if n, cyclic, _ := expandedSize(mustRoot(t, "a: &a [1, 2]\nb: [*a, *a]\n"), 100); cyclic || n != 15 {
		t.Errorf("expandedSize = %d, %v; want 15 (aliases count as nodes too)", n, cyclic)
	}
}

func mustRoot(t *testing.T, src string) *yaml.Node {
	t.Helper()
	docs, err := decodeAll([]byte(src), 1)
	if err != nil {
		t.Fatal(err)
	}
	return docs[0].Content[0]
}
