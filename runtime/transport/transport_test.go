package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
)

// wait bounds every wait for a message; a healthy broker on loopback
// delivers in milliseconds.
const wait = 30 * time.Second

// TestConformance runs the same behaviour against every transport the
// environment offers.
func TestConformance(t *testing.T) {
	cases := append(testenv.Transports(t), testenv.SQLTransports(t)...)
	tests := []struct {
		name string
		run  func(t *testing.T, tc testenv.TransportCase)
	}{
		{"DeliversUUIDPayloadAndMetadata", testDelivers},
		{"EveryGroupGetsEveryMessage", testEveryGroup},
		{"ReplicasOfAGroupShare", testReplicasShare},
		{"SubscriptionsOfASubscriberCompete", testSubscriptionsCompete},
		{"NackRedelivers", testNackRedelivers},
		{"GroupOutlivesItsSubscribers", testGroupOutlivesSubscribers},
		{"SubscribeInitializeCreatesTheGroup", testSubscribeInitialize},
		{"UnackedReturnsWhenSubscriberStops", testUnackedReturns},
		{"MessageContextEnds", testMessageContextEnds},
		{"CloseReleasesEverything", testCloseReleases},
		{"CloseWhileTheBrokerIsFrozen", testCloseWhileFrozen},
		{"WrongPasswordNotShown", testWrongPasswordNotShown},
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					// Registered first, so it runs after the transport's Close.
					opts := []goleak.Option{goleak.IgnoreCurrent()}
					if tc.Name == "nats" && tt.name == "CloseWhileTheBrokerIsFrozen" {
						// nats.go's pull iterator, once drained, returns
						// from Next only when the server confirms the
						// drain, which never happens once the connection
						// is closed first; Close stops waiting for it.
						opts = append(opts, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*pullSubscription).Next"))
					}
					t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
					tt.run(t, tc)
				})
			}
		})
	}
}

// setup opens a transport and a topic that is deleted at cleanup.
func setup(t *testing.T, tc testenv.TransportCase, groups ...string) (*transport.Transport, string) {
	t.Helper()
	tr := tc.Open(t)
	topic := testenv.Topic(t, strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:]))
	testenv.DeleteTopicAtCleanup(t, tr, topic, groups...)
	return tr, topic
}

func subscribe(t *testing.T, tr *transport.Transport, group, topic string) (message.Subscriber, <-chan *message.Message) {
	t.Helper()
	sub, err := tr.Subscriber(group)
	if err != nil {
		t.Fatalf("Subscriber(%q): %v", group, err)
	}
	t.Cleanup(func() { sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%s) in %s: %v", topic, group, err)
	}
	return sub, ch
}

// newMessages returns n messages with distinct UUIDs, payloads and the
// CloudEvents-style metadata eventgen sends.
func newMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		id := uuid.NewString()
		m := message.NewMessage(id, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		m.Metadata.Set("ce_id", id)
		m.Metadata.Set("ce_type", "OrderPlaced")
		m.Metadata.Set("ce_source", "shop")
		m.Metadata.Set("ce_specversion", "1.0")
		m.Metadata.Set("ce_partitionkey", fmt.Sprintf("order-%d", i%3))
		m.Metadata.Set("content-type", "application/json")
		m.Metadata.Set("X-Mixed-Case", "Value With Spaces & ünïcode")
		msgs[i] = m
	}
	return msgs
}

// publish publishes msgs, the first half in one call and the rest one by
// one, in a goroutine of its own, as a relay does beside the consumers (on
// MySQL a subscriber holding a batch makes publishes to its topic wait).
// The test waits for it at cleanup.
func publish(t *testing.T, tr *transport.Transport, topic string, msgs []*message.Message) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		half := len(msgs) / 2
		if err := tr.Publisher().Publish(topic, msgs[:half]...); err != nil {
			t.Errorf("publish: %v", err)
			return
		}
		for _, m := range msgs[half:] {
			if err := tr.Publisher().Publish(topic, m); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}()
}

// publishNow publishes msgs and returns when the broker has them.
func publishNow(t *testing.T, tr *transport.Transport, topic string, msgs []*message.Message) {
	t.Helper()
	if err := tr.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	return nextWithin(t, ch, wait)
}

func nextWithin(t *testing.T, ch <-chan *message.Message, d time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed early")
		}
		return m
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
		return nil
	}
}

