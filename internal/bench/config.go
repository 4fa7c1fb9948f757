package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// Phases returns the names of the measurements that run by default, in
// the order they run.
func Phases() []string {
	return []string{"publish", "relay", "drain", "consumer", "forwarder", "generator"}
}

// optionalPhases returns the phases that run only when -phases names them,
// after the others: the oversize phase needs a broker outside the process
// and stores hundreds of MiB in it; the tracing and ordering phases
// measure one feature's cost, not the outbox against its references.
func optionalPhases() []string { return []string{"oversize", "tracing", "ordering"} }

// allPhases returns every phase's name in the order they run.
func allPhases() []string { return append(Phases(), optionalPhases()...) }

// Environment variables that stand in for the -db and -broker flags.
const (
	EnvDB     = "EVENTBENCH_DB"
	EnvBroker = "EVENTBENCH_BROKER"
)

// Config is one run's settings, from flags and the environment.
type Config struct {
	// DB is a PostgreSQL URL, a MySQL DSN or an SQLite file path; empty
	// means a new SQLite file in a temporary directory.
	DB string
	// Broker is a runtime/transport URL; empty means mem://.
	Broker string

	Duration time.Duration // of each throughput measurement
	Warmup   time.Duration // before each, not counted
	// Rounds splits each throughput comparison into interleaved slices.
	Rounds  int
	Clients []int // concurrent producers in the publish phase
	Size    int   // approximate JSON payload bytes of each event
	Rate    int   // offered events/s of the latency measurement
	Rows    int   // backlog of the drain phase
	// RelayRows is the committed backlog the relay and raw Watermill
	// publishing race on in the relay phase.
	RelayRows int
	// Messages is how many messages each consumer variant handles at most.
	Messages int
	// SpecEvents is the size of the generator's spec.
	SpecEvents int
	// Oversized is how many messages over the consumer's MaxMessageBytes
	// the oversize phase publishes, each of OversizedBytes.
	Oversized      int
	OversizedBytes int
	// DrainTimeout bounds each drain and each wait for stragglers.
	DrainTimeout time.Duration
	// MaxTime bounds the whole run.
	MaxTime time.Duration
	Phases  []string
	JSON    string // file to write the report to, "" for none
	// CPUProfile is a file for a CPU profile of the whole run, "" for none.
	CPUProfile string
	Quick      bool
	Verbose    bool
}

// applyQuick sets what -quick changes, unless given as flags: small counts and short
// measurements, for CI's smoke run.
func (c *Config) applyQuick(set map[string]bool) {
	def := func(name string, apply func()) {
		if !set[name] {
			apply()
		}
	}
	def("duration", func() { c.Duration = 400 * time.Millisecond })
	def("warmup", func() { c.Warmup = 100 * time.Millisecond })
	def("rounds", func() { c.Rounds = 1 })
	def("rate", func() { c.Rate = 200 })
	def("rows", func() { c.Rows = 2000 })
	def("relay-rows", func() { c.RelayRows = 1000 })
	def("messages", func() { c.Messages = 300 })
	def("drain-timeout", func() { c.DrainTimeout = 30 * time.Second })
	def("max-time", func() { c.MaxTime = 2 * time.Minute })
}

