package generator

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// hostileStrings try to break out of comments, string literals, struct tags,
// directives and Markdown in the generated files.
var hostileStrings = []string{
	"*/ func init() { panic(1) } /*",
	"/* unterminated",
	"// line comment",
	"\n//go:generate rm -rf /",
	"\n//go:build ignore",
	"\n//go:linkname x runtime.x",
	"\npackage evil",
	"\nfunc init() { panic(1) }",
	"`backtick` ``double``",
	"\"double quote\" 'single'",
	"%s %d %!v %%",
	"\\ backslash \\n \\x00",
	"NUL:\x00:",
	"BEL:\a: ESC:\x1b[31m:",
	"CR\rLF\nCRLF\r\n",
	"line\u2028separator\u2029paragraph",
	"bidi \u202e\u2066reversed\u2069\u202c",
	"zero\u200bwidth\ufeffbom",
	"non-ASCII: Grüße, 日本語, emoji 🎉",
	"<script>alert(1)</script>",
	"| table | pipe |",
	"--> <!-- html comment",
	"[link](javascript:alert(1))",
	"# heading\n## another",
	"```\ncode fence\n```",
	"{{ .Template }} {{/* */}}",
	"${SHELL} $(rm -rf /)",
	"json:\"-\" `tag:\"x\"`",
	"tab\tseparated\tvalues",
	"\x7f DEL and \u0085 NEL",
	strings.Repeat("long ", 2000),
	"\xff\xfe invalid UTF-8",
}

// topLevelNames parses every Go file of files and returns its top-level
// declared names, sorted, and the package name of each file.
func topLevelNames(t *testing.T, files map[string][]byte) []string {
	t.Helper()
	var names []string
	for _, path := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(path, ".go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, files[path], parser.ParseComments)
		if err != nil {
			t.Fatalf("%s does not parse: %v", path, err)
		}
		names = append(names, "package "+f.Name.Name)
		for _, c := range f.Comments {
			for _, l := range c.List {
				if strings.HasPrefix(l.Text, "//go:") {
					names = append(names, "directive "+l.Text)
				}
			}
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				recv := ""
				if d.Recv != nil {
					recv = types(d.Recv.List[0].Type) + "."
				}
				names = append(names, "func "+recv+d.Name.Name)
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						names = append(names, "type "+s.Name.Name)
					case *ast.ValueSpec:
						for _, n := range s.Names {
							names = append(names, d.Tok.String()+" "+n.Name)
						}
					case *ast.ImportSpec:
						names = append(names, "import "+s.Path.Value)
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

func types(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return "*" + types(e.X)
	case *ast.Ident:
		return e.Name
	}
	return "?"
}

// hostileSpec puts text into every description, enum into an enum's values
// and name into the source and a topic's broker name.
func hostileSpec(text, enum, name string) []byte {
	q, n := strconv.Quote(text), strconv.Quote(name)
	return []byte(`package: hostile
source: ` + n + `
topics:
  t:
    name: ` + n + `
    description: ` + q + `
types:
  Mode:
    description: ` + q + `
    enum: [plain, ` + strconv.Quote(enum) + `]
events:
  Evil:
    topic: t
    description: ` + q + `
    deprecated: ` + q + `
    fields:
      mode: {type: Mode, description: ` + q + `}
      note: {type: string, optional: true, description: ` + q + `}
consumers:
  c:
    description: ` + q + `
    handles: [Evil]
`)
}

// TestHostileStringsInjectNothing puts each hostile string into every
// description and deprecation note of a spec, then into an enum value, then
// into the source and a topic's broker name. Each spec is either refused with
// a positioned error or generates Go that parses and declares exactly the
// names the same spec with plain text declares: nothing injected, nothing
// lost.
func TestHostileStringsInjectNothing(t *testing.T) {
	baseSpec, err := Parse("events.yaml", hostileSpec("plain text", "other", "plain"))
	if err != nil {
		t.Fatalf("baseline spec: %v", err)
	}
	baseFiles, err := Generate(baseSpec)
	if err != nil {
		t.Fatalf("baseline Generate: %v", err)
	}
	want := topLevelNames(t, baseFiles)
	var accepted, refused int
	var cases [][3]string
	for _, text := range hostileStrings {
		cases = append(cases, [3]string{text, "other", "plain"}, [3]string{"plain text", text, "plain"}, [3]string{"plain text", "other", text})
	}
	for i, c := range cases {
		text := c[0] + c[1] + c[2]
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			s, err := Parse("events.yaml", hostileSpec(c[0], c[1], c[2]))
			if err != nil {
				refused++
				var list ErrorList
				if !errors.As(err, &list) || len(list) == 0 || list[0].Pos.Line == 0 {
					t.Fatalf("refused %q without a positioned error: %v", text, err)
				}
				return
			}
			files, err := Generate(s)
			if err != nil {
				t.Fatalf("Generate(%q): %v", text, err)
			}
			// The second enum value names a constant: compare everything
			// else, and that there is exactly one such constant.
			all := topLevelNames(t, files)
			got := withoutEnumValue(all)
			if len(all)-len(got) != 1 {
				t.Fatalf("enum value %q gave %d constants, want 1", c[1], len(all)-len(got))
			}
			if w := withoutEnumValue(want); !slices.Equal(got, w) {
				t.Fatalf("declarations changed for %q:\n got %v\nwant %v", text, got, w)
			}
			accepted++
		})
	}
	t.Logf("%d hostile specs: %d generated inert code, %d refused with a positioned error", len(cases), accepted, refused)
}

func withoutEnumValue(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "const ModePlain") || !strings.HasPrefix(n, "const Mode") {
			out = append(out, n)
		}
	}
	return out
}
