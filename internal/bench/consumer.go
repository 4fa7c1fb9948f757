package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// consumerPhase measures receiving: a raw Watermill subscriber that only
// acks, the same subscriber with a hand-written inbox (insert the message's
// row and the handler's row in one transaction), and eventgen's Consumer
// with a generated handler that writes one row. Each reads its own backlog
// of cfg.Messages messages, published before it starts.
func (e *env) consumerPhase(ctx context.Context, p *Phase) error {
	rawRate, err := e.consume(ctx, "raw", func(ctx context.Context, sub *subscriber, prog *progress) (func(), error) {
		return e.rawSubscriber(ctx, sub, prog, 1, nil)
	})
	if err != nil {
		return err
	}
	raw := p.add(&Figure{Name: "consumer.raw", Label: "raw Watermill subscriber, ack only", Value: rawRate, Unit: "events/s"})

	handOrders, err := e.createOrders(ctx, "hand_orders")
	if err != nil {
		return err
	}
	handInbox, err := e.createInbox(ctx, "hand_inbox")
	if err != nil {
		return err
	}
	handFigs := [2]*Figure{}
	for i, subs := range []int{1, eventgen.DefaultConcurrency} {
		name := "hand"
		if subs > 1 {
			name = fmt.Sprintf("hand%d", subs)
		}
		hand := newHandInbox(e.db.d, handInbox, e.group(name))
		rate, err := e.consume(ctx, name, func(ctx context.Context, sub *subscriber, prog *progress) (func(), error) {
			return e.rawSubscriber(ctx, sub, prog, subs, func(ctx context.Context, m *message.Message) error {
				return hand.handle(ctx, e.db.db, handOrders, m)
			})
		})
		if err != nil {
			return err
		}
		handFigs[i] = p.add(&Figure{Name: "consumer." + name + "-inbox", Value: rate, Unit: "events/s",
			Label: fmt.Sprintf("raw subscriber, %d subscriptions, + hand-written inbox row and handler row in one transaction", subs)})
	}
	// The Consumer subscribes DefaultConcurrency times to the topic, so its
	// reference is the hand-written inbox with as many subscriptions.
	handFig := handFigs[1]

	orders, err := e.createOrders(ctx, "inbox_orders")
	if err != nil {
		return err
	}
	rate, err := e.consume(ctx, "inbox", e.startConsumer(e.table("inbox"), orders))
	if err != nil {
		return err
	}
	inbox := p.add(&Figure{Name: "consumer.inbox", Label: fmt.Sprintf("eventgen Consumer (Concurrency %d), generated handler writing one row", eventgen.DefaultConcurrency),
		Value: rate, Unit: "events/s"})
	inbox.compare(handFig).atLeast(0.95)
	p.add(&Figure{Name: "consumer.inbox-vs-raw", Label: "eventgen Consumer against the raw subscriber", Value: rate, Unit: "events/s"}).compare(raw).atLeast(0.50)
	p.note("each variant is one replica of its group; rates run from the first message handled to the last of %d", e.cfg.Messages)
	p.note("consumer.hand%d-inbox subscribes %d times in one replica, so that %d messages are handled at once on brokers that deliver one unacked message per subscription; the Consumer does the same", eventgen.DefaultConcurrency, eventgen.DefaultConcurrency, eventgen.DefaultConcurrency)
	return nil
}

// startFunc starts a consumer variant on sub, counting in prog, and
// returns its stop function.
type startFunc func(context.Context, *subscriber, *progress) (func(), error)

// startConsumer returns the start of eventgen's Consumer, on the inbox
// table table, with the generated handler writing each order to orders.
// The group is the subscriber's.
func (e *env) startConsumer(table, orders string) startFunc {
	return func(ctx context.Context, sub *subscriber, prog *progress) (func(), error) {
		c, err := eventgen.NewConsumer(e.db.db, sub, eventgen.ConsumerOptions{Group: sub.group, Table: table, Logger: e.log})
		if err != nil {
			return nil, err
		}
		if err := c.Migrate(ctx); err != nil {
			return nil, err
		}
		if err := shopevents.RegisterOrderCancelledHandler(c, &orderHandler{table: orders, prog: prog}); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := c.Run(ctx); err != nil {
				e.log.Error("consumer stopped", "error", err)
			}
		}()
		return func() { cancel(); <-done }, nil
	}
}

// consume runs one consumer variant on cfg.Messages new events.
func (e *env) consume(ctx context.Context, name string, start startFunc) (float64, error) {
	msgs := make([]*message.Message, e.cfg.Messages)
	for i := range msgs {
		msgs[i] = e.events.message(e.events.order())
	}
	return e.consumeMessages(ctx, name, msgs, start)
}

