package natsjs_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
)

// TestPublishWaitsForPubAck gives a topic a stream that stores one message
// and refuses more, and checks that Publish reports the refusal (it waits
// for JetStream's PubAck), and that a retried publish of the same UUID is
// stored once (Nats-Msg-Id).
func TestPublishWaitsForPubAck(t *testing.T) {
	url := testenv.TransportURL(t, "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsjs.Open(ctx, url, natsjs.Options{})
	if err != nil {
		testenv.Unavailable(t, "nats", err)
	}
	defer b.Close()
	topic := testenv.Topic(t, "puback")
	defer b.DeleteTopic(context.Background(), topic)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: natsjs.StreamName(topic), Subjects: []string{topic},
		MaxMsgs: 1, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}

	pub := b.Publisher()
	if err := pub.Publish(topic, message.NewMessage("first", nil)); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := pub.Publish(topic, message.NewMessage("first", nil)); err != nil {
		t.Fatalf("retried publish of the same UUID: %v (want it taken as a duplicate)", err)
	}
	if err := pub.Publish(topic, message.NewMessage("second", nil)); err == nil {
		t.Fatal("Publish returned nil for a message JetStream refused")
	} else {
		t.Logf("refused as expected: %v", err)
	}
	st, err := js.Stream(ctx, natsjs.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}
