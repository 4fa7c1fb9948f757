package generator_test

import (
	"bytes"
	"flag"
	"go/format"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/generator/internal/diff"
)

var update = flag.Bool("update", false, "rewrite the expected outputs in testdata/")

// TestGolden runs every case in testdata/: a folder with an events.yaml and
// either its generated files under out/ (plus warnings.txt when the spec has
// warnings), or the errors it must produce in stderr.txt. Run
// `go test ./generator/... -update` to rewrite the expectations, and review
// the diff.
func TestGolden(t *testing.T) {
	for _, dir := range goldenCases(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, "events.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			s, err := generator.Parse("events.yaml", data)
			stderrFile := filepath.Join(dir, "stderr.txt")
			if err != nil {
				if _, ok := err.(generator.ErrorList); !ok {
					t.Fatalf("Parse returned %T, want an ErrorList: %v", err, err)
				}
				compareFile(t, stderrFile, []byte(err.Error()+"\n"))
				compareDir(t, filepath.Join(dir, "out"), nil)
				return
			}
			compareFile(t, stderrFile, nil)
			var warnings bytes.Buffer
			for _, w := range s.Warnings() {
				warnings.WriteString(w.Error() + "\n")
			}
			compareFile(t, filepath.Join(dir, "warnings.txt"), warnings.Bytes())

			files, err := generator.Generate(s)
			if err != nil {
				t.Fatal(err)
			}
			compareDir(t, filepath.Join(dir, "out"), files)
			for name, b := range files {
				if !strings.HasSuffix(name, ".go") {
					continue
				}
				if formatted, err := format.Source(b); err != nil || !bytes.Equal(formatted, b) {
					t.Errorf("%s is not gofmt-clean (err %v)", name, err)
				}
			}

			again, err := generator.Generate(s)
			if err != nil {
				t.Fatal(err)
			}
			for name := range files {
				if !bytes.Equal(files[name], again[name]) {
					t.Errorf("%s differs between two runs", name)
				}
			}
		})
	}
}

// goldenCases returns the case folders of testdata/, sorted.
func goldenCases(t testing.TB) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "events.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	slices.Sort(dirs)
	if len(dirs) == 0 {
		t.Fatal("no cases in testdata/")
	}
	return dirs
}

// compareFile compares the file at path with want; a nil want means the
// file must not exist. With -update it writes or removes the file instead.
func compareFile(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if got == nil {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err) && got == nil:
	case os.IsNotExist(err):
		t.Errorf("%s does not exist; got:\n%s\n(run go test -update to create it)", path, got)
	case err != nil:
		t.Fatal(err)
	case got == nil:
		t.Errorf("%s exists but nothing was produced for it", path)
	case !bytes.Equal(want, got):
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff.Unified("want", "got", want, got))
	}
}

// compareDir compares the files of dir with files; nil files means dir
// must not exist. With -update it rewrites dir.
func compareDir(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if files == nil {
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for name, content := range files {
		compareFile(t, filepath.Join(dir, name), content)
	}
	if *update {
		return
	}
	for _, name := range names {
		if _, ok := files[name]; !ok {
			t.Errorf("%s is expected but was not generated", filepath.Join(dir, name))
		}
	}
}

// TestExampleIsFresh checks that examples/generated is exactly what the
// generator makes of examples/events.yaml today.
func TestExampleIsFresh(t *testing.T) {
	s, err := generator.Load(filepath.Join("..", "examples", "events.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if w := s.Warnings(); len(w) > 0 {
		t.Errorf("examples/events.yaml has warnings: %v", w)
	}
	files, err := generator.Generate(s)
	if err != nil {
		t.Fatal(err)
	}
	d, err := generator.Check(filepath.Join("..", "examples", "generated"), files)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) > 0 {
		t.Errorf("examples/generated is stale; run go generate ./examples/...:\n%s", d)
	}
	if !strings.Contains(string(files["events.go"]), "package shopevents") {
		t.Errorf("examples/generated is not package shopevents")
	}
}
