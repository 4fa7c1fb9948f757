package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestQuick is CI's smoke run of the command: -quick on SQLite and the
// in-process broker must run every phase and report a positive, finite
// number for every figure, in the table and in the JSON.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every phase for about 15 s")
	}
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "report.json")
	args := []string{"-quick", "-db", filepath.Join(dir, "bench.db"), "-json", jsonPath}
	noEnv := func(string) string { return "" }
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), args, noEnv, &stdout, &stderr); code != 0 {
		t.Fatalf("eventbench %s: exit code %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, &stdout, &stderr)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode the JSON report: %v", err)
	}
	var names []string
	for _, p := range rep.Phases {
		names = append(names, p.Name)
		if p.Error != "" {
			t.Errorf("phase %s failed: %s", p.Name, p.Error)
		}
		if len(p.Figures) == 0 {
			t.Errorf("phase %s has no figures", p.Name)
		}
		for _, f := range p.Figures {
			if !(f.Value > 0) || math.IsInf(f.Value, 0) {
				t.Errorf("%s = %v %s, want a positive number", f.Name, f.Value, f.Unit)
			}
			if f.Reference != "" && (!(f.Ratio > 0) || math.IsInf(f.Ratio, 0)) {
				t.Errorf("%s: ratio to %s = %v, want a positive number", f.Name, f.Reference, f.Ratio)
			}
			if !strings.Contains(stdout.String(), "\n"+f.Name+" ") {
				t.Errorf("the table has no line for %s", f.Name)
			}
		}
	}
	if !slices.Equal(names, Phases()) {
		t.Errorf("phases %v, want %v", names, Phases())
	}
	// Each of the six measurements, by its main figure.
	for _, name := range []string{
		"publish.c1.publishx", "publish.c4.publishx", "publish.c16.publishx", "publish.c4.batch10",
		"relay.throughput", "relay.raw-publish", "relay.latency.p50", "relay.latency.p99", "relay.producers.with-relay",
		"drain.relay", "drain.bare", "drain.last10", "drain.peak-rss",
		"consumer.inbox", "consumer.hand-inbox", "consumer.raw",
		"forwarder.drain", "generator.spec",
	} {
		if rep.Find(name) == nil {
			t.Errorf("the report has no figure %s", name)
		}
	}
	if !strings.Contains(stdout.String(), "targets: ") {
		t.Errorf("the table has no summary line:\n%s", &stdout)
	}
}

func TestParseConfig(t *testing.T) {
	noEnv := func(string) string { return "" }
	t.Run("defaults", func(t *testing.T) {
		c, err := parseConfig(nil, noEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Size != 256 || c.Rate != 500 || c.Rows != 200_000 || !slices.Equal(c.Clients, []int{1, 4, 16}) || !slices.Equal(c.Phases, Phases()) {
			t.Errorf("defaults: %+v", c)
		}
	})
	t.Run("quick keeps explicit flags", func(t *testing.T) {
		c, err := parseConfig([]string{"-quick", "-rows", "500"}, noEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Rows != 500 || c.Duration != 400*time.Millisecond {
			t.Errorf("rows %d, duration %s; want 500 and the quick duration", c.Rows, c.Duration)
		}
	})
	t.Run("environment", func(t *testing.T) {
		env := map[string]string{EnvDB: "postgres://x@127.0.0.1/db", EnvBroker: "nats://127.0.0.1:4222"}
		c, err := parseConfig([]string{"-broker", "mem://"}, func(k string) string { return env[k] }, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.DB != env[EnvDB] || c.Broker != "mem://" {
			t.Errorf("db %q broker %q: want the environment's database and the flag's broker", c.DB, c.Broker)
		}
	})
	t.Run("phases in order", func(t *testing.T) {
		c, err := parseConfig([]string{"-phases", "generator,publish,publish"}, noEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Phases, []string{"publish", "generator"}) {
			t.Errorf("phases %v", c.Phases)
		}
	})
	t.Run("optional phase", func(t *testing.T) {
		c, err := parseConfig([]string{"-phases", "oversize,consumer", "-oversized-bytes", "8388608"}, noEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Phases, []string{"consumer", "oversize"}) || c.Oversized != 6 || c.OversizedBytes != 8<<20 {
			t.Errorf("phases %v, %d oversized messages of %d bytes; want consumer then oversize, and 6 of 8 MiB", c.Phases, c.Oversized, c.OversizedBytes)
		}
	})
	t.Run("every error at once", func(t *testing.T) {
		_, err := parseConfig([]string{"-clients", "0", "-phases", "nope", "-rate", "0", "-duration", "0s", "-oversized-bytes", "100"}, noEnv, &bytes.Buffer{})
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{"-clients", "-phases", "-rate", "-duration", "-oversized-bytes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	})
}

func TestProgress(t *testing.T) {
	p := newProgress(100)
	for range 10 {
		p.add(7)
	}
	select {
	case <-p.done:
		t.Fatal("done at 70 of 100")
	default:
	}
	p.add(30) // crosses the last three tenths at once
	select {
	case <-p.done:
	default:
		t.Fatal("not done at 100 of 100")
	}
	for i := 1; i <= 10; i++ {
		if p.at(i) < p.at(i-1) {
			t.Errorf("tenth %d reached at %s, before tenth %d at %s", i, p.at(i), i-1, p.at(i-1))
		}
	}
}

func TestQuantile(t *testing.T) {
	var l latencies
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	if got := l.quantile(0.5); got != 51*time.Millisecond && got != 50*time.Millisecond {
		t.Errorf("p50 = %s", got)
	}
	if got := l.quantile(0.99); got != 99*time.Millisecond {
		t.Errorf("p99 = %s", got)
	}
	if got := (latencies{}).quantile(0.5); got != 0 {
		t.Errorf("p50 of nothing = %s", got)
	}
}
