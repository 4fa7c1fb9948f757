package generator_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoldenOutputsCompile builds and vets the generated package of every
// golden case against the real runtime in this module. The packages live
// in testdata/, which go ./... patterns skip, so they are named one by one.
func TestGoldenOutputsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goTool := goCommand(t)
	var pkgs []string
	for _, dir := range goldenCases(t) {
		if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
			pkgs = append(pkgs, "./"+filepath.ToSlash(filepath.Join(dir, "out")))
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("no golden outputs to compile")
	}
	cmd := exec.Command(goTool, append([]string{"vet"}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go vet %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
}

// TestRuntimeDependencies checks that the runtime, which every service
// imports, does not pull in the generator or its dependencies.
func TestRuntimeDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	cmd := exec.Command(goCommand(t), "list", "-deps", "../runtime/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/eventgen/eventgen/generator",
			"github.com/eventgen/eventgen/templates",
			"github.com/eventgen/eventgen/internal/cli",
			"github.com/dave/jennifer",
			"gopkg.in/yaml.v3",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("runtime depends on %s", dep)
			}
		}
	}
}

// goCommand returns the go command of the toolchain running the test.
func goCommand(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed: %v", err)
	}
	return path
}