// consumeMessages runs one consumer variant: it creates a group on a topic
// of its own, publishes msgs as the backlog, starts the variant and
// measures until every message was handled.
func (e *env) consumeMessages(ctx context.Context, name string, msgs []*message.Message, start startFunc) (float64, error) {
	n := len(msgs)
	prefix := e.topicPrefix("consume_" + name)
	sub, err := e.newSubscriber(prefix, e.group(name), shopevents.TopicOrders)
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	if _, err := publishAll(ctx, &publisher{inner: e.broker.Publisher(), prefix: prefix}, msgs, eventgen.DefaultMaxInFlight); err != nil {
		return 0, err
	}
	prog := newProgress(n)
	stop, err := start(ctx, sub, prog)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	err = prog.wait(ctx, e.cfg.DrainTimeout, name+" consumer")
	stop()
	if err != nil {
		return 0, err
	}
	return prog.rateFromFirst(), nil
}

// rawSubscriber subscribes subs times to the orders topic through sub,
// runs handle (if not nil) on each message and acks it, and returns a
// function that stops it.
func (e *env) rawSubscriber(ctx context.Context, sub *subscriber, prog *progress, subs int, handle func(context.Context, *message.Message) error) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	chans := make([]<-chan *message.Message, subs)
	for i := range chans {
		var err error
		if chans[i], err = sub.Subscribe(ctx, shopevents.TopicOrders); err != nil {
			cancel()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.handleAll(ctx, ch, prog, handle)
		}()
	}
	return func() { cancel(); wg.Wait() }, nil
}

// handleAll runs handle on each message of ch and acks it, or nacks it if
// handle fails, until ch is closed.
func (e *env) handleAll(ctx context.Context, ch <-chan *message.Message, prog *progress, handle func(context.Context, *message.Message) error) {
	for m := range ch {
		if handle != nil {
			if err := handle(ctx, m); err != nil {
				if ctx.Err() == nil {
					e.log.Error("hand-written handler", "error", err)
				}
				m.Nack()
				continue
			}
		}
		m.Ack()
		prog.add(1)
	}
}

// orderHandler is the generated interface's implementation: it writes the
// order's business row in the inbox transaction.
type orderHandler struct {
	table string
	prog  *progress
}

func (h *orderHandler) HandleOrderCancelled(ctx context.Context, e event, _ eventgen.Metadata) error {
	if err := insertOrder(ctx, eventgen.Tx(ctx), h.table, &e); err != nil {
		return err
	}
	h.prog.add(1)
	return nil
}

// createInbox creates an inbox table like the Consumer's, for the
// hand-written reference.
func (e *env) createInbox(ctx context.Context, suffix string) (string, error) {
	t := e.table(suffix)
	stmts, err := eventgen.InboxSchema(e.db.d.name, t)
	if err != nil {
		return "", err
	}
	for _, s := range stmts {
		if _, err := e.db.db.ExecContext(ctx, s); err != nil {
			return "", fmt.Errorf("create %s: %w", t, err)
		}
	}
	return t, nil
}

// handInbox is what a team would write by hand: decode the event, then in
// one transaction insert the message's inbox row (ignoring a duplicate)
// and, if it was new, run the handler.
type handInbox struct {
	group, insert string
}

func newHandInbox(d dialect, table, group string) *handInbox {
	verb, conflict := "INSERT OR IGNORE INTO", ""
	switch d.name {
	case "postgres":
		verb, conflict = "INSERT INTO", " ON CONFLICT (consumer_group, topic, message_id) DO NOTHING"
	case "mysql":
		verb = "INSERT IGNORE INTO"
	}
	return &handInbox{group: group, insert: verb + " " + table +
		" (consumer_group, message_id, name, version, topic, msg_key, source, event_time, payload, status, attempts, created_at, handled_at, expires_at)" +
		" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'succeeded', 1, " + d.now + ", " + d.now + ", " + d.now + " + 86400000000)" + conflict}
}

func (h *handInbox) handle(ctx context.Context, db *bun.DB, orders string, m *message.Message) error {
	var ev event
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	version, err := strconv.Atoi(m.Metadata.Get("ce_eventversion"))
	if err != nil {
		return fmt.Errorf("ce_eventversion: %w", err)
	}
	at, err := time.Parse(time.RFC3339Nano, m.Metadata.Get("ce_time"))
	if err != nil {
		return fmt.Errorf("ce_time: %w", err)
	}
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, h.insert, h.group, m.Metadata.Get("ce_id"), m.Metadata.Get("ce_type"), version,
			shopevents.TopicOrders, m.Metadata.Get("ce_partitionkey"), m.Metadata.Get("ce_source"), at.UnixMicro(), []byte(m.Payload))
		if err != nil {
			return fmt.Errorf("insert inbox row: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // a duplicate: handled already
		}
		return insertOrder(ctx, tx, orders, &ev)
	})
}
