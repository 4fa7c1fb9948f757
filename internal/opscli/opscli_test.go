package opscli

import (
	"strings"
	"testing"

	"github.com/eventgen/eventgen/internal/cli"
)

// run runs the command line in dir and returns its exit code and output.
func run(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runIn(t, dir, "", args...)
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"help"}, cli.ExitOK, "\tsql     print the DDL of the outbox and inbox tables\n", ""},
		{[]string{"-h"}, cli.ExitOK, "eventgen-ops <command> [flags]", ""},
		{[]string{}, cli.ExitUsage, "", "eventgen-ops: name a command"},
		{[]string{"-db", "x"}, cli.ExitUsage, "", `eventgen-ops: unknown flag "-db" before the command`},
		{[]string{"generate"}, cli.ExitUsage, "", `eventgen-ops: unknown command "generate"`},
		{[]string{"version"}, cli.ExitOK, "eventgen-ops ", ""},
		{[]string{"version", "-x"}, cli.ExitUsage, "", "flag provided but not defined: -x"},
	} {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, stdout, stderr)
		}
	}
}
