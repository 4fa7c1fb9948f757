// Command shop is eventgen's example: a small shop whose events are
// generated from ../events.yaml (package shopevents), published through a
// transactional outbox and handled by two consumer groups.
//
//	go run ./examples/shop
//
// With no flags it needs no setup: it uses a SQLite file in a new temporary
// directory (deleted at exit) and the in-process broker. It then
//
//   - creates the outbox and inbox tables (Migrate) and the business tables,
//   - starts the outbox relay and the consumers billing and shipping,
//   - places -orders orders, each in one transaction that inserts the order
//     row and publishes OrderPlaced (PublishOrderPlaced) and the order's
//     stock reservations (PublishBatch, one statement),
//   - places one more order whose transaction rolls back, so its events are
//     never published,
//   - lets billing capture each payment (or decline it, for orders over its
//     credit limit) and shipping ship each paid order: their handlers
//     write their rows and publish the next event in the inbox transaction,
//   - and prints a summary once every event is handled, checking that each
//     group applied each event exactly once, and the events of each key in
//     the order in which they were committed. It exits 0 if so, 1 if not.
//
// Flags choose other databases and brokers:
//
//	go run ./examples/shop -db 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' -broker amqp://guest:guest@127.0.0.1:5672/
//	go run ./examples/shop -db 'root@tcp(127.0.0.1:3306)/test' -broker nats://127.0.0.1:4222
//
// -db takes a SQLite file, postgres://, mysql:// or user@tcp(host:port)/db;
// -broker mem://, amqp://, nats://, redis://, postgres:// or mysql://.
// The program may run again on the same database and broker: it counts only
// its own orders. Passwords in either are never printed.
//
// -trace turns OpenTelemetry tracing and metrics on, with an SDK that keeps
// the spans in memory and a manual metric reader, and prints after the
// summary the trace of the first order as a tree, from its "place order"
// span through each event's send span to each group's process span and the
// handler's own span, then a snapshot of the metrics (see
// docs/observability.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

