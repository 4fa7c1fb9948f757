package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// The business tables. Each service would own its own database in
// production; here they share one so that the program needs no setup.

// order is the shop's row for an order.
type order struct {
	bun.BaseModel `bun:"table:shop_orders"`

	ID       string `bun:",pk,type:varchar(36)"`
	Customer string `bun:",type:varchar(36),notnull"`
	Total    int64  `bun:",notnull"` // minor units
	Currency string `bun:",type:varchar(3),notnull"`
}

// ledgerEntry is what billing writes for each event it handles.
type ledgerEntry struct {
	bun.BaseModel `bun:"table:billing_effects"`

	ID      int64  `bun:",pk,autoincrement"` // the order in which billing applied its events
	OrderID string `bun:",type:varchar(36),notnull"`
	effect
	Entry  string `bun:",type:varchar(32),notnull"` // invoiced, paid or cancelled
	Amount int64  `bun:",notnull"`
}

// shipment is what shipping writes for each event it handles.
type shipment struct {
	bun.BaseModel `bun:"table:shipping_effects"`

	ID      int64  `bun:",pk,autoincrement"` // the order in which shipping applied its events
	OrderID string `bun:",type:varchar(36),notnull"`
	effect
	Entry string `bun:",type:varchar(64),notnull"` // reserved SKU, shipped or released
}

// effect is what an effect row records of the event it applies: the
// message, and its stream (topic and key) and sequence, from which the
// summary checks that the group applied each stream in commit order.
//
// The row's id is the order in which the group applied its events: a
// group runs a stream's next event only once the previous one has
// committed, so the next one's row gets a larger id. A handler run that
// failed rolled its row back with it, so only applied events have rows.
//
// These columns came after the tables' first version, whose names were
// billing_ledger and shipping_log. The tables were renamed rather than
// altered: the program may run again on a database of an earlier run,
// where CREATE TABLE IF NOT EXISTS would keep the old tables without the
// columns, and adding columns if missing takes a query of the schema in
// each database's own way. The old tables, if any, are left unused.
type effect struct {
	MessageID string `bun:",type:varchar(64),notnull"`
	Topic     string `bun:",type:varchar(255),notnull"`
	EventKey  string `bun:",type:varchar(255),notnull"` // key is a reserved word in MySQL
	Seq       int64  `bun:",notnull"`                   // 0 for an event without a key
}

// effectOf returns what a row records of the event that m describes.
func effectOf(m eventgen.Metadata) effect {
	return effect{MessageID: m.ID, Topic: m.Topic, EventKey: m.Key, Seq: m.Sequence}
}

// createTables creates the business tables if they do not exist.
func createTables(ctx context.Context, db *bun.DB) error {
	for _, m := range []any{(*order)(nil), (*ledgerEntry)(nil), (*shipment)(nil)} {
		if _, err := db.NewCreateTable().Model(m).IfNotExists().Exec(ctx); err != nil {
			return fmt.Errorf("create business tables: %w", err)
		}
	}
	return nil
}

// creditLimit is the largest order billing accepts, in minor units: billing
// declines larger ones and cancels them.
const creditLimit = 100_00

// basket returns the lines of the n-th order (from 1): one or two lines,
// except for order 3, whose 50 teapots are over billing's credit limit.
func basket(n int) []shopevents.LineItem {
	products := [...]struct {
		sku   string
		price int64 // cents
	}{{"TEA-1", 450}, {"CUP-9", 1200}, {"POT-3", 2500}}
	line := func(p, qty int) shopevents.LineItem {
		return shopevents.LineItem{Sku: products[p].sku, Quantity: int32(qty), UnitPrice: shopevents.Money{Amount: products[p].price, Currency: "EUR"}}
	}
	if n == 3 {
		return []shopevents.LineItem{line(2, 50)}
	}
	lines := []shopevents.LineItem{line(n%3, 1+n%4)}
	if n%2 == 1 {
		lines = append(lines, line((n+1)%3, 1))
	}
	return lines
}

