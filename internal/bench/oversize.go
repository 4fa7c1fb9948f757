package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// oversizePhase measures what messages over the consumer's MaxMessageBytes
// cost a consumer in memory. An eventgen Consumer with the default options
// (MaxMessageBytes 4 MiB) reads cfg.Oversized messages of
// cfg.OversizedBytes each, published one after another, then cfg.Messages
// events; the figure is the process's peak RSS while it does, against the
// same Consumer reading the events alone. A third variant runs the
// Consumer with Concurrency 1, to show how the peak grows with the
// messages the Consumer holds at once. The Consumer runs in this process,
// whose peak RSS is reset (after a garbage collection that returns freed
// memory to the OS) once the messages are published.
func (e *env) oversizePhase(ctx context.Context, p *Phase) error {
	if s := e.broker.Scheme(); s == "mem" || s == "gochannel" {
		return errors.New("needs a broker outside this process (-broker redis://..., nats://, amqp://, postgres://...): the in-process broker keeps the published messages in this process's memory")
	}
	orders, err := e.createOrders(ctx, "oversize_orders")
	if err != nil {
		return err
	}
	n, size := e.cfg.Oversized, e.cfg.OversizedBytes
	variants := []struct {
		name        string
		oversized   int
		concurrency int
		label       string
	}{
		{"none", 0, eventgen.DefaultConcurrency, fmt.Sprintf("Consumer (default options), %d events only", e.cfg.Messages)},
		{"c8", n, eventgen.DefaultConcurrency, fmt.Sprintf("Consumer (default options), %d x %s over MaxMessageBytes, then %d events", n, mib(size), e.cfg.Messages)},
		{"c1", n, 1, fmt.Sprintf("the same with Concurrency 1, %d x %s, then %d events", n, mib(size), e.cfg.Messages)},
	}
	var (
		base   *Figure
		starts []string
	)
	for _, v := range variants {
		r, err := e.oversizeRun(ctx, "oversize_"+v.name, orders, v.oversized, v.concurrency)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		starts = append(starts, fmt.Sprintf("%s %.0f MiB", v.name, float64(r.start)/(1<<20)))
		f := p.add(&Figure{Name: "oversize." + v.name + ".peak-rss", Label: v.label, Value: float64(r.peak) / (1 << 20), Unit: "MiB"})
		if !r.reset {
			f.Label += "; the high-water mark could not be reset, so it covers the run so far"
		}
		if base == nil {
			base = f
			continue
		}
		f.compare(base)
		p.add(&Figure{Name: "oversize." + v.name + ".extra-rss",
			Label: fmt.Sprintf("its peak RSS over the events-only variant's, in %s messages (%d subscriptions)", mib(size), r.subscriptions),
			Value: max(f.Value-base.Value, 0) / (float64(size) / (1 << 20)), Unit: "messages"})
	}
	p.note("peak RSS is this whole process's (VmHWM), reset before each Consumer starts; RSS then: %s", strings.Join(starts, ", "))
	p.note("a message over MaxMessageBytes is recorded failed and acknowledged without being decoded, but the transport has read it whole; the Consumer subscribes min(Concurrency, 16) times to a topic, and the peak grows by the messages its subscriptions hold at once (one each on Redis and RabbitMQ, more on NATS and SQL) and by what the garbage collector has not yet reclaimed: see docs/performance.md, \"Messages over MaxMessageBytes\"")
	return nil
}

// oversizeResult is one variant's memory.
type oversizeResult struct {
	start, peak   int64 // RSS when the Consumer started, and the peak until it stopped
	reset         bool  // whether the peak was reset before the Consumer started
	subscriptions int
}