func main() {
	// Ctrl-C, or SIGTERM from a container runtime or a service manager,
	// stops the relay and the consumers cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the command line.
type config struct {
	dsn     string
	broker  string
	orders  int
	timeout time.Duration
	quiet   bool
	trace   bool
}

// run runs the program with args (without the program name) and returns its
// exit code: 0 when every event was handled once per group, 1 when not or
// on an error, 2 for a bad command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.dsn, "db", "", "the database `DSN`: a SQLite file, postgres://..., mysql://... or user@tcp(host:3306)/db\n(default: a SQLite file in a new temporary directory)")
	fs.StringVar(&c.broker, "broker", "mem://", "the broker `URL`: mem://, amqp://, nats://, redis://, postgres:// or mysql://")
	fs.IntVar(&c.orders, "orders", 20, "how many orders to commit")
	fs.DurationVar(&c.timeout, "timeout", time.Minute, "how long to wait for every event to be handled")
	fs.BoolVar(&c.quiet, "q", false, "print only the summary")
	fs.BoolVar(&c.trace, "trace", false, "trace and measure with OpenTelemetry; print the first order's trace as a tree, and the metrics")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "shop: unexpected argument %q\n", fs.Arg(0))
		return 2
	case c.orders < 1:
		fmt.Fprintln(stderr, "shop: -orders must be at least 1")
		return 2
	case c.timeout <= 0:
		fmt.Fprintln(stderr, "shop: -timeout must be positive")
		return 2
	}
	ok, err := c.run(ctx, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "shop: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// run runs the shop and prints its summary. It reports whether every
// expectation held.
func (c config) run(ctx context.Context, stdout, stderr io.Writer) (bool, error) {
	log := &eventLog{w: stdout, quiet: c.quiet, start: time.Now()}
	// The runtime and the broker clients log only problems, to stderr.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	note := ""
	if c.dsn == "" {
		dir, err := os.MkdirTemp("", "eventgen-shop-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(dir)
		c.dsn = "sqlite:" + filepath.Join(dir, "shop.db")
		note = " (deleted at exit; -db shop.db keeps it)"
	}
	db, dialect, where, err := openDB(ctx, c.dsn)
	if err != nil {
		return false, fmt.Errorf("open the database: %w", err)
	}
	defer db.Close()
	tr, err := transport.Open(ctx, c.broker, transport.Options{Logger: logger})
	if err != nil {
		return false, fmt.Errorf("open the broker: %w", err)
	}
	defer tr.Close()
	broker := tr.String()
	if tr.Scheme() == "mem" {
		broker = "mem:// (in process)"
	}
	fmt.Fprintf(stdout, "database  %s %s%s\nbroker    %s\n", dialect, where, note, broker)
	if !c.quiet {
		fmt.Fprintln(stdout)
	}

	if err := createTables(ctx, db); err != nil {
		return false, err
	}
	var tel *telemetry // nil: off
	if c.trace {
		tel = newTelemetry()
		defer tel.shutdown()
	}
	trace := newRelayTrace(tr.Publisher(), log)
	ob, err := eventgen.NewOutbox(db, trace, tel.outbox(eventgen.OutboxOptions{Logger: logger}))
	if err != nil {
		return false, err
	}
	// Close stops the outbox's gauges; deferred before stopRunning, it
	// runs after the relay has stopped, as Close asks.
	defer ob.Close()
	if err := ob.Migrate(ctx); err != nil {
		return false, err
	}
	pub := shopevents.NewPublisher(ob)
	tracer := tel.tracer()
	consumers, topics, err := newConsumers(ctx, db, tr, tel.consumer(eventgen.ConsumerOptions{Logger: logger}),
		&billing{pub: pub, log: log, tracer: tracer}, &shipping{pub: pub, log: log, tracer: tracer})
	if err != nil {
		return false, err
	}
	for _, cons := range consumers {
		defer cons.Close()
	}

	// Run the relay and the consumers until every event is handled.
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	stopped := make(chan error, 1+len(consumers))
	go func() { stopped <- ob.Run(runCtx) }()
	for _, cons := range consumers {
		go func() { stopped <- cons.Run(runCtx) }()
	}
	running := 1 + len(consumers)
	stopRunning := func() error {
		stopAll()
		var errs []error
		for ; running > 0; running-- {
			errs = append(errs, <-stopped)
		}
		return errors.Join(errs...)
	}
	defer stopRunning()

	s := &shop{db: db, pub: pub, log: log, tracer: tracer}
	start := time.Now()
	var orders []string
	for n := 1; n <= c.orders; n++ {
		id, err := s.placeOrder(ctx, n, false)
		if err != nil {
			return false, err
		}
		orders = append(orders, id.String())
	}
	rolledBack, err := s.placeOrder(ctx, c.orders+1, true)
	if err != nil {
		return false, err
	}

	want := expect(c.orders)
	var got counts
	deadline := time.NewTimer(c.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-stopped:
			running--
			return false, fmt.Errorf("the relay or a consumer stopped early: %v", err)
		case <-deadline.C:
			fmt.Fprintf(stderr, "shop: not every event was handled within %s\n", c.timeout)
			done = true
		case <-tick.C:
			if got, err = count(ctx, db, trace, orders); err != nil {
				return false, err
			}
			done = got.atLeast(want)
			if done && tel != nil {
				// Wait for the first order's trace too: it includes
				// the process spans of the groups that skip an event,
				// which the effect rows do not count.
				published, _, _ := trace.published(orders[:1])
				done = tel.orderTrace(1).complete(published, topics)
			}
		}
	}
	took := time.Since(start)
	if err := stopRunning(); err != nil {
		return false, fmt.Errorf("stop: %w", err)
	}
	// Count once more after the stop, so that nothing handled late escapes.
	if got, err = count(ctx, db, trace, orders); err != nil {
		return false, err
	}
	leaked, err := count(ctx, db, trace, []string{rolledBack.String()})
	if err != nil {
		return false, err
	}
	if err := got.checkOrder(ctx, db, trace, orders); err != nil {
		return false, err
	}
	ok := printSummary(stdout, c.orders, rolledBack, want, got, leaked, took)
	if tel != nil {
		if tree := tel.orderTrace(1); tree != nil {
			tree.print(stdout, 1)
		}
		if err := tel.printMetrics(ctx, stdout); err != nil {
			return false, err
		}
	}
	return ok, nil
}

// newConsumers returns the consumers of groups billing and shipping, made
// with opts and each its Group, with their tables migrated and their groups
// created on the broker, so that they receive every event published from
// now on. It also returns the groups subscribed to each topic.
func newConsumers(ctx context.Context, db *bun.DB, tr *transport.Transport, opts eventgen.ConsumerOptions, b *billing, s *shipping) ([]*eventgen.Consumer, map[string][]string, error) {
	groups := []struct {
		name     string
		handles  []eventgen.Event
		register func(*eventgen.Consumer) error
	}{
		{
			shopevents.GroupBilling,
			[]eventgen.Event{shopevents.OrderPlaced{}, shopevents.PaymentCaptured{}, shopevents.OrderCancelled{}},
			func(c *eventgen.Consumer) error { return shopevents.RegisterBilling(c, b) },
		},
		{
			shopevents.GroupShipping,
			[]eventgen.Event{shopevents.PaymentCaptured{}, shopevents.InventoryStockReserved{}, shopevents.OrderCancelled{}},
			func(c *eventgen.Consumer) error { return shopevents.RegisterShipping(c, s) },
		},
	}
	var out []*eventgen.Consumer
	topics := make(map[string][]string)
	for _, g := range groups {
		sub, err := tr.Subscriber(g.name)
		if err != nil {
			return nil, nil, err
		}
		// Create the group's subscription to each topic before anything is
		// published: on some brokers a group receives only what is
		// published after it exists.
		for _, e := range g.handles {
			if err := sub.SubscribeInitialize(e.Topic()); err != nil {
				return nil, nil, fmt.Errorf("create group %s on %s: %w", g.name, e.Topic(), err)
			}
			if !slices.Contains(topics[e.Topic()], g.name) {
				topics[e.Topic()] = append(topics[e.Topic()], g.name)
			}
		}
		opts.Group = g.name
		c, err := eventgen.NewConsumer(db, sub, opts)
		if err != nil {
			return nil, nil, err
		}
		if err := c.Migrate(ctx); err != nil {
			return nil, nil, err
		}
		if err := g.register(c); err != nil {
			return nil, nil, err
		}
		out = append(out, c)
	}
	return out, topics, nil
}

// counts are what happened to a set of orders.
type counts struct {
	published int            // distinct messages the broker took
	byName    map[string]int // published, by event name
	dups      int            // messages published more than once (any order)
	keyed     int            // distinct messages with a key
	early     int            // of those, taken by the broker before an earlier one of their stream
	billing   effects
	shipping  effects
}

// effects counts a group's rows: one per event handled.
type effects struct {
	rows     int // effect rows written
	messages int // distinct messages they came from
	order    ordering
}

// ordering is how a group applied the streams (topic and key) of a set of
// orders, from its effect rows.
type ordering struct {
	streams     int // streams with an effect row
	inOrder     int // streams whose sequences rise in effect-id order
	outOfOrder  int // adjacent rows of a stream whose sequence does not rise
	unsequenced int // rows without a sequence
}

func (c counts) atLeast(want counts) bool {
	return c.published >= want.published && c.billing.rows >= want.billing.rows && c.shipping.rows >= want.shipping.rows
}

// expect returns the counts that orders 1 to n must reach: each order's
// OrderPlaced and stock reservations; billing's PaymentCaptured, or
// OrderCancelled when it declines; and shipping's OrderShipped for each
// paid order.
func expect(n int) counts {
	var lines, declined int
	for i := 1; i <= n; i++ {
		b := basket(i)
		lines += len(b)
		if total(b) > creditLimit {
			declined++
		}
	}
	return counts{
		published: n + lines + n + (n - declined),
		billing:   effects{rows: 2 * n, messages: 2 * n},
		shipping:  effects{rows: lines + n, messages: lines + n},
	}
}

// count counts what the relay published for orders and the effect rows
// the consumers committed for them.
func count(ctx context.Context, db *bun.DB, trace *relayTrace, orders []string) (counts, error) {
	var c counts
	c.published, c.byName, c.dups = trace.published(orders)
	for _, t := range []struct {
		model any
		into  *effects
	}{{(*ledgerEntry)(nil), &c.billing}, {(*shipment)(nil), &c.shipping}} {
		err := db.NewSelect().Model(t.model).
			ColumnExpr("COUNT(*)").ColumnExpr("COUNT(DISTINCT message_id)").
			Where("order_id IN (?)", bun.In(orders)).
			Scan(ctx, &t.into.rows, &t.into.messages)
		if err != nil {
			return c, fmt.Errorf("count effects: %w", err)
		}
	}
	return c, nil
}

// checkOrder sets c.early and c.keyed from what the relay published for
// orders, and each group's ordering from its effect rows.
func (c *counts) checkOrder(ctx context.Context, db *bun.DB, trace *relayTrace, orders []string) error {
	c.early, c.keyed = trace.early(orders)
	for _, t := range []struct {
		model any
		into  *ordering
	}{{(*ledgerEntry)(nil), &c.billing.order}, {(*shipment)(nil), &c.shipping.order}} {
		var rows []effect
		err := db.NewSelect().Model(t.model).
			Column("topic", "event_key", "seq").
			Where("order_id IN (?)", bun.In(orders)).
			Order("id").
			Scan(ctx, &rows)
		if err != nil {
			return fmt.Errorf("check the order of effects: %w", err)
		}
		*t.into = ordered(rows)
	}
	return nil
}

// ordered checks rows, a group's effects in the order it applied them:
// the sequences of each stream must rise. Only the events of the run's
// orders are there, so a stream of a SKU, which earlier runs and the
// rolled-back order took numbers of too, may skip some: they must still
// rise.
func ordered(rows []effect) ordering {
	type stream struct{ topic, key string }
	last := make(map[stream]int64)
	bad := make(map[stream]bool)
	var o ordering
	for _, r := range rows {
		s := stream{r.Topic, r.EventKey}
		prev, seen := last[s]
		switch {
		case r.Seq <= 0:
			o.unsequenced++
			bad[s] = true
		case seen && r.Seq <= prev:
			o.outOfOrder++
			bad[s] = true
		}
		last[s] = r.Seq
	}
	o.streams = len(last)
	o.inOrder = o.streams - len(bad)
	return o
}

// printSummary prints the outcome and reports whether every expectation
// held: every event published and handled once per group, each stream
// applied in commit order, nothing of the rolled-back order anywhere.
func printSummary(w io.Writer, orders int, rolledBack uuid.UUID, want, got, leaked counts, took time.Duration) bool {
	ok := true
	check := func(cond bool) string {
		if cond {
			return ""
		}
		ok = false
		return "  <-- MISMATCH"
	}
	names := make([]string, 0, len(got.byName))
	for name := range got.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	var byName []string
	for _, name := range names {
		byName = append(byName, fmt.Sprintf("%s %d", name, got.byName[name]))
	}
	fmt.Fprintf(w, "\nsummary\n")
	fmt.Fprintf(w, "  orders       %d committed, 1 rolled back\n", orders)
	fmt.Fprintf(w, "  published    %d of %d events (%s); %d published twice%s\n",
		got.published, want.published, strings.Join(byName, ", "), got.dups, check(got.published == want.published))
	// Not a mismatch: the relay publishes concurrently, and a group holds
	// an event that arrives before an earlier one of its stream.
	fmt.Fprintf(w, "  sent early   %d of %d events reached the broker before an earlier event of their stream; the groups apply them after it\n",
		got.early, got.keyed)
	groups := []struct {
		name      string
		got, want effects
	}{{"billing", got.billing, want.billing}, {"shipping", got.shipping, want.shipping}}
	for _, g := range groups {
		fmt.Fprintf(w, "  %-12s %d of %d events handled, %d effect rows: each applied once%s\n",
			g.name, g.got.messages, g.want.messages, g.got.rows,
			check(g.got.messages == g.want.messages && g.got.rows == g.want.rows))
	}
	for _, g := range groups {
		o := g.got.order
		var unsequenced string
		if o.unsequenced > 0 {
			unsequenced = fmt.Sprintf(", %d events without a sequence", o.unsequenced)
		}
		fmt.Fprintf(w, "  in order     %s: %d of %d streams applied in commit order (%d out of order%s)%s\n",
			g.name, o.inOrder, o.streams, o.outOfOrder, unsequenced, check(o.inOrder == o.streams))
	}
	none := leaked.published == 0 && leaked.billing.rows == 0 && leaked.shipping.rows == 0
	fmt.Fprintf(w, "  rolled back  order %s: %d events published, %d handled%s\n",
		short(rolledBack), leaked.published, leaked.billing.rows+leaked.shipping.rows, check(none))
	fmt.Fprintf(w, "  took         %s from the first order to the last effect\n", took.Round(time.Millisecond))
	return ok
}
