package generator_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/generator"
)

const minimalSpec = "package: p\ntopics: {t: {}}\nevents: {E: {topic: t}}\n"

func TestParseRefusesLargeFiles(t *testing.T) {
	data := []byte(minimalSpec + "# " + strings.Repeat("x", generator.MaxSpecSize) + "\n")
	_, err := generator.Parse("big.yaml", data)
	wantErrors(t, err, fmt.Sprintf("big.yaml: file is %d bytes, over the limit of 1048576 bytes (1 MiB)", len(data)))

	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = generator.Load(path)
	wantErrors(t, err, path+": file is 1048577 bytes, over the limit of 1048576 bytes (1 MiB)")
}

func TestParseRefusesDeepNesting(t *testing.T) {
	for _, data := range []string{
		"x-deep: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n" + minimalSpec,
		"x-deep: " + strings.Repeat("{a: ", 20000) + "1" + strings.Repeat("}", 20000) + "\n" + minimalSpec,
	} {
		_, err := generator.Parse("deep.yaml", []byte(data))
		var list generator.ErrorList
		if !errors.As(err, &list) || len(list) != 1 || !strings.Contains(list[0].Msg, "invalid YAML") {
			t.Errorf("Parse(deeply nested) = %v, want one YAML error", err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := generator.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	var list generator.ErrorList
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &list) {
		t.Errorf("Load(missing) = %v, want a wrapped fs.ErrNotExist", err)
	}
}

func TestErrorsNameTheFileAsGiven(t *testing.T) {
	_, err := generator.Parse("specs/shop.yaml", []byte("package: p\nevents: {E: {}}\n"))
	wantErrors(t, err, `specs/shop.yaml:2:10: event "E" needs a topic: one of the ids under topics:`)

	var list generator.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("%T is not an ErrorList", err)
	}
	e := list[0]
	if e.File != "specs/shop.yaml" || e.Pos != (generator.Pos{Line: 2, Column: 10}) {
		t.Errorf("error fields = %+v", *e)
	}
}

func TestHeaderUsesBaseName(t *testing.T) {
	for name, want := range map[string]string{
		"specs/shop.yaml":     "// source: shop.yaml\n",
		`C:\specs\shop.yaml`:  "// source: shop.yaml\n",
		"we ird\n--name.yaml": "// source: we_ird_-_name.yaml\n",
	} {
		s, err := generator.Parse(name, []byte(minimalSpec))
		if err != nil {
			t.Fatal(err)
		}
		files, err := generator.Generate(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(files["events.go"]); !strings.Contains(got, "\n"+want) {
			t.Errorf("Parse(%q): events.go lacks %q", name, want)
		}
	}
}

func TestGenerateNilSpec(t *testing.T) {
	if _, err := generator.Generate(nil); err == nil {
		t.Error("Generate(nil) succeeded")
	}
}

// wantErrors checks that err is an ErrorList with exactly the given lines.
func wantErrors(t *testing.T, err error, lines ...string) {
	t.Helper()
	var list generator.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %v (%T) is not an ErrorList", err, err)
	}
	if got, want := err.Error(), strings.Join(lines, "\n"); got != want {
		t.Errorf("errors:\n%s\nwant:\n%s", got, want)
	}
}

// TestLargeSpecs feeds specs near the size limit whose naive handling would
// be quadratic: long chains of types (recursion and validation analysis)
// and thousands of errors (suggestions). They must be handled in one pass.
func TestLargeSpecs(t *testing.T) {
	if testing.Short() {
		t.Skip("large inputs")
	}
	const n = 20000
	var chain strings.Builder
	chain.WriteString("package: p\ntopics: {t: {}}\nevents: {E: {topic: t, fields: {x: T0}}}\ntypes:\n")
	for i := range n {
		// Each type holds the next; the last holds the first, closing a
		// cycle through all of them.
		fmt.Fprintf(&chain, "  T%d: {fields: {a: T%d}}\n", i, (i+1)%n)
	}
	_, err := generator.Parse("chain.yaml", []byte(chain.String()))
	wantErrors(t, err, `chain.yaml:5:3: type "T0" contains itself without indirection (T0.a -> T1.a -> `+
		strings.Join(func() []string {
			var p []string
			for i := 2; i < n; i++ {
				p = append(p, fmt.Sprintf("T%d.a", i))
			}
			return p
		}(), " -> ")+` -> T0); make one of these fields optional, a list or a map`)

	var unknown strings.Builder
	unknown.WriteString("package: p\ntopics: {t: {}}\ntypes:\n")
	for i := range 2000 {
		fmt.Fprintf(&unknown, "  Type%d: {fields: {a: Typo%d}}\n", i, i)
	}
	unknown.WriteString("events: {E: {topic: t}}\n")
	_, err = generator.Parse("unknown.yaml", []byte(unknown.String()))
	var list generator.ErrorList
	if !errors.As(err, &list) || len(list) != 101 || list[100].Msg != "too many errors: 1900 more not shown" {
		t.Errorf("2000 unknown types gave %d errors, ending %v", len(list), list[len(list)-1])
	}
}

func TestTooManyEntries(t *testing.T) {
	var b strings.Builder
	b.WriteString("package: p\ntopics: {t: {}}\nevents:\n  E:\n    topic: t\n    fields:\n")
	for i := range 50001 {
		fmt.Fprintf(&b, "      f%d: int\n", i)
	}
	_, err := generator.Parse("big.yaml", []byte(b.String()))
	wantErrors(t, err, "big.yaml: spec declares 50003 topics, types, enum values, events, fields and consumers, over the limit of 50000; split it into several packages")
}
