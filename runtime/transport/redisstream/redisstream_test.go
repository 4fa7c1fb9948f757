package redisstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport/redisstream"
)

// claimIdle is the package's claim delay: an entry pending for this long
// is claimed by another consumer of its group.
const claimIdle = 30 * time.Second

func open(t *testing.T) (*redisstream.Broker, *redis.Client, string) {
	t.Helper()
	url := testenv.TransportURL(t, "redis")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := redisstream.Open(ctx, url, redisstream.Options{Logger: testenv.Logger(t)})
	if err != nil {
		testenv.Unavailable(t, "redis", err)
	}
	t.Cleanup(func() { b.Close() })
	topic := testenv.Topic(t, "close")
	t.Cleanup(func() { b.DeleteTopic(context.Background(), topic) })
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	t.Cleanup(func() { rc.Close() })
	return b, rc, topic
}

func subscribe(t *testing.T, b *redisstream.Broker, topic string) (message.Subscriber, <-chan *message.Message) {
	t.Helper()
	sub, err := b.Subscriber("billing")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return sub, ch
}

func receive(t *testing.T, ch <-chan *message.Message, within time.Duration) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(within):
		t.Fatalf("no message within %s", within)
		return nil
	}
}

// TestCloseAcksAndHandsBack acks a message and closes its subscriber at
// once, several times over, with more messages waiting. Each time the ack
// must have reached Redis before Close returned, and nothing else may be
// left pending where the group's other consumers would wait the claim
// delay for it: every entry still pending must be claimable at once.
func TestCloseAcksAndHandsBack(t *testing.T) {
	b, rc, topic := open(t)
	ctx := context.Background()
	const rounds = 10
	for i := range rounds + 2 {
		if err := b.Publisher().Publish(topic, message.NewMessage(string(rune('a'+i))+"-msg", []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	acked := make(map[string]bool)
	for range rounds {
		sub, ch := subscribe(t, b, topic)
		m := receive(t, ch, 10*time.Second)
		m.Ack()
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		acked[m.UUID] = true
		pending, err := rc.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: topic, Group: "billing", Start: "-", End: "+", Count: 100,
		}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pending {
			xs, err := rc.XRange(ctx, topic, p.ID, p.ID).Result()
			if err != nil || len(xs) != 1 {
				t.Fatalf("read pending entry %s: %v", p.ID, err)
			}
			id, _ := xs[0].Values["_watermill_message_uuid"].(string)
			if acked[id] {
				t.Fatalf("message %s was acked before Close, but its entry is still pending", id)
			}
			if p.Idle < claimIdle {
				t.Fatalf("entry %s (message %s) is pending after Close with idle time %s: the group waits until %s for it", p.ID, id, p.Idle, claimIdle)
			}
		}
	}
}

// TestCloseHandsBackAtOnce closes a subscriber that holds a message
// unacked while another subscriber of the group runs: the other receives
// the message within seconds, not after the 30-second claim delay.
func TestCloseHandsBackAtOnce(t *testing.T) {
	b, _, topic := open(t)
	first, ch := subscribe(t, b, topic)
	if err := b.Publisher().Publish(topic, message.NewMessage("held", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	held := receive(t, ch, 10*time.Second)
	_, other := subscribe(t, b, topic)
	time.Sleep(200 * time.Millisecond) // the other subscription's first claim pass is over
	start := time.Now()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	m := receive(t, other, 10*time.Second)
	if m.UUID != held.UUID {
		t.Fatalf("got %s, want %s", m.UUID, held.UUID)
	}
	m.Ack()
	t.Logf("redelivered %s after Close", time.Since(start).Round(10*time.Millisecond))
}
