package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// fillBatch is how many events one statement writes when filling a backlog.
const fillBatch = 1000

// fill commits n events to the outbox table through the generated
// PublishBatch, fillBatch per statement, then updates the table's
// statistics.
func (e *env) fill(ctx context.Context, ob *eventgen.Outbox, table string, n int) error {
	pub := shopevents.NewPublisher(ob)
	for i := 0; i < n; i += fillBatch {
		if err := pub.PublishBatch(ctx, e.db.db, e.events.orders(min(fillBatch, n-i))); err != nil {
			return fmt.Errorf("fill outbox: %w", err)
		}
	}
	return e.analyze(ctx, table)
}

// runRelay starts ob's relay and returns a function that stops it and
// waits for it to return.
func runRelay(ctx context.Context, ob *eventgen.Outbox) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ob.Run(ctx) // returns nil after a clean stop; errors are logged
	}()
	return func() {
		cancel()
		<-done
	}
}

// relayPhase measures the relay end to end: its throughput from committed
// rows to broker acks against raw Watermill publishing of the same
// messages, its commit-to-publish latency at a fixed offered load, and what
// it costs producers running beside it.
func (e *env) relayPhase(ctx context.Context, p *Phase) error {
	if err := e.relayThroughput(ctx, p); err != nil {
		return err
	}
	if err := e.relayLatency(ctx, p); err != nil {
		return err
	}
	return e.relayProducers(ctx, p)
}

// backlog is an outbox table whose relay counts the messages the broker
// accepted.
type backlog struct {
	ob     *eventgen.Outbox
	table  string
	prefix string // of the broker topics
	prog   *progress
}

// newBacklog creates an outbox table of n rows' progress, publishing under
// a prefix of its own with a sink group. It does not fill it.
func (e *env) newBacklog(ctx context.Context, name string, n int) (*backlog, error) {
	b := &backlog{prefix: e.topicPrefix(name), prog: newProgress(n)}
	if err := e.sink(b.prefix, shopevents.TopicOrders); err != nil {
		return nil, err
	}
	var err error
	b.ob, b.table, err = e.newOutbox(ctx, name, &publisher{inner: e.broker.Publisher(), prefix: b.prefix, observe: func(*message.Message) { b.prog.add(1) }})
	return b, err
}

func (e *env) relayThroughput(ctx context.Context, p *Phase) error {
	n := e.cfg.RelayRows
	b, err := e.newBacklog(ctx, "relay", n)
	if err != nil {
		return err
	}
	ob, prog := b.ob, b.prog
	if err := e.fill(ctx, ob, b.table, n); err != nil {
		return err
	}
	prog.restart()
	stop := runRelay(ctx, ob)
	err = prog.wait(ctx, e.cfg.DrainTimeout, "relay")
	stop()
	if err != nil {
		return err
	}
	relay := p.add(&Figure{Name: "relay.throughput", Label: fmt.Sprintf("relay: %d committed events to broker acks", n),
		Value: prog.rate(), Unit: "events/s"})

	// The ceiling: the same messages published by Watermill directly, with
	// as many publishes in flight as the relay allows.
	rawPrefix := e.topicPrefix("rawpub")
	if err := e.sink(rawPrefix, shopevents.TopicOrders); err != nil {
		return err
	}
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = e.events.message(e.events.order())
	}
	rate, err := publishAll(ctx, &publisher{inner: e.broker.Publisher(), prefix: rawPrefix}, msgs, eventgen.DefaultMaxInFlight)
	if err != nil {
		return err
	}
	raw := p.add(&Figure{Name: "relay.raw-publish", Label: fmt.Sprintf("raw Watermill Publish of the same messages, %d in flight", eventgen.DefaultMaxInFlight),
		Value: rate, Unit: "events/s"})
	relay.compare(raw)
	switch e.broker.Scheme() {
	case "amqp", "amqps", "nats", "tls":
		relay.atLeast(0.70)
	default:
		p.note("relay.throughput has a target against raw publishing on RabbitMQ and NATS only; with the in-process broker the target is drain.relay against drain.bare")
	}
	return nil
}

