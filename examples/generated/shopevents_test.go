package shopevents_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// The generated events implement the runtime's interfaces.
var (
	_ shopevents.Event = shopevents.OrderPlaced{}
	_ shopevents.Event = shopevents.InventoryStockReserved{}
	_ eventgen.Keyed   = shopevents.OrderPlaced{}
	_ eventgen.Keyed   = shopevents.InventoryStockReserved{}

	_ shopevents.BillingHandler  = (*billing)(nil)
	_ shopevents.ShippingHandler = shipping{}
)

var placedAt = time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.UTC)

func validOrder() shopevents.OrderPlaced {
	note := "leave at the door"
	return shopevents.OrderPlaced{
		OrderID:    uuid.MustParse("0195a1b2-0000-7000-8000-000000000001"),
		CustomerID: uuid.MustParse("0195a1b2-0000-7000-8000-000000000002"),
		Status:     shopevents.OrderStatusPending,
		Lines: []shopevents.LineItem{
			{Sku: "TEA-1", Quantity: 2, UnitPrice: shopevents.Money{Amount: 450, Currency: "EUR"}},
			{Sku: "CUP-9", Quantity: 1, UnitPrice: shopevents.Money{Amount: 1200, Currency: "EUR"}},
		},
		Total:           shopevents.Money{Amount: 2100, Currency: "EUR"},
		ShippingAddress: shopevents.Address{Name: "Ada", Street: "1 Main St", City: "Bern", PostalCode: "3000", CountryCode: "CH"},
		Note:            &note,
		Labels:          map[string]string{"channel": "web"},
		PlacedAt:        placedAt,
	}
}

func TestJSONRoundTrip(t *testing.T) {
	e := validOrder()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"order_id":"0195a1b2-0000-7000-8000-000000000001"`, `"status":"pending"`, `"unit_price":{"amount":450,"currency":"EUR"}`,
		`"shipping_address":{"name":"Ada"`, `"note":"leave at the door"`, `"placed_at":"2025-03-14T15:09:26.535Z"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s:\n%s", key, b)
		}
	}
	var got shopevents.OrderPlaced
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Errorf("round trip changed the event:\n got %+v\nwant %+v", got, e)
	}

	// Optional fields are left out when absent; required ones are not.
	e.Note = nil
	b, _ = json.Marshal(e)
	if strings.Contains(string(b), "note") {
		t.Errorf("absent optional field encoded: %s", b)
	}
	b, _ = json.Marshal(shopevents.PaymentCaptured{})
	if strings.Contains(string(b), "provider_data") || !strings.Contains(string(b), `"payment_id":""`) {
		t.Errorf("zero PaymentCaptured encodes as %s", b)
	}
}

