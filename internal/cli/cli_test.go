package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const spec = `package: shopevents
topics:
  orders: {}
types:
  Unused:
    enum: [a]
events:
  OrderPlaced:
    topic: orders
    fields:
      order_id: uuid
`

// run runs the command line in dir and returns its exit code and output.
func run(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	code = Run(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func specDir(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "events.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGenerateWithDefaults(t *testing.T) {
	dir := specDir(t, spec)
	code, stdout, stderr := run(t, dir)
	if code != ExitOK || stdout != "" {
		t.Fatalf("eventgen = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if want := "events.yaml:5:3: warning: type \"Unused\" is not used by any event\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
	for _, name := range []string{"events.go", "types.go", "publisher.go", "handlers.go", "catalog.go", "EVENTS.md"} {
		if _, err := os.Stat(filepath.Join(dir, "shopevents", name)); err != nil {
			t.Error(err)
		}
	}
	// The same through the explicit command and flags, into another dir.
	if code, _, stderr := run(t, dir, "generate", "-f", "events.yaml", "-o", "out/pkg"); code != ExitOK {
		t.Fatalf("eventgen generate = %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "pkg", "events.go")); err != nil {
		t.Error(err)
	}
}

func TestCheck(t *testing.T) {
	dir := specDir(t, spec)
	if code, stdout, stderr := run(t, dir, "check"); code != ExitFailure || !strings.Contains(stdout, "+++ b/shopevents/events.go") ||
		!strings.Contains(stderr, "shopevents is not up to date with events.yaml") {
		t.Errorf("check before generate = %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, _, stderr := run(t, dir, "generate"); code != ExitOK {
		t.Fatalf("generate = %d: %s", code, stderr)
	}
	if code, stdout, _ := run(t, dir, "check"); code != ExitOK || stdout != "" {
		t.Errorf("check after generate = %d, stdout %q", code, stdout)
	}
	path := filepath.Join(dir, "shopevents", "catalog.go")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte("Catalog"), []byte("Katalog"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := run(t, dir, "check", "-o", "shopevents")
	if code != ExitFailure || !strings.Contains(stdout, "--- a/shopevents/catalog.go\n+++ b/shopevents/catalog.go\n") {
		t.Errorf("check after an edit = %d, stdout:\n%s", code, stdout)
	}
}

func TestSpecErrors(t *testing.T) {
	dir := specDir(t, "package: Bad\ntopics: {t: {}}\nevents:\n  E: {topic: x}\n")
	want := "events.yaml:1:10: package \"Bad\" is not a valid Go package name: use lower-case letters and digits, starting with a letter\n" +
		"events.yaml:4:14: event \"E\": topic \"x\" is not defined under topics: (known: \"t\")\n"
	for _, cmd := range []string{"generate", "check", "validate"} {
		code, stdout, stderr := run(t, dir, cmd)
		if code != ExitFailure || stdout != "" || stderr != want {
			t.Errorf("%s = %d, stdout %q, stderr:\n%s\nwant:\n%s", cmd, code, stdout, stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "Bad")); !os.IsNotExist(err) {
		t.Error("generate wrote output for an invalid spec")
	}
	code, _, stderr := run(t, t.TempDir(), "validate", "-f", "missing.yaml")
	if code != ExitFailure || !strings.HasPrefix(stderr, "eventgen: read spec: open missing.yaml:") {
		t.Errorf("missing spec = %d, %q", code, stderr)
	}
}

func TestValidate(t *testing.T) {
	dir := specDir(t, spec)
	code, stdout, stderr := run(t, dir, "validate")
	if code != ExitOK || stdout != "" || !strings.Contains(stderr, "warning:") {
		t.Errorf("validate = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "shopevents")); !os.IsNotExist(err) {
		t.Error("validate wrote files")
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"help"}, ExitOK, "Commands:", ""},
		{[]string{"-h"}, ExitOK, "Commands:", ""},
		{[]string{"--help"}, ExitOK, "Commands:", ""},
		{[]string{"help", "generate"}, ExitOK, "-o directory", ""},
		{[]string{"help", "check"}, ExitOK, "Usage: eventgen check", ""},
		{[]string{"generate", "-h"}, ExitOK, "", "Usage: eventgen generate"},
		{[]string{"help", "nope"}, ExitUsage, "", `unknown command "nope"`},
		{[]string{"help", "a", "b"}, ExitUsage, "", "at most one command"},
		{[]string{"nope"}, ExitUsage, "", `eventgen: unknown command "nope"`},
		{[]string{"generate", "-x"}, ExitUsage, "", "flag provided but not defined: -x"},
		{[]string{"-x"}, ExitUsage, "", "flag provided but not defined: -x"},
		{[]string{"generate", "extra"}, ExitUsage, "", `unexpected argument "extra"`},
		{[]string{"version", "-f", "x"}, ExitUsage, "", "flag provided but not defined: -f"},
		{[]string{"version"}, ExitOK, "eventgen ", ""},
	} {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen %s = %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, stdout, stderr)
		}
	}
}

func TestVersionNamesTheRuntimeAPI(t *testing.T) {
	_, stdout, _ := run(t, t.TempDir(), "version")
	if !strings.HasSuffix(stdout, " (runtime API version 1)\n") {
		t.Errorf("version = %q", stdout)
	}
}