func total(lines []shopevents.LineItem) int64 {
	var sum int64
	for _, l := range lines {
		sum += int64(l.Quantity) * l.UnitPrice.Amount
	}
	return sum
}

// errOutOfStock makes the shop roll an order back.
var errOutOfStock = errors.New("out of stock")

// shop places orders.
type shop struct {
	db     *bun.DB
	pub    *shopevents.Publisher
	log    *eventLog
	tracer trace.Tracer
}

// placeOrder places the n-th order in one transaction: the order row, its
// OrderPlaced event, and its stock reservations written in one statement
// with PublishBatch. When fail is set, the transaction fails at its end, as
// if the last reservation found no stock: the order row and the events
// roll back together. It returns the order id.
//
// The order is a span, "place order", as a request's would be: the
// events' publishes store its trace context with their outbox rows, so
// that the relay's send spans and the handlers' spans continue its trace.
func (s *shop) placeOrder(ctx context.Context, n int, fail bool) (uuid.UUID, error) {
	lines := basket(n)
	id := uuid.New()
	ctx, span := s.tracer.Start(ctx, spanPlaceOrder, trace.WithAttributes(attrOrderNumber.Int(n), attrOrderID.String(id.String())))
	defer span.End()
	placed := shopevents.OrderPlaced{
		OrderID:    id,
		CustomerID: uuid.New(),
		Status:     shopevents.OrderStatusPending,
		Lines:      lines,
		Total:      shopevents.Money{Amount: total(lines), Currency: "EUR"},
		ShippingAddress: shopevents.Address{
			Name: fmt.Sprintf("Customer %d", n), Street: "1 Main St", City: "Bern", PostalCode: "3000", CountryCode: "CH",
		},
		Labels:   map[string]string{"channel": "web"},
		PlacedAt: time.Now().UTC(),
	}
	reservations := make([]shopevents.Event, len(lines))
	for i, l := range lines {
		reservations[i] = shopevents.InventoryStockReserved{
			Sku: l.Sku, OrderID: id, Quantity: l.Quantity,
			WarehouseQuantities: map[string]int64{"bern-1": 100 - int64(l.Quantity)},
			ReservationTTL:      15 * time.Minute,
		}
	}
	// Every event of an order carries its id as a header, and the services
	// pass it on to the events they publish, so that the log can follow an
	// order and so can the summary.
	corr := eventgen.WithHeader(correlationHeader, id.String())
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		row := &order{ID: id.String(), Customer: placed.CustomerID.String(), Total: placed.Total.Amount, Currency: placed.Total.Currency}
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return err
		}
		if err := s.pub.PublishOrderPlaced(ctx, tx, placed, corr); err != nil {
			return err
		}
		if err := s.pub.PublishBatch(ctx, tx, reservations, corr); err != nil {
			return err
		}
		if fail {
			return errOutOfStock
		}
		return nil
	})
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	switch {
	case fail && errors.Is(err, errOutOfStock):
		s.log.printf("shop", "order %2d %s: %s, rolled back with its %d events", n, short(id), err, 1+len(reservations))
		return id, nil
	case err != nil:
		if ctx.Err() != nil {
			// A transaction whose context ends is rolled back by
			// database/sql, and its Commit may then report only "already
			// rolled back": name the reason first.
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return id, fmt.Errorf("place order %d: %w", n, err)
	}
	s.log.printf("shop", "order %2d %s: %s, OrderPlaced and %d inventory.stock-reserved committed", n, short(id), money(placed.Total), len(reservations))
	return id, nil
}

// short returns the first part of an id, enough to tell orders apart in the log.
func short(id uuid.UUID) string { return id.String()[:8] }

func money(m shopevents.Money) string {
	return fmt.Sprintf("%d.%02d %s", m.Amount/100, m.Amount%100, m.Currency)
}
