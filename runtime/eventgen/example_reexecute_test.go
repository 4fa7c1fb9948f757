package eventgen_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// A message whose handler keeps failing is failed once MaxRetries runs
// have failed. It stays in the inbox, where an operator lists it with
// Failed and, once the cause is fixed, runs it again with Reexecute.
func ExampleConsumer_Reexecute() {
	ctx, stop := context.WithCancel(context.Background())
	db, tr, closeAll := openShop(ctx)
	defer closeAll()
	ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	sub, err := tr.Subscriber("notifications")
	if err != nil {
		log.Fatal(err)
	}
	// Short retries, for the example: the first run and 3 quick retries
	// (the default LocalRetries), 1ms apart instead of 3s, 6s and 12s, and
	// no slow retries, which would wait at least a minute each.
	c, err := eventgen.NewConsumer(db, sub, eventgen.ConsumerOptions{
		Group:              "notifications",
		MaxRetries:         4,
		LocalRetryInterval: time.Millisecond,
		PollInterval:       10 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	var fixed atomic.Bool
	handled := make(chan string, 10)
	err = shopevents.RegisterOrderShippedHandler(c, handlerFunc(func(ctx context.Context, e shopevents.OrderShipped, m eventgen.Metadata) error {
		if !fixed.Load() {
			return errors.New("mail server refused the message")
		}
		handled <- fmt.Sprintf("handled %s, attempt %d", m.Name, m.Attempt)
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	run := runAll(ctx, ob.Run, c.Run)
	<-c.Subscribed()

	err = shopevents.NewPublisher(ob).PublishOrderShipped(ctx, db, shopevents.OrderShipped{
		OrderID: uuid.MustParse("5d2a0c1e-7f3b-4c4e-9b1a-2f6d8e0a4b7c"), Carrier: "DHL", ShippedAt: time.Now(),
	})
	if err != nil {
		log.Fatal(err)
	}

	var failed []eventgen.FailedMessage
	err = poll(func() (bool, error) {
		failed, err = c.Failed(ctx, 10)
		return len(failed) > 0, err
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range failed {
		fmt.Printf("failed: %s: %s\n", f.Name, f.Error)
	}

	fixed.Store(true) // the mail server is back
	n, err := c.Reexecute(ctx, failed[0].ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("re-executed:", n)
	fmt.Println(receive(handled))

	stop()
	if err := run(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// failed: OrderShipped: gave up after 4 attempts: mail server refused the message
	// re-executed: 1
	// handled OrderShipped, attempt 1
}
