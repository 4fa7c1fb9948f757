package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// orderingKeys is how many distinct keys the ordering phase spreads its
// events over.
const orderingKeys = 1000

// orderingPhase measures what per-key ordering costs, each ordered variant
// beside its unordered twin in one run: the Consumer applying events of
// 1,000 keys in sequence against the same events without a key; PublishX
// of keyed events (each numbered in its key's counter row) against the
// same events without a key, at 1 and 4 clients on distinct keys; and 16
// clients all on one key, which take turns on its counter row by design.
func (e *env) orderingPhase(ctx context.Context, p *Phase) error {
	if err := e.orderedConsumer(ctx, p); err != nil {
		return err
	}
	return e.orderedPublish(ctx, p)
}

// orderedConsumer runs the Consumer on cfg.Messages messages spread over
// orderingKeys keys, each key's in sequence and the keys interleaved as
// producers committing in turn would publish them, and on the same number
// of messages without a key; rounds alternate the two.
func (e *env) orderedConsumer(ctx context.Context, p *Phase) error {
	keys := make([]string, min(orderingKeys, e.cfg.Messages))
	for i := range keys {
		keys[i] = uuid.NewString()
	}
	perKey := max(1, e.cfg.Messages/len(keys))
	messages := func(ordered bool) []*message.Message {
		out := make([]*message.Message, 0, perKey*len(keys))
		for seq := 1; seq <= perKey; seq++ {
			for _, k := range keys {
				o := e.events.order()
				id := uuid.Must(uuid.NewV7()).String()
				if !ordered {
					out = append(out, wireMessage(id, "", o.CancelledAt, e.events.payload(o)))
					continue
				}
				m := wireMessage(id, k, o.CancelledAt, e.events.payload(o))
				m.Metadata.Set("ce_sequence", strconv.Itoa(seq))
				out = append(out, m)
			}
		}
		return out
	}
	orders, err := e.createOrders(ctx, "ord_orders")
	if err != nil {
		return err
	}
	var rates [2]float64
	var retriedAll [2]int
	variants := [2]string{"unordered", "ordered"}
	for round := range e.cfg.Rounds {
		for v, name := range variants {
			table := e.table(fmt.Sprintf("ord_inbox_%s_%d", name, round))
			msgs := messages(v == 1)
			rate, err := e.consumeMessages(ctx, fmt.Sprintf("ord_%s_%d", name, round), msgs, e.startConsumer(table, orders))
			if err != nil {
				return fmt.Errorf("%s consumer: %w", name, err)
			}
			rates[v] += rate / float64(e.cfg.Rounds)
			var retried int
			if err := e.db.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table+" WHERE lock_owner IS NOT NULL").Scan(&retried); err != nil {
				return err
			}
			retriedAll[v] += retried
		}
	}
	unordered := p.add(&Figure{Name: "ordering.consumer.unordered", Value: rates[0], Unit: "events/s",
		Label: fmt.Sprintf("eventgen Consumer (Concurrency %d), %d events without a key", eventgen.DefaultConcurrency, perKey*len(keys))})
	p.add(&Figure{Name: "ordering.consumer.ordered", Value: rates[1], Unit: "events/s",
		Label: fmt.Sprintf("eventgen Consumer, the same events on %d keys, %d each, applied in sequence", len(keys), perKey)}).compare(unordered).atLeast(0.80)
	p.note("consumer: of %d events, %d unordered and %d ordered ran in the retrier (held, then woken; or retried) instead of on delivery",
		perKey*len(keys)*e.cfg.Rounds, retriedAll[0], retriedAll[1])
	p.note("consumer: %d rounds alternate the variants, each on a new group, topic and inbox table; rates average the rounds", e.cfg.Rounds)
	return nil
}

