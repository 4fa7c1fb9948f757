// Package bench implements the eventbench command: it measures eventgen's
// outbox and inbox on one database and one broker against the raw limits
// of both and against Watermill's forwarder, and reports each figure with
// its reference, the ratio and the target of the performance issue.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/eventgen/eventgen/runtime/transport"
)

// Main runs the command with the process's environment and signals: the
// first interrupt stops the run, which still cleans up.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, os.Getenv, stdout, stderr)
}

// Run runs eventbench with args and returns its exit code: 0 when every
// selected phase ran (whether or not its targets were met), 1 when one
// failed, 2 for bad usage.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventbench: %v\n", err)
		return 2
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "eventbench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "eventbench: start CPU profile: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := Execute(ctx, cfg, stderr)
	if rep != nil {
		if werr := rep.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
		if cfg.JSON != "" {
			if werr := rep.WriteJSON(cfg.JSON); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventbench: %v\n", err)
		return 1
	}
	return 0
}

// Execute runs the phases cfg selects and returns the report. A phase that
// fails is recorded in the report and the next one runs; the error then
// lists every failure.
func Execute(ctx context.Context, cfg *Config, logw io.Writer) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()
	level := slog.LevelWarn
	if cfg.Verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))

	db, err := openDatabase(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	defer db.close()
	brokerURL := cfg.Broker
	if brokerURL == "" {
		brokerURL = "mem://"
	}
	tr, err := transport.Open(ctx, brokerURL, transport.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open broker: %w", err)
	}
	defer tr.Close()

	e := &env{cfg: cfg, db: db, broker: tr, run: newRunID(), log: log, events: newEvents(cfg.Size)}
	rep := &Report{
		Started:  time.Now().UTC().Truncate(time.Second),
		Database: db.redacted,
		Dialect:  db.d.name,
		Broker:   tr.String(),
		Settings: Settings{
			PayloadBytes: e.events.size(),
			Duration:     cfg.Duration.String(), Warmup: cfg.Warmup.String(), Clients: cfg.Clients,
			Rate: cfg.Rate, Rows: cfg.Rows, RelayRows: cfg.RelayRows, Messages: cfg.Messages, SpecEvents: cfg.SpecEvents,
			Quick: cfg.Quick, Load: loadAverage(),
		},
		Machine: Machine{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
	}
	if cfg.runs("oversize") {
		rep.Settings.Oversized, rep.Settings.OversizedBytes = cfg.Oversized, cfg.OversizedBytes
	}
	start := time.Now()
	defer func() { rep.Seconds = time.Since(start).Seconds() }()

	phases := map[string]func(context.Context, *Phase) error{
		"publish":   e.publishPhase,
		"relay":     e.relayPhase,
		"drain":     e.drainPhase,
		"consumer":  e.consumerPhase,
		"forwarder": e.forwarderPhase,
		"generator": e.generatorPhase,
		"oversize":  e.oversizePhase,
		"tracing":   e.tracingPhase,
		"ordering":  e.orderingPhase,
	}
	var errs []error
	for _, name := range cfg.Phases {
		p := &Phase{Name: name}
		rep.Phases = append(rep.Phases, p)
		if ctx.Err() != nil {
			p.Error = "not run: " + ctx.Err().Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, ctx.Err()))
			continue
		}
		fmt.Fprintf(logw, "eventbench: %s ...\n", name)
		t := time.Now()
		err := phases[name](ctx, p)
		p.Seconds = time.Since(t).Seconds()
		if err != nil {
			p.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if name == "drain" || name == "forwarder" {
			// Those phases hold every table they filled: empty them
			// now, so later phases run on a quiet database.
			for _, err := range e.cleanup() {
				errs = append(errs, fmt.Errorf("clean up after %s: %w", name, err))
			}
		}
	}
	for _, err := range e.cleanup() {
		errs = append(errs, fmt.Errorf("clean up: %w", err))
	}
	return rep, errors.Join(errs...)
}

// loadAverage returns the machine's one-minute load average, or 0 where
// /proc does not tell: other work on the machine skews every figure.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}
