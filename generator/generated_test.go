package generator_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/generator"
)

// TestGeneratedCodeRules checks rules of the generated Go code on every
// golden case and on the example, by reading its syntax tree rather than
// comparing text: struct field spacing and error formats.
func TestGeneratedCodeRules(t *testing.T) {
	paths := []string{filepath.Join("..", "examples", "events.yaml")}
	for _, dir := range goldenCases(t) {
		if strings.HasPrefix(filepath.Base(dir), "ok_") {
			paths = append(paths, filepath.Join(dir, "events.yaml"))
		}
	}
	for _, path := range paths {
		s, err := generator.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		files, err := generator.Generate(s)
		if err != nil {
			t.Fatal(err)
		}
		for name, src := range files {
			if !strings.HasSuffix(name, ".go") {
				continue
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			checkFieldSpacing(t, fset, f)
			checkErrorFormats(t, fset, f)
		}
	}
}

// checkFieldSpacing checks that a blank line separates every documented
// struct field and every documented constant of a const block from its
// neighbours, and that consecutive undocumented ones have none between
// them.
func checkFieldSpacing(t *testing.T, fset *token.FileSet, f *ast.File) {
	t.Helper()
	type decl struct {
		name string
		doc  *ast.CommentGroup
		node ast.Node
	}
	check := func(decls []decl) {
		for i := 1; i < len(decls); i++ {
			prev, cur := decls[i-1], decls[i]
			start := cur.node.Pos()
			if cur.doc != nil {
				start = cur.doc.Pos()
			}
			blank := fset.Position(start).Line-fset.Position(prev.node.End()).Line > 1
			if want := prev.doc != nil || cur.doc != nil; blank != want {
				t.Errorf("%s: blank line before %s is %v, want %v", fset.Position(start), cur.name, blank, want)
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		var decls []decl
		switch n := n.(type) {
		case *ast.StructType:
			for _, fd := range n.Fields.List {
				decls = append(decls, decl{fd.Names[0].Name, fd.Doc, fd})
			}
		case *ast.GenDecl:
			if n.Tok != token.CONST {
				return true
			}
			for _, spec := range n.Specs {
				vs := spec.(*ast.ValueSpec)
				decls = append(decls, decl{vs.Names[0].Name, vs.Doc, vs})
			}
		}
		check(decls)
		return true
	})
}

// checkErrorFormats checks every fmt.Errorf call: its format is a literal,
// no argument is a literal (text known when generating belongs in the
// format), and the format has a verb for every argument, so that a % from
// the spec was escaped.
func checkErrorFormats(t *testing.T, fset *token.FileSet, f *ast.File) {
	t.Helper()
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Errorf" {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "fmt" {
			return true
		}
		pos := fset.Position(call.Pos())
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Errorf("%s: format is not a string literal", pos)
			return true
		}
		format, err := strconv.Unquote(lit.Value)
		if err != nil {
			t.Fatalf("%s: %v", pos, err)
		}
		for _, a := range call.Args[1:] {
			if b, ok := a.(*ast.BasicLit); ok {
				t.Errorf("%s: literal %s passed to the format %q", pos, b.Value, format)
			}
		}
		if verbs := countVerbs(format); verbs != len(call.Args)-1 {
			t.Errorf("%s: format %q has %d verbs for %d arguments", pos, format, verbs, len(call.Args)-1)
		}
		return true
	})
}

// countVerbs counts the verbs of a format that uses single-letter verbs
// without flags, as generated code does; %% is not a verb.
func countVerbs(format string) int {
	n := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		if i < len(format) && format[i] != '%' {
			n++
		}
	}
	return n
}

// TestGeneratedDocs checks the doc comments of declarations with and
// without a description in the spec: a description is the doc, and no
// filler is made up when there is none.
func TestGeneratedDocs(t *testing.T) {
	s, err := generator.Parse("events.yaml", []byte(`
package: docs
topics:
  plain: {}
  described: {description: "Where described things go."}
types:
  Plain:
    fields: {a: string}
  Described:
    description: "Two lines.\nThe second."
    fields: {a: string}
  Level:
    enum: [low, high]
events:
  Happened:
    topic: plain
    fields: {p: Plain, d: Described, l: Level}
  Told:
    topic: described
    description: Something was told.
    fields: {a: string}
consumers:
  listener:
    handles: [Happened, Told]
`))
	if err != nil {
		t.Fatal(err)
	}
	files, err := generator.Generate(s)
	if err != nil {
		t.Fatal(err)
	}
	docs := make(map[string]string)
	for name, src := range files {
		if !strings.HasSuffix(name, ".go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gd.Specs {
				switch spec := spec.(type) {
				case *ast.TypeSpec:
					docs[spec.Name.Name] = gd.Doc.Text()
				case *ast.ValueSpec:
					docs[spec.Names[0].Name] = spec.Doc.Text()
				}
			}
		}
	}
	for name, want := range map[string]string{
		"Plain":           "",
		"Described":       "Two lines.\nThe second.\n",
		"Level":           "Level holds one of the values below. Decoding JSON rejects any other.\n",
		"TopicPlain":      "",
		"TopicDescribed":  "Where described things go.\n",
		"GroupListener":   "",
		"Happened":        "Happened is the event \"Happened\", version 1, published to TopicPlain.\n",
		"Told":            "Told is the event \"Told\", version 1, published to TopicDescribed.\n\nSomething was told.\n",
		"ListenerHandler": "ListenerHandler handles every event that the consumer \"listener\" handles.\n",
	} {
		got, ok := docs[name]
		if !ok {
			t.Errorf("%s is not declared", name)
		} else if got != want {
			t.Errorf("doc of %s = %q, want %q", name, got, want)
		}
	}
}
