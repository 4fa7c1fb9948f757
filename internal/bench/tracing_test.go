package bench

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// quickPhase runs phase with -quick on the SQLite file path and the
// in-process broker, and returns the report and its table.
func quickPhase(t *testing.T, phase, path string) (*Report, *bytes.Buffer) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cfg, err := parseConfig([]string{"-quick", "-phases", phase, "-db", path}, func(string) string { return "" }, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Execute(context.Background(), cfg, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, &stderr)
	}
	if err := rep.WriteTable(&stdout); err != nil {
		t.Fatal(err)
	}
	return rep, &stdout
}

// TestTracingPhase runs the tracing phase, which runs only when named,
// quickly on SQLite and the in-process broker, and checks that it reports
// every mode of both measurements, each of the others against tracing off.
func TestTracingPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the tracing phase for a few seconds")
	}
	rep, stdout := quickPhase(t, "tracing", filepath.Join(t.TempDir(), "bench.db"))
	for _, m := range []string{"publish", "drain", "drain_cpu"} {
		for _, mode := range []string{"off", "noop", "sdk"} {
			ref := "tracing." + m + ".off"
			if mode == "off" {
				ref = ""
			}
			f := checkFigure(t, rep, stdout, "tracing."+m+"."+mode, ref)
			if f != nil && ref != "" && (f.Target == "") != (m == "drain_cpu") {
				t.Errorf("%s: target %q; the issue's targets are on publishes and drains, not on CPU time", f.Name, f.Target)
			}
		}
	}
}

// checkFigure checks that the report has a positive figure name, compared
// with ref (or with nothing if ref is empty) by a positive ratio, and
// returns it (nil if it is missing).
func checkFigure(t *testing.T, rep *Report, table fmt.Stringer, name, ref string) *Figure {
	t.Helper()
	f := rep.Find(name)
	switch {
	case f == nil:
		t.Errorf("no figure %s in\n%s", name, table)
	case !(f.Value > 0):
		t.Errorf("%s = %v", name, f.Value)
	case f.Reference != ref || ref != "" && !(f.Ratio > 0):
		t.Errorf("%s: reference %q, ratio %v; want a ratio to %q", name, f.Reference, f.Ratio, ref)
	}
	return f
}
