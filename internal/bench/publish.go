package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
)

// publishPhase measures what writing an event costs a business
// transaction: the transaction alone, with the generated PublishOrderCancelled,
// and with a hand-written Bun insert of the same outbox row, at each client
// count; then ten events in one PublishBatch against one event.
func (e *env) publishPhase(ctx context.Context, p *Phase) error {
	orders, err := e.createOrders(ctx, "orders")
	if err != nil {
		return err
	}
	// The relay does not run: this phase measures the producers alone.
	ob, outbox, err := e.newOutbox(ctx, "outbox", &publisher{inner: e.broker.Publisher(), prefix: e.topicPrefix("publish")})
	if err != nil {
		return err
	}
	pub := shopevents.NewPublisher(ob)
	raw := newRawOutbox(e.db.d, outbox)
	db := e.db.db

	variants := []struct {
		name, label string
		tx          func(ctx context.Context, tx bun.Tx) error
	}{
		{"biz", "business row alone", func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			return insertOrder(ctx, tx, orders, &o)
		}},
		{"publishx", "business row + generated PublishOrderCancelled", func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishOrderCancelled(ctx, tx, o)
		}},
		{"raw", "business row + hand-written Bun insert of the outbox row", func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return raw.insert(ctx, tx, o)
		}},
		{"batch10", "business row + PublishBatch of 10 events", func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishBatch(ctx, tx, e.events.orders(10))
		}},
	}
	// The batch is measured at 4 clients (or the nearest count), beside
	// the others.
	batchAt := nearest(e.cfg.Clients, 4)
	byClients := map[int][]*Figure{}
	for _, c := range e.cfg.Clients {
		n := 3
		if c == batchAt {
			n = 4
		}
		res, err := interleaved(ctx, n, e.cfg.Rounds, c, e.cfg.Warmup, e.cfg.Duration, func(v int) (slice, error) {
			// Each slice starts from empty tables.
			if err := e.truncate(ctx, orders, outbox); err != nil {
				return slice{}, err
			}
			run := variants[v].tx
			return slice{op: func(ctx context.Context) error { return db.RunInTx(ctx, nil, run) }}, nil
		})
		if err != nil {
			return fmt.Errorf("%d clients: %w", c, err)
		}
		figs := make([]*Figure, n)
		for v, r := range res {
			figs[v] = p.add(&Figure{
				Name:  fmt.Sprintf("publish.c%d.%s", c, variants[v].name),
				Label: fmt.Sprintf("%s, %d clients", variants[v].label, c),
				Value: r.rate(), Unit: "tx/s",
				P50Ms: ms(r.lat.quantile(0.5)), P99Ms: ms(r.lat.quantile(0.99)),
			})
		}
		biz, px, rw := figs[0], figs[1], figs[2]
		px.compare(rw)
		rw.compare(biz)
		if c == 1 || c == 4 {
			px.atLeast(0.95)
		}
		if n == 4 {
			figs[3].compare(px).atLeast(0.60)
			p.note("batch10 writes 10 events per transaction (one multi-row INSERT): %s events/s", human(10*figs[3].Value))
		}
		byClients[c] = figs
	}
	// The SQLite target: outbox writes keep 80% of plain inserts at the
	// same synchronous setting (NORMAL, in WAL mode).
	if figs, ok := byClients[1]; ok && e.db.d.name == "sqlite" {
		p.add(&Figure{
			Name: "publish.c1.sqlite", Label: "SQLite: business row + PublishOrderCancelled against the business row alone",
			Value: figs[1].Value, Unit: "tx/s",
		}).compare(figs[0]).atLeast(0.80)
	}
	p.note("variants run interleaved in %d rounds of %s each, after a %s warm-up per slice", e.cfg.Rounds, e.cfg.Duration/time.Duration(e.cfg.Rounds), e.cfg.Warmup)
	p.note("each transaction also inserts one business row; tables are emptied before each measurement; the relay does not run")
	return nil
}

// nearest returns the element of xs closest to x (xs is not empty).
func nearest(xs []int, x int) int {
	return slices.MinFunc(xs, func(a, b int) int { return abs(a-x) - abs(b-x) })
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