// publishAll publishes msgs with inFlight goroutines, one message per
// call, and returns messages per second.
func publishAll(ctx context.Context, pub message.Publisher, msgs []*message.Message, inFlight int) (float64, error) {
	var next atomic.Int64
	start := time.Now()
	err := fanOut(ctx, inFlight, func(ctx context.Context) error {
		for ctx.Err() == nil {
			i := int(next.Add(1)) - 1
			if i >= len(msgs) {
				return nil
			}
			if err := pub.Publish(shopevents.TopicOrders, msgs[i]); err != nil {
				return fmt.Errorf("raw publish: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return float64(len(msgs)) / time.Since(start).Seconds(), nil
}

// stamps records when each event, by key, passed a point.
type stamps struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newStamps() *stamps { return &stamps{at: map[string]time.Time{}} }

func (s *stamps) set(key string, t time.Time) {
	s.mu.Lock()
	s.at[key] = t
	s.mu.Unlock()
}

func (s *stamps) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

// since returns, for each key of from, how long after it s has the key;
// keys s lacks are counted as missing.
func (s *stamps) since(from *stamps) (lat latencies, missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from.mu.Lock()
	defer from.mu.Unlock()
	for k, t0 := range from.at {
		t1, ok := s.at[k]
		if !ok {
			missing++
			continue
		}
		lat = append(lat, max(0, t1.Sub(t0)))
	}
	return lat, missing
}

// relayLatency offers cfg.Rate events/s from 4 producers for cfg.Duration
// with the relay running, and measures from each commit to the broker's
// ack of the event's publish, and to its delivery to a subscriber.
func (e *env) relayLatency(ctx context.Context, p *Phase) error {
	prefix := e.topicPrefix("latency")
	committed, acked, received := newStamps(), newStamps(), newStamps()
	var measuring atomic.Bool
	ob, _, err := e.newOutbox(ctx, "latency", &publisher{inner: e.broker.Publisher(), prefix: prefix, observe: func(m *message.Message) {
		acked.set(keyOf(m), time.Now())
	}})
	if err != nil {
		return err
	}
	orders, err := e.createOrders(ctx, "latency_orders")
	if err != nil {
		return err
	}
	sub, err := e.newSubscriber(prefix, e.group("latency"), shopevents.TopicOrders)
	if err != nil {
		return err
	}
	defer sub.Close()
	sctx, cancelSub := context.WithCancel(ctx)
	defer cancelSub()
	ch, err := sub.Subscribe(sctx, shopevents.TopicOrders)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	go func() {
		for m := range ch {
			received.set(keyOf(m), time.Now())
			m.Ack()
		}
	}()
	stop := runRelay(ctx, ob)
	defer stop()

	pub := shopevents.NewPublisher(ob)
	produce := func(ctx context.Context) error {
		o := e.events.order()
		err := e.db.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishOrderCancelled(ctx, tx, o)
		})
		if err == nil && measuring.Load() {
			committed.set(o.OrderID.String(), time.Now())
		}
		return err
	}
	sent, err := openLoop(ctx, 4, e.cfg.Rate, e.cfg.Warmup, e.cfg.Duration, &measuring, produce)
	if err != nil {
		return err
	}
	// Wait for the stragglers.
	n := committed.len()
	deadline := time.Now().Add(e.cfg.DrainTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if lat, missing := received.since(committed); missing == 0 && len(lat) == n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	toAck, missingAck := acked.since(committed)
	toRecv, missingRecv := received.since(committed)
	if len(toAck) == 0 {
		return fmt.Errorf("latency: none of %d committed events was published", n)
	}
	label := fmt.Sprintf("commit to broker ack at %d events/s offered (%s achieved)", e.cfg.Rate, human(float64(sent)/e.cfg.Duration.Seconds()))
	p50, p99 := toAck.quantile(0.5), toAck.quantile(0.99)
	p.add(&Figure{Name: "relay.latency.p50", Label: label, Value: ms(p50), Unit: "ms", P50Ms: ms(p50), P99Ms: ms(p99)}).below(5, "ms")
	p.add(&Figure{Name: "relay.latency.p99", Label: label, Value: ms(p99), Unit: "ms", P50Ms: ms(p50), P99Ms: ms(p99)}).below(30, "ms")
	if len(toRecv) > 0 {
		r50, r99 := toRecv.quantile(0.5), toRecv.quantile(0.99)
		p.add(&Figure{Name: "relay.latency.receive", Label: "commit to delivery to a subscriber, p50", Value: ms(r50), Unit: "ms", P50Ms: ms(r50), P99Ms: ms(r99)})
	}
	if missingAck+missingRecv > 0 {
		p.note("latency: of %d committed events, %d were not published and %d not received within %s", n, missingAck, missingRecv, e.cfg.DrainTimeout)
	}
	return nil
}

// openLoop runs op at rate per second from workers goroutines for warmup
// plus dur, setting measuring after the warm-up, and returns how many ops
// were issued while measuring. Ops that fall behind are queued, not
// skipped.
func openLoop(ctx context.Context, workers, rate int, warmup, dur time.Duration, measuring *atomic.Bool, op func(context.Context) error) (int, error) {
	tokens := make(chan struct{}, rate)
	done := make(chan error, 1)
	go func() {
		done <- fanOut(ctx, workers, func(ctx context.Context) error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case _, ok := <-tokens:
					if !ok {
						return nil
					}
					if err := op(ctx); err != nil {
						return err
					}
				}
			}
		})
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	issued, counted := 0, 0
	for stop := false; !stop; {
		select {
		case err := <-done: // a worker failed, or ctx is done
			measuring.Store(false)
			return 0, err
		case now := <-tick.C:
			el := now.Sub(start)
			if el >= warmup+dur {
				stop = true
				break
			}
			measuring.Store(el >= warmup)
			for due := int(el.Seconds() * float64(rate)); issued < due && len(tokens) < cap(tokens); issued++ {
				tokens <- struct{}{}
				if el >= warmup {
					counted++
				}
			}
		}
	}
	close(tokens)
	err := <-done
	measuring.Store(false)
	return counted, err
}

// relayProducers measures 4 producers writing one event per transaction
// without a relay and then with one relaying to the broker beside them.
func (e *env) relayProducers(ctx context.Context, p *Phase) error {
	prefix := e.topicPrefix("producers")
	if err := e.sink(prefix, shopevents.TopicOrders); err != nil {
		return err
	}
	ob, outbox, err := e.newOutbox(ctx, "producers", &publisher{inner: e.broker.Publisher(), prefix: prefix})
	if err != nil {
		return err
	}
	orders, err := e.createOrders(ctx, "producers_orders")
	if err != nil {
		return err
	}
	pub := shopevents.NewPublisher(ob)
	op := func(ctx context.Context) error {
		return e.db.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishOrderCancelled(ctx, tx, o)
		})
	}
	const clients = 4
	res, err := interleaved(ctx, 2, e.cfg.Rounds, clients, e.cfg.Warmup, e.cfg.Duration, func(v int) (slice, error) {
		if err := e.truncate(ctx, orders, outbox); err != nil {
			return slice{}, err
		}
		s := slice{op: op}
		if v == 1 {
			s.done = runRelay(ctx, ob)
		}
		return s, nil
	})
	if err != nil {
		return fmt.Errorf("producers: %w", err)
	}
	var figs [2]*Figure
	for i, r := range res {
		name, label := "relay.producers.alone", "4 producers, no relay"
		if i == 1 {
			name, label = "relay.producers.with-relay", "4 producers, relay running"
		}
		figs[i] = p.add(&Figure{Name: name, Label: label, Value: r.rate(), Unit: "tx/s",
			P50Ms: ms(r.lat.quantile(0.5)), P99Ms: ms(r.lat.quantile(0.99))})
	}
	figs[1].compare(figs[0]).atLeast(0.85)
	return nil
}