// parseConfig reads args and the environment (through getenv). It returns
// flag.ErrHelp after printing the usage for -h.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("eventbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DB, "db", getenv(EnvDB), "database: postgres://..., a MySQL DSN such as user@tcp(host:3306)/db, or an SQLite file path (default: a new SQLite file in a temporary directory; env "+EnvDB+")")
	fs.StringVar(&c.Broker, "broker", getenv(EnvBroker), "broker URL: mem://, amqp://, nats://, redis:// (default mem://; env "+EnvBroker+")")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "length of each throughput measurement")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "warm-up before each measurement, not counted")
	fs.IntVar(&c.Rounds, "rounds", 3, "rounds that interleave the variants of each throughput comparison (each gets duration/rounds per round)")
	clients := fs.String("clients", "1,4,16", "concurrent producers of the publish phase, comma-separated")
	fs.IntVar(&c.Size, "size", 256, "JSON payload of each event, in bytes (events are padded to it; the unpadded event is about 140 bytes)")
	fs.IntVar(&c.Rate, "rate", 500, "offered load of the commit-to-publish latency measurement, events/s")
	fs.IntVar(&c.Rows, "rows", 200_000, "backlog drained by the relay, the bare SKIP LOCKED loop and the forwarder")
	fs.IntVar(&c.RelayRows, "relay-rows", 20_000, "committed events relayed, and published raw, in the relay phase")
	fs.IntVar(&c.Messages, "messages", 10_000, "messages handled by each consumer variant, at most")
	fs.IntVar(&c.SpecEvents, "spec-events", 1000, "events in the generator phase's spec")
	fs.IntVar(&c.Oversized, "oversized", 6, "messages over the consumer's MaxMessageBytes in the oversize phase")
	fs.IntVar(&c.OversizedBytes, "oversized-bytes", 64<<20, "payload of each of those messages, in bytes (more than the default MaxMessageBytes, 4 MiB)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 3*time.Minute, "bound on each drain and on each wait for stragglers")
	fs.DurationVar(&c.MaxTime, "max-time", 30*time.Minute, "bound on the whole run")
	phases := fs.String("phases", strings.Join(Phases(), ","), "phases to run, comma-separated: "+strings.Join(Phases(), ", ")+
		"; and, only when named, oversize (peak memory with messages over MaxMessageBytes; needs -broker other than mem://), tracing (PublishX and the drain with OpenTelemetry tracing and metrics off, through the no-op globals, and with an SDK) and ordering (per-key ordering's cost: the Consumer on 1,000 keys against events without a key, PublishX with a key against without, 16 clients on one key)")
	fs.StringVar(&c.JSON, "json", "", "also write the report as JSON to this file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.BoolVar(&c.Quick, "quick", false, "smoke run: small counts and short measurements (CI)")
	fs.BoolVar(&c.Verbose, "v", false, "log the runtime's info messages")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: eventbench [flags]\n\n"+
			"Measures eventgen's outbox and inbox on one database and broker against raw\n"+
			"references, prints a table of ratios and targets, and optionally writes JSON.\n"+
			"It creates tables named eventbench_<run>_* and topics eventbench_<run>.*, and\n"+
			"drops them at the end.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Quick {
		c.applyQuick(set)
	}
	var errs []error
	var err error
	if c.Clients, err = parseInts(*clients); err != nil {
		errs = append(errs, fmt.Errorf("-clients: %w", err))
	}
	if c.Phases, err = parsePhases(*phases); err != nil {
		errs = append(errs, fmt.Errorf("-phases: %w", err))
	}
	for _, p := range []struct {
		name string
		v    int
		min  int
	}{{"size", c.Size, 1}, {"rate", c.Rate, 1}, {"rows", c.Rows, 100}, {"relay-rows", c.RelayRows, 100},
		{"messages", c.Messages, 10}, {"spec-events", c.SpecEvents, 1}, {"rounds", c.Rounds, 1}, {"oversized", c.Oversized, 1},
		{"oversized-bytes", c.OversizedBytes, eventgen.DefaultMaxMessageBytes + 1}} {
		if p.v < p.min {
			errs = append(errs, fmt.Errorf("-%s %d: must be at least %d", p.name, p.v, p.min))
		}
	}
	if c.Size > 1<<20 {
		errs = append(errs, fmt.Errorf("-size %d: must be at most 1 MiB", c.Size))
	}
	if c.OversizedBytes > maxOversizedBytes {
		errs = append(errs, fmt.Errorf("-oversized-bytes %d: must be at most %d (512 MiB, Redis's largest value)", c.OversizedBytes, maxOversizedBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"duration", c.Duration}, {"drain-timeout", c.DrainTimeout}, {"max-time", c.MaxTime}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("-%s %s: must be positive", d.name, d.v))
		}
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("-warmup %s: must not be negative", c.Warmup))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 256 {
			return nil, fmt.Errorf("%q is not a number from 1 to 256", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// maxOversizedBytes bounds -oversized-bytes: Redis's proto-max-bulk-len
// default, the largest value it takes.
const maxOversizedBytes = 512 << 20

func parsePhases(s string) ([]string, error) {
	var out []string
	all := allPhases()
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(all, f) {
			return nil, fmt.Errorf("unknown phase %q: want some of %s", f, strings.Join(all, ", "))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	// Run in the canonical order whatever the order given.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(all, a) - slices.Index(all, b) })
	return out, nil
}

func (c *Config) runs(phase string) bool { return slices.Contains(c.Phases, phase) }
