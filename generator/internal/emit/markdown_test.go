package emit

import (
	"testing"

	"github.com/eventgen/eventgen/generator/internal/model"
)

func TestMarkdownEscaping(t *testing.T) {
	for in, want := range map[string]string{
		"plain":  "`plain`",
		"a|b":    "`a\\|b`",
		"c`d":    "``c`d``",
		"`x":     "`` `x ``",
		"a``b`c": "```a``b`c```",
	} {
		if got := mdCode(in); got != want {
			t.Errorf("mdCode(%q) = %q, want %q", in, got, want)
		}
	}
	if got := mdCell(model.Text("one <b>|\n\ntwo & three")); got != `one &lt;b&gt;\| two &amp; three` {
		t.Errorf("mdCell = %q", got)
	}
	if got := mdText(model.Text("<!-- x -->\nline")); got != "&lt;!-- x --&gt;\nline" {
		t.Errorf("mdText = %q", got)
	}
}

func TestTidyMarkdown(t *testing.T) {
	if got := string(tidyMarkdown([]byte("\n\na  \n\n\n\nb\n\n"))); got != "a\n\nb\n" {
		t.Errorf("tidyMarkdown = %q", got)
	}
}

func TestGroupImports(t *testing.T) {
	src := "package p\n\nimport (\n\t\"context\"\n\t\"github.com/google/uuid\"\n\t\"strconv\"\n)\n\nvar x = 1\n"
	want := "package p\n\nimport (\n\t\"context\"\n\t\"strconv\"\n\n\t\"github.com/google/uuid\"\n)\n\nvar x = 1\n"
	if got := string(groupImports([]byte(src))); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	for _, src := range []string{"package p\n\nimport \"fmt\"\n", "package p\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n"} {
		if got := string(groupImports([]byte(src))); got != src {
			t.Errorf("groupImports changed %q to %q", src, got)
		}
	}
}
