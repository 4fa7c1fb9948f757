package gencli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/internal/cli"
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
	if code != cli.ExitOK || stdout != "" {
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
	if code, _, stderr := run(t, dir, "generate", "-f", "events.yaml", "-o", "out/pkg"); code != cli.ExitOK {
		t.Fatalf("eventgen generate = %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "pkg", "events.go")); err != nil {
		t.Error(err)
	}
}

func TestCheck(t *testing.T) {
	dir := specDir(t, spec)
	if code, stdout, stderr := run(t, dir, "check"); code != cli.ExitFailure || !strings.Contains(stdout, "+++ b/shopevents/events.go") ||
		!strings.Contains(stderr, "shopevents is not up to date with events.yaml") {
		t.Errorf("check before generate = %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, _, stderr := run(t, dir, "generate"); code != cli.ExitOK {
		t.Fatalf("generate = %d: %s", code, stderr)
	}
	if code, stdout, _ := run(t, dir, "check"); code != cli.ExitOK || stdout != "" {
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
	if code != cli.ExitFailure || !strings.Contains(stdout, "--- a/shopevents/catalog.go\n+++ b/shopevents/catalog.go\n") {
		t.Errorf("check after an edit = %d, stdout:\n%s", code, stdout)
	}
}

func TestSpecErrors(t *testing.T) {
	dir := specDir(t, "package: Bad\ntopics: {t: {}}\nevents:\n  E: {topic: x}\n")
	want := "events.yaml:1:10: package \"Bad\" is not a valid Go package name: use lower-case letters and digits, starting with a letter\n" +
		"events.yaml:4:14: event \"E\": topic \"x\" is not defined under topics: (known: \"t\")\n"
	for _, cmd := range []string{"generate", "check", "validate"} {
		code, stdout, stderr := run(t, dir, cmd)
		if code != cli.ExitFailure || stdout != "" || stderr != want {
			t.Errorf("%s = %d, stdout %q, stderr:\n%s\nwant:\n%s", cmd, code, stdout, stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "Bad")); !os.IsNotExist(err) {
		t.Error("generate wrote output for an invalid spec")
	}
	code, _, stderr := run(t, t.TempDir(), "validate", "-f", "missing.yaml")
	if code != cli.ExitFailure || !strings.HasPrefix(stderr, "eventgen: read spec: open missing.yaml:") {
		t.Errorf("missing spec = %d, %q", code, stderr)
	}
}

func TestValidate(t *testing.T) {
	dir := specDir(t, spec)
	code, stdout, stderr := run(t, dir, "validate")
	if code != cli.ExitOK || stdout != "" || !strings.Contains(stderr, "warning:") {
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
		{[]string{"help"}, cli.ExitOK, "Commands:", ""},
		{[]string{"-h"}, cli.ExitOK, "Commands:", ""},
		{[]string{"--help"}, cli.ExitOK, "Commands:", ""},
		{[]string{"help", "generate"}, cli.ExitOK, "-o directory", ""},
		{[]string{"help", "check"}, cli.ExitOK, "Usage: eventgen check", ""},
		{[]string{"generate", "-h"}, cli.ExitOK, "", "Usage: eventgen generate"},
		{[]string{"help", "nope"}, cli.ExitUsage, "", `unknown command "nope"`},
		{[]string{"help", "a", "b"}, cli.ExitUsage, "", "at most one command"},
		{[]string{"nope"}, cli.ExitUsage, "", `eventgen: unknown command "nope"`},
		{[]string{"generate", "-x"}, cli.ExitUsage, "", "flag provided but not defined: -x"},
		{[]string{"-x"}, cli.ExitUsage, "", "flag provided but not defined: -x"},
		{[]string{"generate", "extra"}, cli.ExitUsage, "", `unexpected argument "extra"`},
		{[]string{"version", "-f", "x"}, cli.ExitUsage, "", "flag provided but not defined: -f"},
		{[]string{"version"}, cli.ExitOK, "eventgen ", ""},
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

// TestMovedCommands checks that the commands which moved to eventgen-ops
// say so, naming the new command, with the usage exit code.
func TestMovedCommands(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"sql", "-dialect", "postgres"},
		{"outbox", "failed", "-db", "shop.db"},
		{"inbox"},
		{"help", "inbox"},
	} {
		name := args[0]
		if name == "help" {
			name = args[1]
		}
		code, stdout, stderr := run(t, dir, args...)
		if code != cli.ExitUsage || stdout != "" || !strings.Contains(stderr, `eventgen `+name+`: this command moved to eventgen-ops: run "eventgen-ops `+name+`"`) {
			t.Errorf("eventgen %s = %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	if _, stdout, _ := run(t, dir, "help"); strings.Contains(stdout, "\tsql ") || strings.Contains(stdout, "\toutbox ") {
		t.Errorf("help lists a moved command:\n%s", stdout)
	}
}

// TestCommandLinksOnlyTheGenerator checks that the eventgen command, which
// go:generate and go tool build, links no database driver, no Bun, no
// Watermill and no broker client: those are eventgen-ops's.
func TestCommandLinksOnlyTheGenerator(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/eventgen/eventgen/cmd/eventgen").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/uptrace/bun",
			"github.com/ThreeDotsLabs/watermill",
			"github.com/jackc/pgx",
			"github.com/go-sql-driver/mysql",
			"modernc.org/sqlite",
			"github.com/rabbitmq",
			"github.com/nats-io",
			"github.com/redis",
		} {
			if strings.Contains(pkg, banned) {
				t.Errorf("cmd/eventgen depends on %s", pkg)
			}
		}
	}
}
