package main

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// The two consumers of the spec. Each handler writes its effect through
// eventgen.Tx(ctx), the inbox transaction, so the effect commits together
// with the message's "handled" mark: once per group, however often the
// broker delivers the message. The events a handler publishes go through
// the outbox in that same transaction.
//
// Each handler starts a span of its own with the ctx it is given, which
// carries eventgen's process span: its work, and the events it publishes,
// continue the trace of the order.

// The compiler checks that each service handles every event its consumer
// lists in the spec.
var (
	_ shopevents.BillingHandler  = (*billing)(nil)
	_ shopevents.ShippingHandler = (*shipping)(nil)
)

// correlationHeader carries the id of the order an event belongs to.
const correlationHeader = "correlation_id"

// passOn returns the publish option that copies m's correlation id onto an
// event published in reaction to it.
func passOn(m eventgen.Metadata) eventgen.PublishOption {
	return eventgen.WithHeader(correlationHeader, m.Headers[correlationHeader])
}

// billing invoices orders and captures their payment.
type billing struct {
	pub    *shopevents.Publisher
	log    *eventLog
	tracer trace.Tracer
}

func (b *billing) HandleOrderPlaced(ctx context.Context, e shopevents.OrderPlaced, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, b.tracer, "invoice order", e.OrderID)
	defer endSpan(span, &err)
	tx := eventgen.Tx(ctx)
	if err := b.write(ctx, e.OrderID.String(), m, "invoiced", e.Total.Amount); err != nil {
		return err
	}
	if e.Total.Amount > creditLimit {
		err := b.pub.PublishOrderCancelled(ctx, tx, shopevents.OrderCancelled{
			OrderID: e.OrderID, Reason: "payment declined: over the credit limit", CancelledAt: time.Now().UTC(),
		}, passOn(m))
		b.log.handled(m, err, "%s is over the credit limit: declined → OrderCancelled", money(e.Total))
		return err
	}
	err = b.pub.PublishPaymentCaptured(ctx, tx, shopevents.PaymentCaptured{
		OrderID: e.OrderID, PaymentID: "pay_" + e.OrderID.String()[:8], Method: shopevents.PaymentMethodCard,
		Amount: e.Total, CapturedAt: time.Now().UTC(),
	}, passOn(m))
	b.log.handled(m, err, "invoiced and captured %s → PaymentCaptured", money(e.Total))
	return err
}

func (b *billing) HandlePaymentCaptured(ctx context.Context, e shopevents.PaymentCaptured, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, b.tracer, "book payment", e.OrderID)
	defer endSpan(span, &err)
	err = b.write(ctx, e.OrderID.String(), m, "paid", e.Amount.Amount)
	b.log.handled(m, err, "booked payment %s", e.PaymentID)
	return err
}

func (b *billing) HandleOrderCancelled(ctx context.Context, e shopevents.OrderCancelled, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, b.tracer, "close invoice", e.OrderID)
	defer endSpan(span, &err)
	var refund int64
	if e.Refund != nil {
		refund = e.Refund.Amount
	}
	err = b.write(ctx, e.OrderID.String(), m, "cancelled", refund)
	b.log.handled(m, err, "closed the invoice (%s)", e.Reason)
	return err
}

func (b *billing) write(ctx context.Context, orderID string, m eventgen.Metadata, entry string, amount int64) error {
	row := &ledgerEntry{OrderID: orderID, effect: effectOf(m), Entry: entry, Amount: amount}
	if _, err := eventgen.Tx(ctx).NewInsert().Model(row).Exec(ctx); err != nil {
		return fmt.Errorf("billing: write %s entry: %w", entry, err)
	}
	return nil
}

// shipping reserves stock and ships paid orders.
type shipping struct {
	pub    *shopevents.Publisher
	log    *eventLog
	tracer trace.Tracer
}

func (s *shipping) HandleInventoryStockReserved(ctx context.Context, e shopevents.InventoryStockReserved, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, s.tracer, "reserve stock", e.OrderID)
	defer endSpan(span, &err)
	err = s.write(ctx, e.OrderID.String(), m, "reserved "+e.Sku)
	s.log.handled(m, err, "reserved %d × %s", e.Quantity, e.Sku)
	return err
}

func (s *shipping) HandlePaymentCaptured(ctx context.Context, e shopevents.PaymentCaptured, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, s.tracer, "ship order", e.OrderID)
	defer endSpan(span, &err)
	if err := s.write(ctx, e.OrderID.String(), m, "shipped"); err != nil {
		return err
	}
	err = s.pub.PublishOrderShipped(ctx, eventgen.Tx(ctx), shopevents.OrderShipped{
		OrderID: e.OrderID, Carrier: "Swiss Post", ShippedAt: time.Now().UTC(),
	}, passOn(m))
	s.log.handled(m, err, "shipped → OrderShipped")
	return err
}

func (s *shipping) HandleOrderCancelled(ctx context.Context, e shopevents.OrderCancelled, m eventgen.Metadata) (err error) {
	ctx, span := startSpan(ctx, s.tracer, "release stock", e.OrderID)
	defer endSpan(span, &err)
	err = s.write(ctx, e.OrderID.String(), m, "released")
	s.log.handled(m, err, "released the reserved stock")
	return err
}

func (s *shipping) write(ctx context.Context, orderID string, m eventgen.Metadata, entry string) error {
	row := &shipment{OrderID: orderID, effect: effectOf(m), Entry: entry}
	if _, err := eventgen.Tx(ctx).NewInsert().Model(row).Exec(ctx); err != nil {
		return fmt.Errorf("shipping: write %q: %w", entry, err)
	}
	return nil
}