func TestEnums(t *testing.T) {
	if !shopevents.OrderStatusShipped.Valid() || shopevents.OrderStatus("lost").Valid() || shopevents.OrderStatus("").Valid() {
		t.Error("OrderStatus.Valid is wrong")
	}
	if shopevents.PaymentMethodBankTransfer != "bank_transfer" {
		t.Errorf("PaymentMethodBankTransfer = %q", shopevents.PaymentMethodBankTransfer)
	}
	var e shopevents.OrderPlaced
	err := json.Unmarshal([]byte(`{"status":"lost"}`), &e)
	if err == nil || !strings.Contains(err.Error(), `unknown OrderStatus value "lost"`) {
		t.Errorf("decoding an unknown enum value: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"status":3}`), &e); err == nil {
		t.Error("decoding a number as an enum succeeded")
	}
	var s shopevents.OrderStatus
	if err := json.Unmarshal([]byte(`"paid"`), &s); err != nil || s != shopevents.OrderStatusPaid {
		t.Errorf("decoding paid = %q, %v", s, err)
	}
}

func TestValidate(t *testing.T) {
	e := validOrder()
	if err := e.Validate(); err != nil {
		t.Fatalf("a valid event: %v", err)
	}
	e.OrderID = uuid.Nil
	e.Status = "lost"
	e.Lines[1].Sku = ""
	e.Lines[1].UnitPrice.Currency = ""
	e.ShippingAddress.City = ""
	e.Note = nil
	e.PlacedAt = time.Time{}
	err := e.Validate()
	want := []string{
		"order_id is required",
		`status: unknown value "lost"`,
		"lines[1].sku is required",
		"lines[1].unit_price.currency is required",
		"shipping_address.city is required",
		"placed_at is required",
	}
	if got := strings.Split(errorString(err), "\n"); !slices.Equal(got, want) {
		t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Optional structs are validated when present.
	c := shopevents.OrderCancelled{OrderID: uuid.New(), Reason: "changed mind", CancelledAt: placedAt}
	if err := c.Validate(); err != nil {
		t.Errorf("without refund: %v", err)
	}
	c.Refund = &shopevents.Money{Amount: 100}
	if err := c.Validate(); errorString(err) != "refund.currency is required" {
		t.Errorf("with an invalid refund: %v", err)
	}
	// Shared types validate on their own, too.
	if err := (shopevents.Money{}).Validate(); errorString(err) != "currency is required" {
		t.Errorf("Money{}.Validate() = %v", err)
	}
}

func errorString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestEventMethods(t *testing.T) {
	e := validOrder()
	if e.EventName() != "OrderPlaced" || e.EventVersion() != 1 || e.Topic() != shopevents.TopicOrders || shopevents.TopicOrders != "shop.orders" {
		t.Errorf("OrderPlaced: %q v%d on %q", e.EventName(), e.EventVersion(), e.Topic())
	}
	if e.Key() != "0195a1b2-0000-7000-8000-000000000001" {
		t.Errorf("Key = %q", e.Key())
	}
	r := shopevents.InventoryStockReserved{Sku: "TEA-1"}
	if r.EventName() != "inventory.stock-reserved" || r.Key() != "TEA-1" || r.Topic() != "shop.inventory" {
		t.Errorf("InventoryStockReserved: %q key %q on %q", r.EventName(), r.Key(), r.Topic())
	}
	if (shopevents.OrderCancelled{}).EventVersion() != 2 {
		t.Error("OrderCancelled is version 2")
	}
	if shopevents.Source != "shop" || shopevents.GroupBilling != "billing" || shopevents.GroupShipping != "shipping" {
		t.Error("constants are wrong")
	}
}

func TestCatalog(t *testing.T) {
	c := shopevents.Catalog()
	var names []string
	for _, e := range c {
		names = append(names, e.Name)
	}
	want := []string{"OrderCancelled", "OrderPlaced", "OrderShipped", "PaymentCaptured", "inventory.stock-reserved", "order.legacy-updated"}
	if !slices.Equal(names, want) {
		t.Fatalf("Catalog names = %v, want %v", names, want)
	}
	placed := c[1]
	if placed.GoName != "OrderPlaced" || placed.Version != 1 || placed.Topic != "shop.orders" || placed.Key != "order_id" || placed.Description != "A customer placed an order." {
		t.Errorf("OrderPlaced info = %+v", placed)
	}
	if got := placed.Fields[3]; got != (eventgen.FieldInfo{Name: "lines", Type: "[]LineItem"}) {
		t.Errorf("lines = %+v", got)
	}
	if got := placed.Fields[6]; got != (eventgen.FieldInfo{Name: "note", Type: "string", Optional: true, Description: "Free text the customer entered at checkout."}) {
		t.Errorf("note = %+v", got)
	}
	if c[5].GoName != "LegacyOrderUpdated" || c[5].Key != "" {
		t.Errorf("legacy event info = %+v", c[5])
	}
	// Every call returns a new slice.
	c[0].Name = "changed"
	c[1].Fields[0].Name = "changed"
	if again := shopevents.Catalog(); again[0].Name != "OrderCancelled" || again[1].Fields[0].Name != "order_id" {
		t.Error("Catalog returned shared data")
	}
}

// billing records what it handles.
type billing struct {
	got chan received
}

type received struct {
	event eventgen.Event
	meta  eventgen.Metadata
}

func (b *billing) HandleOrderPlaced(ctx context.Context, e shopevents.OrderPlaced, m eventgen.Metadata) error {
	b.got <- received{e, m}
	return nil
}

func (b *billing) HandlePaymentCaptured(ctx context.Context, e shopevents.PaymentCaptured, m eventgen.Metadata) error {
	b.got <- received{e, m}
	return nil
}

func (b *billing) HandleOrderCancelled(ctx context.Context, e shopevents.OrderCancelled, m eventgen.Metadata) error {
	b.got <- received{e, m}
	return nil
}

type shipping struct{}

func (shipping) HandlePaymentCaptured(context.Context, shopevents.PaymentCaptured, eventgen.Metadata) error {
	return nil
}

func (shipping) HandleInventoryStockReserved(context.Context, shopevents.InventoryStockReserved, eventgen.Metadata) error {
	return nil
}

func (shipping) HandleOrderCancelled(context.Context, shopevents.OrderCancelled, eventgen.Metadata) error {
	return nil
}

// TestRegisterChecksTheGroup checks that a generated Register function
// refuses a Consumer of another group before registering anything, so that
// the right group's handlers can still be registered on it.
func TestRegisterChecksTheGroup(t *testing.T) {
	c, err := eventgen.NewConsumer(openSQLite(t), nil, eventgen.ConsumerOptions{Group: shopevents.GroupShipping})
	if err != nil {
		t.Fatal(err)
	}
	err = shopevents.RegisterBilling(c, &billing{})
	if want := `shopevents: RegisterBilling: consumer is for group "shipping", not "billing"`; err == nil || err.Error() != want {
		t.Errorf("RegisterBilling on a shipping consumer = %v, want %q", err, want)
	}
	if err := shopevents.RegisterBilling(nil, &billing{}); err == nil || !strings.Contains(err.Error(), "nil consumer") {
		t.Errorf("RegisterBilling(nil) = %v, want a nil consumer error", err)
	}
	// Billing and shipping both handle PaymentCaptured and OrderCancelled:
	// had RegisterBilling registered them, this would fail.
	if err := shopevents.RegisterShipping(c, shipping{}); err != nil {
		t.Errorf("RegisterShipping after the refused RegisterBilling: %v", err)
	}
}

// TestPublishAndConsume sends events through the real runtime: the
// generated Publisher writes them in a transaction to an outbox in SQLite,
// the relay publishes them to an in-process broker, and a consumer of the
// billing group hands them to the handlers registered by RegisterBilling.
func TestPublishAndConsume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := openSQLite(t)
	broker := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer broker.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	outbox, err := eventgen.NewOutbox(db, broker, eventgen.OutboxOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := eventgen.NewConsumer(db, broker, eventgen.ConsumerOptions{Group: shopevents.GroupBilling, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := consumer.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	h := &billing{got: make(chan received, 10)}
	if err := shopevents.RegisterBilling(consumer, h); err != nil {
		t.Fatal(err)
	}
	if err := shopevents.RegisterBilling(consumer, nil); err == nil {
		t.Error("RegisterBilling accepted a nil handler")
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- outbox.Run(runCtx) }()
	go func() { done <- consumer.Run(runCtx) }()

	pub := shopevents.NewPublisher(outbox)
	placed := validOrder()
	captured := shopevents.PaymentCaptured{
		OrderID: placed.OrderID, PaymentID: "pay_1", Method: shopevents.PaymentMethodCard,
		Amount: placed.Total, CapturedAt: placedAt, ProviderData: json.RawMessage(`{"auth":"ok"}`),
	}
	cancelled := shopevents.OrderCancelled{OrderID: placed.OrderID, Reason: "duplicate", CancelledAt: placedAt}
	shipped := shopevents.OrderShipped{OrderID: placed.OrderID, Carrier: "post", ShippedAt: placedAt} // billing does not handle it

	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := pub.PublishOrderPlaced(ctx, tx, placed, eventgen.WithHeader("trace", "t1")); err != nil {
			return err
		}
		return pub.PublishBatch(ctx, tx, []shopevents.Event{captured, cancelled, shipped})
	})
	if err != nil {
		t.Fatal(err)
	}
	// An invalid event is refused before anything is written.
	bad := placed
	bad.Status = "lost"
	if err := pub.PublishBatch(ctx, db, []shopevents.Event{captured, bad}); err == nil || !strings.Contains(err.Error(), `status: unknown value "lost"`) {
		t.Errorf("publishing an invalid event: %v", err)
	}

	got := make(map[string]received)
	for len(got) < 3 {
		select {
		case r := <-h.got:
			got[r.event.EventName()] = r
		case err := <-done:
			t.Fatalf("runtime stopped: %v", err)
		case <-ctx.Done():
			t.Fatalf("handled %d of 3 events before the deadline", len(got))
		}
	}
	for _, sent := range []eventgen.Event{placed, captured, cancelled} {
		r := got[sent.EventName()]
		if !reflect.DeepEqual(r.event, sent) {
			t.Errorf("%s: handled %+v, sent %+v", sent.EventName(), r.event, sent)
		}
		m := r.meta
		if m.Name != sent.EventName() || m.Version != sent.EventVersion() || m.Topic != sent.Topic() ||
			m.Source != shopevents.Source || m.Group != shopevents.GroupBilling || m.Key != placed.OrderID.String() || m.ID == "" {
			t.Errorf("%s: metadata %+v", sent.EventName(), m)
		}
	}
	if h := got["OrderPlaced"].meta.Headers["trace"]; h != "t1" {
		t.Errorf("header trace = %q", h)
	}

	stop()
	for range 2 {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}
}

func openSQLite(t *testing.T) *bun.DB {
	t.Helper()
	dsn := "file:" + filepath.Join(t.TempDir(), "shop.db") + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := bun.NewDB(sqldb, sqlitedialect.New())
	t.Cleanup(func() { db.Close() })
	return db
}