// checkSame fails unless got carries want's UUID, payload and metadata.
// Keys a broker adds for itself (prefixed _watermill_) are ignored.
func checkSame(t *testing.T, want, got *message.Message) {
	t.Helper()
	if got.UUID != want.UUID {
		t.Errorf("UUID = %q, want %q", got.UUID, want.UUID)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("message %s: payload = %q, want %q", want.UUID, got.Payload, want.Payload)
	}
	md := maps.Clone(got.Metadata)
	maps.DeleteFunc(md, func(k, _ string) bool { return strings.HasPrefix(k, "_watermill_") })
	if !maps.Equal(md, map[string]string(want.Metadata)) {
		t.Errorf("message %s: metadata = %v, want %v", want.UUID, md, want.Metadata)
	}
}

// receiveAll acks messages from ch until it has every one of want.
func receiveAll(t *testing.T, ch <-chan *message.Message, want []*message.Message) {
	t.Helper()
	byID := make(map[string]*message.Message, len(want))
	for _, m := range want {
		byID[m.UUID] = m
	}
	seen := make(map[string]bool)
	for len(seen) < len(want) {
		m := next(t, ch)
		w, ok := byID[m.UUID]
		if !ok {
			t.Fatalf("unexpected message %q", m.UUID)
		}
		checkSame(t, w, m)
		seen[m.UUID] = true
		m.Ack()
	}
}

func testDelivers(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	_, ch := subscribe(t, tr, "billing", topic)
	msgs := newMessages(20)
	publish(t, tr, topic, msgs)
	receiveAll(t, ch, msgs)
}

func testEveryGroup(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing", "shipping")
	_, billing := subscribe(t, tr, "billing", topic)
	_, shipping := subscribe(t, tr, "shipping", topic)
	msgs := newMessages(20)
	publish(t, tr, topic, msgs)
	var wg sync.WaitGroup
	for _, ch := range []<-chan *message.Message{billing, shipping} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			receiveAll(t, ch, msgs)
		}()
	}
	wg.Wait()
}

// testReplicasShare runs two subscribers of one group, as two replicas of a
// service would. Where replicas consume at the same time, each holds its
// first message unacked until the other has one too, which proves that the
// group's messages are divided rather than all sent to one replica.
func testReplicasShare(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	_, a := subscribe(t, tr, "billing", topic)
	_, b := subscribe(t, tr, "billing", topic)
	testShare(t, tc, tr, topic, a, b)
}

// testSubscriptionsCompete checks what CompetingSubscriptions promises: two
// Subscribe calls to one topic on one subscriber share its messages, as
// replicas do, instead of each receiving a copy.
func testSubscriptionsCompete(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	sub, a := subscribe(t, tr, "billing", topic)
	cs, ok := sub.(interface{ CompetingSubscriptions() bool })
	if !ok || !cs.CompetingSubscriptions() {
		t.Fatalf("%T does not report competing subscriptions", sub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("second Subscribe(%s): %v", topic, err)
	}
	testShare(t, tc, tr, topic, a, b)
}

// testShare publishes to topic and checks that a and b, two consumers of
// one group, together receive every message exactly once and, where
// tc.ReplicasShare, at the same time.
func testShare(t *testing.T, tc testenv.TransportCase, tr *transport.Transport, topic string, a, b <-chan *message.Message) {
	const n = 40
	msgs := newMessages(n)
	publish(t, tr, topic, msgs)

	var (
		mu        sync.Mutex
		by        = map[string]int{} // UUID -> replica that got it first
		dupes     int
		count     [2]int
		done      = make(chan struct{})
		gotFirst  [2]chan struct{}
		closeOnce sync.Once
	)
	gotFirst[0], gotFirst[1] = make(chan struct{}), make(chan struct{})
	replica := func(i int, ch <-chan *message.Message) {
		for {
			var m *message.Message
			select {
			case m = <-ch:
			case <-done:
				return
			}
			mu.Lock()
			if r, ok := by[m.UUID]; ok {
				dupes++
				t.Errorf("message %s went to replica %d and then to replica %d", m.UUID, r, i)
			} else {
				by[m.UUID] = i
			}
			count[i]++
			first := count[i] == 1
			all := len(by) == n
			mu.Unlock()
			if first {
				close(gotFirst[i])
				if tc.ReplicasShare {
					select {
					case <-gotFirst[1-i]:
					case <-time.After(wait):
						t.Errorf("replica %d held a message for %s and replica %d got none", i, wait, 1-i)
					}
				}
			}
			m.Ack()
			if all {
				closeOnce.Do(func() { close(done) })
			}
		}
	}
	var wg sync.WaitGroup
	for i, ch := range []<-chan *message.Message{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); replica(i, ch) }()
	}
	select {
	case <-done:
	case <-time.After(2 * wait):
		closeOnce.Do(func() { close(done) })
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(by) != n {
		t.Errorf("replicas got %d distinct messages, want %d", len(by), n)
	}
	t.Logf("replica a: %d, replica b: %d, duplicates: %d", count[0], count[1], dupes)
}

