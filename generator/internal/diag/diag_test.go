package diag

import (
	"strings"
	"testing"
)

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Pos: Pos{Line: 3, Column: 7}, Msg: "bad"}, "a.yaml:3:7: bad"},
		{Error{File: "a.yaml", Pos: Pos{Line: 3}, Msg: "bad"}, "a.yaml:3: bad"},
		{Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestCollectorSortsAndDeduplicates(t *testing.T) {
	c := NewCollector("f")
	c.Errorf(Pos{Line: 5, Column: 1}, "e")
	c.Errorf(Pos{Line: 2, Column: 9}, "b")
	c.Errorf(Pos{Line: 2, Column: 3}, "a %q", "x")
	c.Errorf(Pos{}, "file")
	c.Errorf(Pos{Line: 2, Column: 9}, "b")
	want := "f: file\nf:2:3: a \"x\"\nf:2:9: b\nf:5:1: e"
	if got := c.Err().Error(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if NewCollector("f").Err() != nil {
		t.Error("an empty collector returned an error")
	}
}

func TestCollectorCap(t *testing.T) {
	c := NewCollector("f")
	for i := range MaxErrors + 5 {
		c.Errorf(Pos{Line: MaxErrors + 5 - i}, "e")
	}
	l := c.List()
	if !c.Full() || len(l) != MaxErrors+1 || l[len(l)-1].Msg != "too many errors: 5 more not shown" || l[0].Pos.Line != 6 {
		t.Errorf("capped list has %d entries, first %v, last %v", len(l), l[0], l[len(l)-1])
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"package", "source", "topics", "types", "events", "consumers"}
	for s, want := range map[string]string{
		"packge": "package", "Events": "events", "topic": "topics", "typs": "types",
		"x": "", "colour": "", "consumer": "consumers", strings.Repeat("a", 100): "",
	} {
		if got := Suggest(s, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", s, got, want)
		}
	}
}
