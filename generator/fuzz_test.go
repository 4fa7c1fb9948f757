package generator_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator"
)

// FuzzLoad checks that no input makes the generator panic, and that every
// spec it accepts generates files (so the generated Go code formats). The
// seed corpus is every spec in testdata/ and the example, and runs with
// every go test. Every accepted spec is also compared with itself and with
// the example.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*", "events.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, filepath.Join("..", "examples", "events.yaml"))
	var example *generator.Spec
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		if strings.HasPrefix(path, "..") {
			if example, err = generator.Parse("example.yaml", data); err != nil {
				f.Fatal(err)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := generator.Parse("events.yaml", data)
		if err != nil {
			if s != nil {
				t.Fatal("Parse returned a Spec and an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "events.yaml:") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if _, err := generator.Generate(s); err != nil {
			t.Fatalf("Generate failed on a valid spec: %v\nspec:\n%s", err, data)
		}
		// Comparing never panics, and a spec has no changes against itself.
		if changes := generator.Compare(s, s); len(changes) > 0 {
			t.Fatalf("Compare(s, s) = %v\nspec:\n%s", changes, data)
		}
		generator.Compare(example, s)
		generator.Compare(s, example)
		// The exports never panic, and write valid JSON and YAML; their only
		// errors are names that collide in their formats.
		for _, asJSON := range []bool{false, true} {
			doc, err := generator.AsyncAPI(s, generator.AsyncAPIOptions{JSON: asJSON})
			switch {
			case err != nil && !strings.Contains(err.Error(), "names both"):
				t.Fatalf("AsyncAPI failed on a valid spec: %v\nspec:\n%s", err, data)
			case err == nil && asJSON && !json.Valid(doc):
				t.Fatalf("AsyncAPI wrote invalid JSON:\n%s", doc)
			case err == nil && !asJSON:
				var v any
				if err := yaml.Unmarshal(doc, &v); err != nil {
					t.Fatalf("AsyncAPI wrote YAML that does not parse: %v\n%s", err, doc)
				}
			}
		}
		files, err := generator.JSONSchemas(s)
		if err != nil && !strings.Contains(err.Error(), "differ only in case") {
			t.Fatalf("JSONSchemas failed on a valid spec: %v\nspec:\n%s", err, data)
		}
		for name, b := range files {
			if !json.Valid(b) {
				t.Fatalf("%s is not valid JSON:\n%s", name, b)
			}
		}
	})
}

// BenchmarkGenerate1000Events parses, validates and generates a spec of
// 1,000 events with shared types, enums, keys and two consumers.
func BenchmarkGenerate1000Events(b *testing.B) {
	data := bigSpec(1000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := generator.Parse("events.yaml", data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := generator.Generate(s); err != nil {
			b.Fatal(err)
		}
	}
}

// bigSpec returns a spec of n events spread over ten topics.
func bigSpec(n int) []byte {
	var b strings.Builder
	b.WriteString("package: bigevents\nsource: big\ntopics:\n")
	for i := range 10 {
		fmt.Fprintf(&b, "  topic%d:\n    name: big.topic%d\n    description: Topic number %d.\n", i, i, i)
	}
	b.WriteString(`types:
  Money:
    fields:
      amount: int64
      currency: string
  Line:
    fields:
      sku: string
      quantity: int32
      price: Money
  Status:
    enum: [new, active, done, failed]
events:
`)
	for i := range n {
		fmt.Fprintf(&b, `  domain%d.thing-happened:
    topic: topic%d
    version: %d
    description: Thing number %d happened.
    key: id
    fields:
      id: uuid
      status: Status
      total: Money
      lines: "[]Line"
      note: {type: string, optional: true, description: A note.}
      labels: "map[string]string"
      at: time
      count: int64
`, i, i%10, 1+i%3, i)
	}
	b.WriteString("consumers:\n  evens:\n    handles: [")
	for i := 0; i < n; i += 2 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "domain%d.thing-happened", i)
	}
	b.WriteString("]\n  all:\n    handles: [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "domain%d.thing-happened", i)
	}
	b.WriteString("]\n")
	return []byte(b.String())
}

// FuzzCompare checks that comparing any two specs never panics, that every
// change it reports names its rule and a position in the new spec or the
// old one, and that a spec has no changes against itself. Its seeds are
// pairs of the specs in testdata/ and the example.
func FuzzCompare(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*", "events.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, filepath.Join("..", "examples", "events.yaml"))
	var specs [][]byte
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		specs = append(specs, data)
	}
	for i := range specs {
		f.Add(specs[i], specs[(i+1)%len(specs)])
	}
	f.Fuzz(func(t *testing.T, oldData, newData []byte) {
		old, err := generator.Parse("old.yaml", oldData)
		if err != nil {
			return
		}
		s, err := generator.Parse("new.yaml", newData)
		if err != nil {
			return
		}
		for _, c := range generator.Compare(old, s) {
			if c.Rule == "" || c.Subject == "" || c.String() == "" {
				t.Fatalf("change without a rule, subject or text: %#v", c)
			}
			if err := generator.ParseChangeID(c.ID()); err != nil {
				t.Fatalf("change id %q does not parse: %v", c.ID(), err)
			}
			if c.At.Pos.Line == 0 && c.Old.Pos.Line == 0 {
				t.Fatalf("change %s has a place in neither spec", c.ID())
			}
		}
		if changes := generator.Compare(s, s); len(changes) > 0 {
			t.Fatalf("Compare(s, s) = %v", changes)
		}
	})
}