func testNackRedelivers(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	_, ch := subscribe(t, tr, "billing", topic)
	msgs := newMessages(1)
	publish(t, tr, topic, msgs)
	m := next(t, ch)
	checkSame(t, msgs[0], m)
	m.Nack()
	again := next(t, ch)
	checkSame(t, msgs[0], again)
	again.Ack()
}

// testGroupOutlivesSubscribers checks that a group, once subscribed, keeps
// the messages published while none of its subscribers runs.
func testGroupOutlivesSubscribers(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	first, _ := subscribe(t, tr, "billing", topic)
	if err := first.Close(); err != nil {
		t.Fatalf("close subscriber: %v", err)
	}
	msgs := newMessages(10)
	publishNow(t, tr, topic, msgs)
	_, ch := subscribe(t, tr, "billing", topic)
	receiveAll(t, ch, msgs)
}

// testSubscribeInitialize checks that SubscribeInitialize, called on the
// Subscriber as returned, makes a group exist, so that what is published
// before its first Subscribe reaches it.
func testSubscribeInitialize(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	sub, err := tr.Subscriber("billing")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatalf("SubscribeInitialize: %v", err)
	}
	msgs := newMessages(5)
	publishNow(t, tr, topic, msgs)
	_, ch := subscribe(t, tr, "billing", topic)
	receiveAll(t, ch, msgs)
}

func testUnackedReturns(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	first, ch := subscribe(t, tr, "billing", topic)
	msgs := newMessages(1)
	publish(t, tr, topic, msgs)
	checkSame(t, msgs[0], next(t, ch)) // held, never acked
	if err := first.Close(); err != nil {
		t.Fatalf("close subscriber: %v", err)
	}
	_, ch2 := subscribe(t, tr, "billing", topic)
	start := time.Now()
	m := nextWithin(t, ch2, tc.RedeliveryDelay+wait)
	checkSame(t, msgs[0], m)
	m.Ack()
	if tc.RedeliveryDelay > 0 {
		t.Logf("redelivered after %s", time.Since(start).Round(100*time.Millisecond))
	}
}

// testCloseReleasesEverything closes the transport under live subscriptions
// (one holding an unacked message); the leak check in TestConformance then
// finds every goroutine gone.
// testMessageContextEnds checks Watermill's contract for a received
// message's context: it is cancelled once the message is acked, once it is
// nacked, and once its subscriber closes with the message in hand.
func testMessageContextEnds(t *testing.T, tc testenv.TransportCase) {
	tr, topic := setup(t, tc, "billing")
	sub, ch := subscribe(t, tr, "billing", topic)
	publish(t, tr, topic, newMessages(2))
	ended := func(m *message.Message, after string) {
		t.Helper()
		select {
		case <-m.Context().Done():
		case <-time.After(5 * time.Second):
			t.Errorf("message %s: context not cancelled 5s after %s", m.UUID, after)
		}
	}
	m := next(t, ch)
	m.Ack()
	ended(m, "Ack")
	m = next(t, ch)
	m.Nack()
	ended(m, "Nack")
	m = next(t, ch)
	if err := sub.Close(); err != nil {
		t.Fatalf("close subscriber: %v", err)
	}
	ended(m, "the subscriber's Close")
}

