package bench

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestTracingPhase runs the tracing phase, which runs only when named,
// quickly on SQLite and the in-process broker, and checks that it reports
// every mode of both measurements, each of the others against tracing off.
func TestTracingPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the tracing phase for a few seconds")
	}
	var stdout, stderr bytes.Buffer
	cfg, err := parseConfig([]string{"-quick", "-phases", "tracing", "-db", filepath.Join(t.TempDir(), "bench.db")}, func(string) string { return "" }, &stderr)
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
	for _, m := range []string{"publish", "drain"} {
		for _, mode := range []string{"off", "noop", "sdk"} {
			name := "tracing." + m + "." + mode
			f := rep.Find(name)
			switch {
			case f == nil:
				t.Errorf("no figure %s in\n%s", name, &stdout)
			case !(f.Value > 0):
				t.Errorf("%s = %v", name, f.Value)
			case mode != "off" && (f.Reference != "tracing."+m+".off" || !(f.Ratio > 0) || f.Target == ""):
				t.Errorf("%s: reference %q, ratio %v, target %q; want a ratio to tracing off and a target", name, f.Reference, f.Ratio, f.Target)
			}
		}
	}
}
