package amqp_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

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

// proxied returns rawURL pointed at a fault proxy in front of its broker,
// with heartbeats every second, so that a frozen link is noticed in
// seconds rather than tens of them.
func proxied(t *testing.T, rawURL string) (*testenv.Proxy, string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	q := u.Query()
	q.Set("heartbeat", "1")
	u.RawQuery = q.Encode()
	return p, u.String()
}

// within returns a message whose publish must end within d.
func within(t *testing.T, id string, d time.Duration) *message.Message {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	msg := message.NewMessage(id, []byte(id))
	msg.SetContext(ctx)
	return msg
}

// TestPublisherRecoversAfterFreeze freezes the link to RabbitMQ for longer
// than the heartbeat timeout, as a process stopped with SIGSTOP sees it:
// publishes started meanwhile must end by their deadline, and once the
// link is back, publishing must work again, on more channels at once than
// the publisher keeps, without reopening the Broker.
func TestPublisherRecoversAfterFreeze(t *testing.T) {
	direct := testenv.TransportURL(t, "amqp")
	proxy, url := proxied(t, direct)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := amqp.Open(ctx, url, amqp.Options{Logger: testenv.Logger(t)})
	if err != nil {
		testenv.Unavailable(t, "amqp", err)
	}
	defer b.Close()
	// The subscriber reads straight from RabbitMQ: this test is about the
	// publisher.
	reader, err := amqp.Open(ctx, direct, amqp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	topic := testenv.Topic(t, "freeze")
	defer reader.DeleteTopic(context.Background(), topic, "g")
	sub, err := reader.Subscriber("g")
	if err != nil {
		t.Fatal(err)
	}
	got, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish(topic, within(t, "before", 10*time.Second)); err != nil {
		t.Fatalf("publish before the freeze: %v", err)
	}

	proxy.Freeze()
	const concurrent = 20 // more than the publisher's channels
	var wg sync.WaitGroup
	frozenErrs := make(chan error, concurrent)
	began := time.Now()
	for i := range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frozenErrs <- b.Publisher().Publish(topic, within(t, fmt.Sprintf("frozen-%d", i), 2*time.Second))
		}()
	}
	waitWithin(t, &wg, 10*time.Second, "publishes during the freeze")
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("publishes during the freeze took %s to return; their deadline was 2s", d)
	}
	close(frozenErrs)
	for err := range frozenErrs {
		if err == nil {
			t.Error("a publish through a frozen link returned nil")
		}
	}
	time.Sleep(2 * time.Second) // past two missed heartbeats: RabbitMQ drops the connection
	proxy.Thaw()

	thawed := time.Now()
	var (
		mu        sync.Mutex
		published = map[string]bool{"before": true}
		firstOK   time.Duration
	)
	for i := range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("after-%d", i)
			for time.Since(thawed) < 15*time.Second {
				if err := b.Publisher().Publish(topic, within(t, id, 2*time.Second)); err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				mu.Lock()
				published[id] = true
				if firstOK == 0 {
					firstOK = time.Since(thawed)
				}
				mu.Unlock()
				return
			}
		}()
	}
	waitWithin(t, &wg, 30*time.Second, "publishes after the freeze")
	if len(published) != concurrent+1 {
		t.Fatalf("after the freeze %d of %d publishes succeeded within 15s", len(published)-1, concurrent)
	}
	t.Logf("first publish after the freeze confirmed %s after the link came back", firstOK.Round(time.Millisecond))
	for len(published) > 0 {
		select {
		case msg := <-got:
			delete(published, msg.UUID)
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("%d confirmed messages never arrived: %v", len(published), published)
		}
	}
	closed := time.Now()
	if err := b.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if d := time.Since(closed); d > 3*time.Second {
		t.Errorf("Close took %s", d)
	}
}

// waitWithin waits for wg, failing t at once if that takes longer than d:
// a publisher that blocks for good must fail the test, not hang it.
func waitWithin(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
	}
}

// TestCloseInEveryState closes a Broker in each state it can be in: never
// opened, open with a live subscription, after the broker dropped its
// connections, and closed already. None may panic or hang, or leave a
// goroutine behind.
func TestCloseInEveryState(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	var zero amqp.Broker
	if err := zero.Close(); err != nil {
		t.Errorf("zero Broker: %v", err)
	}
	var none *amqp.Broker
	if err := none.Close(); err != nil {
		t.Errorf("nil Broker: %v", err)
	}
	if b, err := amqp.Open(context.Background(), "amqp://guest:guest@127.0.0.1:1/", amqp.Options{}); err == nil {
		t.Error("Open of a closed port succeeded")
	} else if err := b.Close(); err != nil {
		t.Errorf("Close of the nil Broker a failed Open returned: %v", err)
	}

	proxy, url := proxied(t, testenv.TransportURL(t, "amqp"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := amqp.Open(ctx, url, amqp.Options{Logger: testenv.Logger(t)})
	if err != nil {
		testenv.Unavailable(t, "amqp", err)
	}
	topic := testenv.Topic(t, "close")
	defer func() {
		if reader, err := amqp.Open(context.Background(), testenv.TransportURL(t, "amqp"), amqp.Options{}); err == nil {
			_ = reader.DeleteTopic(context.Background(), topic, "g")
			reader.Close()
		}
	}()
	sub, err := b.Subscriber("g")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish(topic, within(t, "m", 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	proxy.Cut() // the broker side is gone: a half-closed Broker
	began := time.Now()
	if err := b.Close(); err != nil {
		t.Logf("Close after the connections were cut: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("Close after the connections were cut took %s", d)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
