package transport_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/transport"
)

// An empty URL opens the in-process transport; "amqp://guest:guest@host/",
// "nats://host:4222", "redis://host:6379/0" or a PostgreSQL or MySQL URL
// open a broker with the same code.
func ExampleOpen() {
	ctx := context.Background()
	t, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()

	// One replica of consumer group billing.
	sub, err := t.Subscriber("billing")
	if err != nil {
		log.Fatal(err)
	}
	// Create the group's subscription before publishing, so that the group
	// gets what is published from now on (on mem and AMQP it would not
	// otherwise). No type assertion is needed.
	if err := sub.SubscribeInitialize("shop.orders"); err != nil {
		log.Fatal(err)
	}

	m := message.NewMessage("0b3c7e5e-8d5c-4bb0-9d1a-3f2f0d4b8f10", []byte(`{"order_id":"42"}`))
	m.Metadata.Set("ce_type", "OrderPlaced")
	if err := t.Publisher().Publish("shop.orders", m); err != nil {
		log.Fatal(err)
	}

	msgs, err := sub.Subscribe(ctx, "shop.orders")
	if err != nil {
		log.Fatal(err)
	}

	got := <-msgs
	fmt.Println(got.UUID, got.Metadata.Get("ce_type"), string(got.Payload))
	got.Ack()
	// Output: 0b3c7e5e-8d5c-4bb0-9d1a-3f2f0d4b8f10 OrderPlaced {"order_id":"42"}
}
