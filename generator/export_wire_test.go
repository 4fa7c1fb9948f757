package generator_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite" // the pure-Go "sqlite" driver

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// TestAsyncAPIHeadersMatchTheWire publishes events of the example through
// the runtime's outbox to the in-process broker, which keeps the headers
// as the runtime writes them, and checks each received message against its
// message in the exported AsyncAPI document: the headers validate against
// its headers schema, which names every header sent, and the payload
// against its payload schema.
func TestAsyncAPIHeadersMatchTheWire(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the outbox and a broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sqldb, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "shop.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	sqldb.SetMaxOpenConns(1)
	db := bun.NewDB(sqldb, sqlitedialect.New())
	defer db.Close()
	tr, err := transport.Open(ctx, "mem://", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := tr.Subscriber("contract-test")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Subscribe(ctx, shopevents.TopicOrders)
	if err != nil {
		t.Fatal(err)
	}
	relay := make(chan error, 1)
	go func() { relay <- ob.Run(ctx) }()
	defer func() {
		cancel()
		<-relay
	}()

	id := uuid.MustParse("5d2a0c1e-7f3b-4c4e-9b1a-2f6d8e0a4b7c")
	pub := shopevents.NewPublisher(ob)
	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return pub.PublishBatch(ctx, tx, []shopevents.Event{
			shopevents.OrderShipped{OrderID: id, Carrier: "DHL", ShippedAt: time.Now()},
			shopevents.OrderShipped{OrderID: id, Carrier: "UPS", ShippedAt: time.Now()},
			shopevents.LegacyOrderUpdated{OrderID: id, Status: shopevents.OrderStatusShipped}, // no key
		}, eventgen.WithHeader("x-tenant", "acme"))
	})
	if err != nil {
		t.Fatal(err)
	}

	compile, messages := asyncAPIMessages(t, filepath.Join("..", "examples", "events.yaml"))
	var types []string
	for range 3 {
		select {
		case msg := <-msgs:
			msg.Ack()
			name := msg.Metadata.Get("ce_type")
			types = append(types, name)
			headers := make(map[string]any)
			for k, v := range msg.Metadata {
				headers[k] = v
				if !slices.Contains(messages[name], k) && k != "x-tenant" && !strings.HasPrefix(k, "_watermill") {
					t.Errorf("%s: header %s is not in the AsyncAPI document", name, k)
				}
			}
			for _, part := range []struct {
				what string
				v    any
			}{{"headers", headers}, {"payload", unmarshal(t, msg.Payload)}} {
				if err := compile(name, part.what).Validate(part.v); err != nil {
					t.Errorf("%s: the %s sent do not validate: %v\n%v", name, part.what, err, part.v)
				}
			}
			if k := msg.Metadata.Get("ce_partitionkey"); k != "" && len(msg.Metadata.Get("ce_sequence")) != 19 {
				t.Errorf("%s: ce_sequence %q with key %q", name, msg.Metadata.Get("ce_sequence"), k)
			}
		case <-ctx.Done():
			t.Fatalf("received %q, then nothing", types)
		}
	}
	slices.Sort(types)
	if want := []string{"OrderShipped", "OrderShipped", "order.legacy-updated"}; !slices.Equal(types, want) {
		t.Errorf("received %q, want %q", types, want)
	}
}