// oversizeRun publishes oversized messages, then cfg.Messages events, to a
// topic of its own, and runs a Consumer of a group of its own with the
// default options but concurrency until every event is handled and every
// oversized message is recorded failed.
func (e *env) oversizeRun(ctx context.Context, name, orders string, oversized, concurrency int) (oversizeResult, error) {
	prefix := e.topicPrefix(name)
	group := e.group(name)
	sub, err := e.newSubscriber(prefix, group, shopevents.TopicOrders)
	if err != nil {
		return oversizeResult{}, err
	}
	defer sub.Close()
	pub := &publisher{inner: e.broker.Publisher(), prefix: prefix}
	if err := e.publishOversized(ctx, pub, oversized); err != nil {
		return oversizeResult{}, err
	}
	msgs := make([]*message.Message, e.cfg.Messages)
	for i := range msgs {
		msgs[i] = e.events.message(e.events.order())
	}
	if _, err := publishAll(ctx, pub, msgs, eventgen.DefaultMaxInFlight); err != nil {
		return oversizeResult{}, err
	}
	msgs = nil

	inbox := e.table(name + "_inbox")
	prog := newProgress(e.cfg.Messages)
	c, err := eventgen.NewConsumer(e.db.db, sub, eventgen.ConsumerOptions{Group: group, Table: inbox, Concurrency: concurrency, Logger: e.log})
	if err != nil {
		return oversizeResult{}, err
	}
	if err := c.Migrate(ctx); err != nil {
		return oversizeResult{}, err
	}
	if err := shopevents.RegisterOrderCancelledHandler(c, &orderHandler{table: orders, prog: prog}); err != nil {
		return oversizeResult{}, err
	}

	// Measure from a clean start: what the publishing allocated returned
	// to the OS, and the kernel's high-water mark reset to the current RSS.
	runtime.GC()
	debug.FreeOSMemory()
	var r oversizeResult
	r.reset = resetPeakRSS()
	if r.start, err = procStatus("VmRSS"); err != nil {
		return r, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	err = prog.wait(ctx, e.cfg.DrainTimeout, name+" consumer")
	if err == nil {
		err = e.waitFailed(ctx, inbox, oversized)
	}
	cancel()
	if rerr := <-done; rerr != nil && err == nil {
		err = fmt.Errorf("consumer: %w", rerr)
	}
	if err != nil {
		return r, err
	}
	if r.peak, err = procStatus("VmHWM"); err != nil {
		return r, err
	}
	r.subscriptions = min(concurrency, 16)
	// Free the broker's memory before the next variant publishes.
	if err := sub.Close(); err != nil {
		return r, fmt.Errorf("close subscriber: %w", err)
	}
	if err := e.broker.DeleteTopic(ctx, prefix+shopevents.TopicOrders, group); err != nil {
		return r, fmt.Errorf("delete topic: %w", err)
	}
	return r, nil
}

// publishOversized publishes n events whose payloads are
// cfg.OversizedBytes long, one after another, so that the Consumer's
// subscriptions read them at once.
func (e *env) publishOversized(ctx context.Context, pub *publisher, n int) error {
	if n == 0 {
		return nil
	}
	ev := e.events.order()
	ev.Reason = ""
	pad := e.cfg.OversizedBytes - len(e.events.payload(ev))
	ev.Reason = strings.Repeat("r", max(pad, 1))
	payload := e.events.payload(ev)
	ev.Reason = ""
	for range n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		id := uuid.Must(uuid.NewV7()).String()
		m := wireMessage(id, ev.Key(), time.Now(), payload)
		if err := pub.Publish(shopevents.TopicOrders, m); err != nil {
			return fmt.Errorf("publish a %s message (the broker may refuse messages this large): %w", mib(len(payload)), err)
		}
	}
	return nil
}

// waitFailed waits until table holds n failed rows.
func (e *env) waitFailed(ctx context.Context, table string, n int) error {
	q := "SELECT COUNT(*) FROM " + table + " WHERE status = 'failed'"
	got, err := e.waitCount(ctx, q, 50*time.Millisecond, func(got int) bool { return got >= n })
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%d of %d oversized messages recorded failed after %s: %w", got, n, e.cfg.DrainTimeout, err)
	}
	if err != nil {
		return fmt.Errorf("count failed rows: %w", err)
	}
	return nil
}

// mib formats a byte count in MiB, or in bytes below one.
func mib(n int) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d B", n)
	}
	return trimFloat(float64(n)/(1<<20)) + " MiB"
}
