// Command chaosnode is a child process of the chaos tests: a producer, an
// outbox relay, a consumer, or a relay and consumer together (node, for
// the in-process broker), configured by flags. The database DSN and broker
// URL come from CHAOS_DSN and CHAOS_BROKER, so no password shows in the
// process list.
//
// It stops cleanly when its standard input reaches EOF (its parent closed
// it, or died), on SIGTERM or SIGINT, or after -max-runtime. Relays and
// consumers then exit 0 if they stopped without an error; a producer
// stopped before its -events exits 1; a stop that takes over 20s exits 3.
//
// With -progress, relays and consumers log each completed publish and each
// handled message to that file, with timestamps (see chaos.ProgressLog).
//
// EVENTGEN_FAILPOINT makes it SIGKILL itself at an exact window, on the
// EVENTGEN_FAILPOINT_AFTER-th time (default 1) it is reached:
//
//	relay-before-publish              rows claimed, nothing published
//	relay-after-ack-before-mark       the broker acked, rows not marked published
//	consumer-after-commit-before-ack  inbox committed, broker not acked
//	consumer-mid-handler              effect written in the inbox transaction, not committed
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaosnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		role       = fs.String("role", "", "producer, relay, consumer or node (relay and consumer)")
		dbKind     = fs.String("db", "sqlite", "sqlite, postgres or mysql")
		suffix     = fs.String("tables", "", "table name suffix of the scenario")
		ns         = fs.String("namespace", "", "topic namespace of the scenario")
		groups     = fs.String("groups", "billing,shipping", "consumer groups, comma-separated")
		relays     = fs.Int("relays", 1, "relays to run (relay and node roles)")
		rawDir     = fs.String("raw-dir", "", "directory for the raw delivery log")
		maxRetries = fs.Int("max-retries", 0, "consumer MaxRetries (0: default)")
		events     = fs.Int("events", 100, "producer: transactions to commit")
		workers    = fs.Int("workers", 8, "producer: goroutines")
		rollback   = fs.Int("rollback-every", 3, "producer: every n-th transaction rolls back after its publish (0: never)")
		rate       = fs.Float64("rate", 0, "producer: transactions per second (0: unlimited)")
		flaky      = fs.Int("flaky-every", 0, "producer: every n-th transaction writes an event whose first handler run fails (0: never)")
		hostile    = fs.Int("hostile-every", 0, "producer: every n-th transaction writes an event with a hostile key and header (0: never)")
		keys       = fs.String("keys", chaos.KeysUnique, "producer: event keys: unique (each its own), hot (a few keys, many events each) or cold (many keys, a few events each)")
		burst      = fs.Int("burst", 1, "producer: with -rate, transactions started together at each tick")
		lease      = fs.Duration("lease", 0, "relay LeaseDuration (0: the harness's short lease)")
		progress   = fs.String("progress", "", "file that receives the relays' and consumers' progress log")
		maxRun     = fs.Duration("max-runtime", 5*time.Minute, "exit after this long whatever happens")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("pid", os.Getpid(), "role", *role)
	if *suffix == "" {
		log.Error("chaosnode: -tables is required")
		return 2
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()
	go func() { // the parent closed stdin or died
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	go func() { // a stop that hangs must not outlive the parent
		<-ctx.Done()
		time.Sleep(20 * time.Second)
		log.Error("chaosnode: did not stop within 20s; exiting")
		os.Exit(3)
	}()

	tables := chaos.NewTables(*suffix)
	dsn := os.Getenv("CHAOS_DSN")
	if *role == "producer" {
		db, err := chaos.OpenDB(*dbKind, dsn)
		if err != nil {
			log.Error("chaosnode: open database", "error", err)
			return 1
		}
		defer db.Close()
		ob, err := eventgen.NewOutbox(db, nopPublisher{}, chaos.RelayOptions(tables, log))
		if err != nil {
			log.Error("chaosnode: new outbox", "error", err)
			return 1
		}
		st, err := chaos.RunProducer(ctx, db, ob, tables, chaos.ProducerOptions{
			Events: *events, Workers: *workers, RollbackEvery: *rollback, Rate: *rate, FlakyEvery: *flaky, HostileEvery: *hostile,
			Keys: *keys, Burst: *burst,
		})
		_ = json.NewEncoder(stdout).Encode(st)
		if err != nil {
			log.Error("chaosnode: producer stopped early", "error", err)
			return 1
		}
		return 0
	}

	cfg := chaos.NodeConfig{
		DB: *dbKind, DSN: dsn, Broker: os.Getenv("CHAOS_BROKER"),
		Namespace: *ns, Tables: tables, RawDir: *rawDir, ProgressFile: *progress, MaxRetries: *maxRetries, Logger: log,
	}
	if *lease > 0 {
		cfg.TuneOutbox = func(o *eventgen.OutboxOptions) { o.LeaseDuration = *lease }
	}
	switch *role {
	case "relay":
		cfg.Relays = *relays
	case "consumer":
		cfg.Groups = strings.Split(*groups, ",")
	case "node":
		cfg.Relays = *relays
		cfg.Groups = strings.Split(*groups, ",")
	default:
		log.Error("chaosnode: unknown -role", "role", *role)
		return 2
	}
	if err := setFailpoint(&cfg, log); err != nil {
		log.Error("chaosnode: " + err.Error())
		return 2
	}
	n, err := chaos.StartNode(ctx, cfg)
	if err != nil {
		log.Error("chaosnode: start", "error", err)
		return 1
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	if err := n.Stop(); err != nil {
		log.Error("chaosnode: stop", "error", err)
		return 1
	}
	return 0
}

// setFailpoint installs the hook named by EVENTGEN_FAILPOINT.
func setFailpoint(cfg *chaos.NodeConfig, log *slog.Logger) error {
	name := os.Getenv("EVENTGEN_FAILPOINT")
	if name == "" {
		return nil
	}
	after := int64(1)
	if s := os.Getenv("EVENTGEN_FAILPOINT_AFTER"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("EVENTGEN_FAILPOINT_AFTER=%q is not a positive integer", s)
		}
		after = n
	}
	var hits atomic.Int64
	hit := func() {
		if hits.Add(1) == after {
			log.Warn("chaosnode: failpoint reached; SIGKILL", "failpoint", name)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	}
	switch name {
	case "relay-before-publish":
		cfg.BeforePublish = hit
	case "relay-after-ack-before-mark":
		cfg.AfterPublish = hit
	case "consumer-after-commit-before-ack":
		cfg.BeforeAck = func(string) { hit() }
	case "consumer-mid-handler":
		cfg.MidHandler = func(string) { hit() }
	default:
		return fmt.Errorf("unknown EVENTGEN_FAILPOINT %q", name)
	}
	return nil
}

// nopPublisher lets a producer build an Outbox: producers only write rows.
type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }
