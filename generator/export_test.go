package generator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/testservices"
)

// exportSpecs returns the specs whose exports are checked: the example and
// every valid golden case.
func exportSpecs(t *testing.T) []string {
	t.Helper()
	paths := []string{filepath.Join("..", "examples", "events.yaml")}
	for _, dir := range goldenCases(t) {
		if strings.HasPrefix(filepath.Base(dir), "ok_") {
			paths = append(paths, filepath.Join(dir, "events.yaml"))
		}
	}
	return paths
}

// exportAsyncAPI loads the spec at path and exports its AsyncAPI document.
func exportAsyncAPI(t *testing.T, path string, opts generator.AsyncAPIOptions) []byte {
	t.Helper()
	s, err := generator.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := generator.AsyncAPI(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// unmarshal decodes JSON as the validator wants it, numbers as json.Number.
func unmarshal(t *testing.T, data []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// asyncAPISchema compiles the official AsyncAPI 3.0.0 JSON Schema.
func asyncAPISchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "asyncapi", "asyncapi-3.0.0.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mem:///asyncapi-3.0.0.schema.json", unmarshal(t, data)); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mem:///asyncapi-3.0.0.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// TestAsyncAPIValid exports every spec as AsyncAPI, in YAML and JSON, and
// checks that the document validates against the official AsyncAPI 3.0.0
// JSON Schema, that both formats hold the same document, that every local
// $ref points at something, and that the output is the same on every run.
func TestAsyncAPIValid(t *testing.T) {
	sch := asyncAPISchema(t)
	// The meta-schema does reject what is not AsyncAPI 3.0.0.
	for _, bad := range []string{
		`{"asyncapi":"3.0.0"}`,
		`{"asyncapi":"2.6.0","info":{"title":"t","version":"1"}}`,
		`{"asyncapi":"3.0.0","info":{"title":"t","version":"1"},"operations":{"o":{"action":"publish","channel":{"$ref":"#/channels/c"}}}}`,
	} {
		if err := sch.Validate(unmarshal(t, []byte(bad))); err == nil {
			t.Fatalf("the AsyncAPI schema accepts %s", bad)
		}
	}
	for _, path := range exportSpecs(t) {
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			doc := exportAsyncAPI(t, path, generator.AsyncAPIOptions{JSON: true})
			inst := unmarshal(t, doc)
			if err := sch.Validate(inst); err != nil {
				t.Fatalf("the AsyncAPI document is not valid AsyncAPI 3.0.0: %v", err)
			}
			checkRefs(t, inst, inst, "#")

			y := exportAsyncAPI(t, path, generator.AsyncAPIOptions{})
			var fromYAML any
			if err := yaml.Unmarshal(y, &fromYAML); err != nil {
				t.Fatalf("the YAML document does not parse: %v", err)
			}
			// Through JSON and back, so that numbers are float64 on both sides.
			j, err := json.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(j, &fromYAML); err != nil {
				t.Fatal(err)
			}
			j1, _ := json.Marshal(fromYAML)
			var fromJSON any
			if err := json.Unmarshal(doc, &fromJSON); err != nil {
				t.Fatal(err)
			}
			j2, _ := json.Marshal(fromJSON)
			if !bytes.Equal(j1, j2) {
				t.Errorf("the YAML and JSON documents differ:\nYAML as JSON: %s\nJSON:         %s", j1, j2)
			}
			for range 3 {
				if again := exportAsyncAPI(t, path, generator.AsyncAPIOptions{}); !bytes.Equal(again, y) {
					t.Fatal("a second export differs")
				}
			}
		})
	}
}

// checkRefs checks that every local $ref in v resolves in root.
func checkRefs(t *testing.T, root, v any, at string) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		if r, ok := v["$ref"].(string); ok {
			if !strings.HasPrefix(r, "#/") {
				t.Errorf("%s: $ref %q is not local", at, r)
			} else if resolve(root, r) == nil {
				t.Errorf("%s: $ref %q points at nothing", at, r)
			}
		}
		for k, e := range v {
			checkRefs(t, root, e, at+"/"+k)
		}
	case []any:
		for _, e := range v {
			checkRefs(t, root, e, at+"/[]")
		}
	}
}

