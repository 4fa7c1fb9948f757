package transport_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/transport"
	"github.com/eventgen/eventgen/runtime/transport/amqp"
	"github.com/eventgen/eventgen/runtime/transport/mem"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
	"github.com/eventgen/eventgen/runtime/transport/redisstream"
	"github.com/eventgen/eventgen/runtime/transport/sqlbroker"
)

// Every broker package's Subscriber returns transport.Subscriber, whose
// method set has SubscribeInitialize.
var (
	_ func(*transport.Transport, string) (transport.Subscriber, error) = (*transport.Transport).Subscriber
	_ func(*mem.Broker, string) (transport.Subscriber, error)          = (*mem.Broker).Subscriber
	_ func(*amqp.Broker, string) (transport.Subscriber, error)         = (*amqp.Broker).Subscriber
	_ func(*natsjs.Broker, string) (transport.Subscriber, error)       = (*natsjs.Broker).Subscriber
	_ func(*redisstream.Broker, string) (transport.Subscriber, error)  = (*redisstream.Broker).Subscriber
	_ func(*sqlbroker.Broker, string) (transport.Subscriber, error)    = (*sqlbroker.Broker).Subscriber
)

// TestSubscriberAssignsToMessageSubscriber checks that code which keeps the
// result of Subscriber in a message.Subscriber, as it had to before, still
// compiles and works.
func TestSubscriberAssignsToMessageSubscriber(t *testing.T) {
	tr, err := transport.Open(context.Background(), "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var sub message.Subscriber
	sub, err = tr.Subscriber("billing")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}