// orderedPublish measures PublishOrderCancelled, whose events have a key,
// against Outbox.Publish of the same event without one, at 1 and 4 clients
// on distinct keys; and 16 clients on one key against 16 on distinct keys.
func (e *env) orderedPublish(ctx context.Context, p *Phase) error {
	orders, err := e.createOrders(ctx, "ord_pub_orders")
	if err != nil {
		return err
	}
	ob, outbox, err := e.newOutbox(ctx, "ord_outbox", &publisher{inner: e.broker.Publisher(), prefix: e.topicPrefix("ord_publish")})
	if err != nil {
		return err
	}
	pub := shopevents.NewPublisher(ob)
	keys := make([]uuid.UUID, orderingKeys)
	for i := range keys {
		keys[i] = uuid.New()
	}
	var next atomic.Int64
	// keyed writes the business row and publishes an event whose key is
	// the next of keys, or keys[0] on one key: concurrent clients take
	// consecutive keys, so they never share one unless oneKey.
	keyed := func(oneKey bool) func(ctx context.Context, tx bun.Tx) error {
		return func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if !oneKey {
				o.OrderID = keys[next.Add(1)%int64(len(keys))]
			} else {
				o.OrderID = keys[0]
			}
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishOrderCancelled(ctx, tx, o)
		}
	}
	unkeyed := func(ctx context.Context, tx bun.Tx) error {
		o := e.events.order()
		if err := insertOrder(ctx, tx, orders, &o); err != nil {
			return err
		}
		return ob.Publish(ctx, tx, shopevents.Source, []eventgen.Event{withoutKey{o}})
	}
	measure := func(clients int, fns ...func(context.Context, bun.Tx) error) ([]loadResult, error) {
		return interleaved(ctx, len(fns), e.cfg.Rounds, clients, e.cfg.Warmup, e.cfg.Duration, func(v int) (slice, error) {
			if err := e.truncate(ctx, orders, outbox, outbox+"_keys"); err != nil {
				return slice{}, err
			}
			run := fns[v]
			return slice{op: func(ctx context.Context) error { return e.db.db.RunInTx(ctx, nil, run) }}, nil
		})
	}
	fig := func(name, label string, clients int, r loadResult) *Figure {
		return p.add(&Figure{Name: fmt.Sprintf("ordering.publish.c%d.%s", clients, name), Label: fmt.Sprintf("%s, %d clients", label, clients),
			Value: r.rate(), Unit: "tx/s", P50Ms: ms(r.lat.quantile(0.5)), P99Ms: ms(r.lat.quantile(0.99))})
	}
	for _, c := range []int{1, 4} {
		res, err := measure(c, unkeyed, keyed(false))
		if err != nil {
			return fmt.Errorf("publish, %d clients: %w", c, err)
		}
		off := fig("unkeyed", "business row + Publish of the event without a key (not ordered)", c, res[0])
		fig("keyed", fmt.Sprintf("business row + PublishOrderCancelled, keyed (numbered), %d keys", len(keys)), c, res[1]).compare(off).atLeast(0.90)
	}
	res, err := measure(16, keyed(false), keyed(true))
	if err != nil {
		return fmt.Errorf("publish, 16 clients: %w", err)
	}
	distinct := fig("keyed", fmt.Sprintf("business row + PublishOrderCancelled, %d keys", len(keys)), 16, res[0])
	fig("onekey", "business row + PublishOrderCancelled, all on one key (serial by design)", 16, res[1]).compare(distinct)
	p.note("publish: variants run interleaved in %d rounds, tables (and the key table) emptied before each slice; the relay does not run", e.cfg.Rounds)
	p.note("publish: on distinct keys concurrent clients take consecutive keys of %d, so none waits for another's counter row", len(keys))
	return nil
}

// withoutKey is the bench's event without its key: Publish gives it no
// sequence, and consumers apply it unordered.
type withoutKey struct{ e event }

func (w withoutKey) EventName() string            { return w.e.EventName() }
func (w withoutKey) EventVersion() int            { return w.e.EventVersion() }
func (w withoutKey) Topic() string                { return w.e.Topic() }
func (w withoutKey) Validate() error              { return w.e.Validate() }
func (w withoutKey) MarshalJSON() ([]byte, error) { return json.Marshal(w.e) }