// resolve follows a JSON pointer like #/components/schemas/Money. The
// exported names hold no / or ~, so nothing is escaped.
func resolve(root any, ref string) any {
	v := root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

// TestAsyncAPIExample keeps examples/asyncapi.yaml, the AsyncAPI document of
// the example spec that the docs show, up to date. Run the tests with
// -update to rewrite it.
func TestAsyncAPIExample(t *testing.T) {
	doc := exportAsyncAPI(t, filepath.Join("..", "examples", "events.yaml"), generator.AsyncAPIOptions{Version: "1.0.0"})
	compareFile(t, filepath.Join("..", "examples", "asyncapi.yaml"), doc)
}

// jsonSchemas compiles the JSON Schemas exported from the spec at path,
// each as draft 2020-12 (the compiler validates them against the
// meta-schema), keyed by event wire name.
func jsonSchemas(t *testing.T, path string) map[string]*jsonschema.Schema {
	t.Helper()
	files := exportJSONSchemas(t, path)
	out := make(map[string]*jsonschema.Schema)
	for name, data := range files {
		c := jsonschema.NewCompiler()
		url := "mem:///" + name
		doc := unmarshal(t, data)
		if m, _ := doc.(map[string]any); m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Fatalf("%s: $schema is %v", name, m["$schema"])
		}
		if err := c.AddResource(url, doc); err != nil {
			t.Fatal(err)
		}
		sch, err := c.Compile(url)
		if err != nil {
			t.Fatalf("%s is not a valid JSON Schema: %v", name, err)
		}
		out[strings.TrimSuffix(name, ".schema.json")] = sch
	}
	return out
}

// exportJSONSchemas loads the spec at path and exports its JSON Schemas.
func exportJSONSchemas(t *testing.T, path string) map[string][]byte {
	t.Helper()
	s, err := generator.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	files, err := generator.JSONSchemas(s)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestJSONSchemasValid checks that the JSON Schemas of every spec are valid
// draft 2020-12 schemas, one per event, and the same on every run.
func TestJSONSchemasValid(t *testing.T) {
	for _, path := range exportSpecs(t) {
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			schemas := jsonSchemas(t, path)
			files, again := exportJSONSchemas(t, path), exportJSONSchemas(t, path)
			if len(schemas) == 0 || len(files) != len(again) {
				t.Fatalf("%d schemas", len(schemas))
			}
			for name, data := range files {
				if !bytes.Equal(data, again[name]) {
					t.Errorf("%s differs between runs", name)
				}
			}
		})
	}
}

// TestExportNameCollisions checks the two specs that cannot be exported:
// AsyncAPI operation ids spelt alike, and JSON Schema file names that differ
// only in case. Both are errors naming both sides.
func TestExportNameCollisions(t *testing.T) {
	ops := parse(t, "ops.yaml", `package: p
topics: {c: {}, b.c: {}}
events:
  E1: {topic: c, fields: {x: string}}
  E2: {topic: b.c, fields: {x: string}}
consumers:
  a.b: {handles: [E1]}
  a: {handles: [E2]}
`)
	_, err := generator.AsyncAPI(ops, generator.AsyncAPIOptions{})
	if want := `asyncapi: ops.yaml: AsyncAPI operation id "receive.a.b.c" names both consumer group "a.b" on topic "c" and consumer group "a" on topic "b.c"; rename a consumer group or a topic`; err == nil || err.Error() != want {
		t.Errorf("AsyncAPI = %v, want %s", err, want)
	}
	if _, err := generator.JSONSchemas(ops); err != nil {
		t.Errorf("JSONSchemas = %v", err)
	}
	cases := parse(t, "case.yaml", `package: p
topics: {t: {}}
events:
  order.placed: {topic: t, go_name: A, fields: {x: string}}
  Order.Placed: {topic: t, go_name: B, fields: {x: string}}
`)
	_, err = generator.JSONSchemas(cases)
	if want := `jsonschema: case.yaml: events "order.placed" and "Order.Placed" would be written to files whose names differ only in case, which collide on macOS and Windows; rename one`; err == nil || err.Error() != want {
		t.Errorf("JSONSchemas = %v, want %s", err, want)
	}
}

// TestAsyncAPIOfficialParser runs @asyncapi/parser, the parser of
// AsyncAPI's own tools, on the AsyncAPI export of every spec, in YAML and
// JSON, and fails on any error or warning it reports. It needs Node.js and
// the parser installed with npm ci (testdata/asyncapi/parser/README.md);
// without them it is skipped, or fails under EVENTGEN_TEST_REQUIRE_SERVICES=1
// (as in CI, which installs them).
func TestAsyncAPIOfficialParser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Node.js")
	}
	missing := t.Skip
	if testservices.RequireServices() {
		missing = t.Fatal
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("Node.js is not installed")
	}
	dir := filepath.Join("testdata", "asyncapi", "parser")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@asyncapi", "parser")); err != nil {
		missing("@asyncapi/parser is not installed: run npm ci --prefix generator/testdata/asyncapi/parser")
	}
	out := t.TempDir()
	args := []string{"validate.mjs", "--strict"}
	for i, path := range exportSpecs(t) {
		for _, ext := range []string{"yaml", "json"} {
			file := filepath.Join(out, fmt.Sprintf("%d-%s.%s", i, filepath.Base(filepath.Dir(path)), ext))
			if err := os.WriteFile(file, exportAsyncAPI(t, path, generator.AsyncAPIOptions{JSON: ext == "json"}), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, file)
		}
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	report, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("@asyncapi/parser rejects an export: %v\n%s", err, report)
	}
	t.Logf("%d documents parsed:\n%s", len(args)-2, report)
}