func testCloseReleases(t *testing.T, tc testenv.TransportCase) {
	// Delete the topic through a second transport: tr is closed below, and
	// on SQL a DROP TABLE would wait for the live subscriber's lock.
	_, topic := setup(t, tc, "billing", "shipping")
	tr := tc.Open(t)
	_, billing := subscribe(t, tr, "billing", topic)
	_, shipping := subscribe(t, tr, "shipping", topic)
	msgs := newMessages(3)
	// One call: on MySQL the message billing holds below would make a
	// later publish to the topic wait until Close.
	publishNow(t, tr, topic, msgs)
	next(t, billing) // held unacked
	receiveAll(t, shipping, msgs)
	if err := tr.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for name, ch := range map[string]<-chan *message.Message{"billing": billing, "shipping": shipping} {
		timeout := time.After(wait)
	drain:
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					break drain
				}
			case <-timeout:
				t.Fatalf("%s subscription still open %s after Close", name, wait)
			}
		}
	}
	if err := tr.Publisher().Publish(topic, newMessages(1)...); err == nil {
		t.Error("Publish after Close succeeded")
	}
	if _, err := tr.Subscriber("billing"); err == nil {
		t.Error("Subscriber after Close succeeded")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// testCloseWhileFrozen closes the transport while its link to the broker
// carries nothing (a broker that stopped answering, or this process just
// resumed from a freeze), with a subscription live and a publish in
// flight: Close must return promptly and without panicking, the publish
// must end, and once the link is back nothing may be left running.
func testCloseWhileFrozen(t *testing.T, tc testenv.TransportCase) {
	if tc.URL == "" {
		t.Skip("in-process: there is no link to freeze")
	}
	_, topic := setup(t, tc, "billing")
	u, err := url.Parse(tc.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	tr, err := transport.Open(ctx, u.String(), transport.Options{Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, billing := subscribe(t, tr, "billing", topic)
	msgs := newMessages(1)
	publishNow(t, tr, topic, msgs)
	receiveAll(t, billing, msgs)

	proxy.Freeze()
	defer proxy.Thaw() // before the leak check
	published := make(chan error, 1)
	go func() {
		msg := newMessages(1)[0]
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		msg.SetContext(pctx)
		published <- tr.Publisher().Publish(topic, msg)
	}()
	time.Sleep(100 * time.Millisecond) // the publish is on its way
	closed := make(chan error, 1)
	began := time.Now()
	go func() { closed <- tr.Close() }()
	select {
	case err := <-closed:
		t.Logf("Close returned after %s: %v", time.Since(began).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s of a frozen link")
	}
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("a publish in flight did not end within 10s of Close")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseZeroTransport closes a Transport that was never opened: the
// zero value, and the nil that a failed Open returns.
func TestCloseZeroTransport(t *testing.T) {
	var tr transport.Transport
	if err := tr.Close(); err != nil {
		t.Fatalf("Close of the zero Transport: %v", err)
	}
	failed, err := transport.Open(context.Background(), "nosuch://", transport.Options{})
	if err == nil {
		t.Fatal("Open of an unknown scheme succeeded")
	}
	if err := failed.Close(); err != nil {
		t.Fatalf("Close of the nil Transport a failed Open returned: %v", err)
	}
}

const secret = "s3cr3t-Pa55"

// testWrongPasswordNotShown opens the broker with a wrong password and
// checks that neither the error (if the broker checks passwords) nor the
// logs show it.
func testWrongPasswordNotShown(t *testing.T, tc testenv.TransportCase) {
	if tc.URL == "" {
		t.Skip("no URL")
	}
	u := withPassword(t, tc.URL, secret)
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	tr, err := transport.Open(ctx, u, transport.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))})
	if err == nil {
		t.Logf("%s accepted the wrong password (no authentication configured)", tc.Name)
		if !strings.Contains(tr.String(), "xxxxx") || strings.Contains(tr.String(), secret) {
			t.Errorf("String() = %q, want the password masked", tr.String())
		}
		if err := tr.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	} else {
		t.Logf("error: %v", err)
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("logs show the password:\n%s", logs.String())
	}
}

func withPassword(t *testing.T, raw, password string) string {
	t.Helper()
	i := strings.Index(raw, "://")
	if i < 0 {
		t.Fatalf("not a URL: %s", transport.Redact(raw))
	}
	rest := raw[i+3:]
	user := "eventgen"
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user = rest[:at]
		if c := strings.Index(user, ":"); c >= 0 {
			user = user[:c]
		}
		rest = rest[at+1:]
	}
	return raw[:i+3] + user + ":" + password + "@" + rest
}
