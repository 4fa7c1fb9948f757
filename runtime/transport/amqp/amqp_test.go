package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport/amqp"
)

// TestPublishWaitsForConfirm makes RabbitMQ refuse a message (a group queue
// that holds one message and rejects more) and checks that Publish reports
// it: without publisher confirms Publish would return nil and the message
// would be lost.
func TestPublishWaitsForConfirm(t *testing.T) {
	url := testenv.TransportURL(t, "amqp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := amqp.Open(ctx, url, amqp.Options{})
	if err != nil {
		testenv.Unavailable(t, "amqp", err)
	}
	defer b.Close()
	topic := testenv.Topic(t, "confirm")
	defer b.DeleteTopic(context.Background(), topic, "full")

	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := amqp.QueueName(topic, "full")
	if err := ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "", topic, false, nil); err != nil {
		t.Fatal(err)
	}

	if err := b.Publisher().Publish(topic, message.NewMessage("first", nil)); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := b.Publisher().Publish(topic, message.NewMessage("second", nil)); err == nil {
		t.Fatal("Publish returned nil for a message RabbitMQ rejected")
	} else {
		t.Logf("rejected as expected: %v", err)
	}
}
