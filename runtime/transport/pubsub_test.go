package transport_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
)

// suiteGroup is the consumer group of the suite's plain constructor: every
// publisher and subscriber pair it makes is one more replica of it, which
// is what the suite expects (a subscriber made later in a test continues
// where a closed one stopped).
const suiteGroup = "watermill-suite"

// TestPubSub runs Watermill's own universal Pub/Sub suite against every
// transport the environment offers: mem always, RabbitMQ, NATS, Redis and
// PostgreSQL when their EVENTGEN_TEST_* variables are set. Publishers and
// subscribers come from transport.Open, as a user's Watermill code gets
// them.
//
// Under -race the suite runs in its short form (Features.ForceShort: 100
// messages and 10 subscribers instead of 5000 and 50, 50 messages instead
// of 5000 across subscriber restarts): the race detector looks at the
// same code paths, and the full counts cost minutes of CI there. The plain
// run runs the full suite.
func TestPubSub(t *testing.T) {
	for _, tc := range suiteCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			f := features(tc.Name)
			f.ForceShort = raceEnabled
			s := newSuite(t, tc)
			tests.TestPubSub(t, f, s.pubSub, s.groupPubSub)
		})
	}
}

// TestPubSubExtra runs two tests of the suite whose Feature gates would
// skip them, since the transports promise what they check:
//
//   - TestNoAck, gated on GuaranteedOrder: a subscription offers its next
//     message only once the current one is acked or nacked (the test does
//     not check order);
//   - TestNewSubscriberReceivesOldMessages, gated on its Feature: on NATS,
//     Redis and SQL a new consumer group reads the topic's whole history
//     (each subscriber here is in a group of its own).
func TestPubSubExtra(t *testing.T) {
	for _, tc := range suiteCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			s := newSuite(t, tc)
			f := features(tc.Name)
			t.Run("TestNoAck", func(t *testing.T) {
				f := f
				f.GuaranteedOrder = true
				tests.TestNoAck(t, tests.TestContext{TestID: tests.NewTestID(), Features: f}, s.pubSub)
			})
			if tc.Name == "nats" || tc.Name == "redis" || tc.Name == "postgres" {
				t.Run("TestNewSubscriberReceivesOldMessages", func(t *testing.T) {
					f := f
					f.NewSubscriberReceivesOldMessages = true
					tests.TestNewSubscriberReceivesOldMessages(t, tests.TestContext{TestID: tests.NewTestID(), Features: f}, s.newGroupPubSub)
				})
			}
		})
	}
}

// suiteCases returns the transports the suite runs on: mem and every
// broker configured but MySQL. MySQL is left out: watermill-sql reads it
// under SERIALIZABLE, which locks the end of a topic's table while a
// subscriber holds a batch, so the suite's publishes beside open
// subscriptions wait for its timeouts. TestConformance covers it.
func suiteCases(t *testing.T) []testenv.TransportCase {
	cases := testenv.Transports(t)
	for _, c := range testenv.SQLTransports(t) {
		if c.Name == "postgres" {
			cases = append(cases, c)
		}
	}
	return cases
}

// features returns what the transport named name promises, in the
// suite's terms. Every transport has consumer groups; none promises
// exactly-once delivery (a message is delivered at least once: a
// redelivery after a lost ack is a duplicate) or order (a nacked message
// is delivered again after later ones, and the subscriptions of a group
// share its messages).
func features(name string) tests.Features {
	return tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     false,
		// Persistent: a message waits for its group while the group's
		// subscribers restart. On mem that holds within one process only
		// (the suite's pairs share one Transport); nothing survives it.
		Persistent: true,
		// A new subscriber joins a group (the constructor's), so it does
		// not read what the group consumed; TestPubSubExtra checks that a
		// new group reads the history where the transport keeps it.
		NewSubscriberReceivesOldMessages: false,
		// The message context is the subscription's, cancelled after
		// Ack, Nack or Close; the publisher's context is not carried.
		ContextPreserved: false,
		// No RestartServiceCommand here: it would restart the broker
		// every other test shares. TestReconnect sets one for servers
		// of its own.
	}
}

// suite builds the suite's publishers and subscribers on one transport
// case and deletes, when the test ends, every topic they used.
type suite struct {
	tc testenv.TransportCase
	t  *testing.T

	// shared is mem's one Transport: its publishers and subscribers must
	// share it to reach each other.
	shared *transport.Transport

	mu     sync.Mutex
	topics map[string]map[string]bool // topic -> groups
}

func newSuite(t *testing.T, tc testenv.TransportCase) *suite {
	s := &suite{tc: tc, t: t, topics: make(map[string]map[string]bool)}
	if tc.InProcess {
		s.shared = tc.Open(t)
		return s
	}
	t.Cleanup(s.deleteTopics)
	return s
}

// pubSub is the suite's PubSubConstructor: a publisher and a subscriber in
// suiteGroup.
func (s *suite) pubSub(t *testing.T) (message.Publisher, message.Subscriber) {
	return s.groupPubSub(t, suiteGroup)
}

// newGroupPubSub gives each subscriber a consumer group of its own.
func (s *suite) newGroupPubSub(t *testing.T) (message.Publisher, message.Subscriber) {
	return s.groupPubSub(t, "g-"+string(tests.NewTestID()))
}

// groupPubSub is the suite's ConsumerGroupPubSubConstructor. Except on
// mem, each pair opens a Transport of its own, as a replica of a service
// would, closed when the test ends.
func (s *suite) groupPubSub(t *testing.T, group string) (message.Publisher, message.Subscriber) {
	tr := s.shared
	if tr == nil {
		tr = s.tc.Open(t)
	}
	sub, err := tr.Subscriber(group)
	if err != nil {
		t.Fatalf("Subscriber(%q): %v", group, err)
	}
	return &suitePublisher{s: s, pub: tr.Publisher()}, &suiteSubscriber{Subscriber: sub, s: s, group: group}
}

func (s *suite) used(topic, group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topics[topic] == nil {
		s.topics[topic] = make(map[string]bool)
	}
	if group != "" {
		s.topics[topic][group] = true
	}
}

// deleteTopics deletes every topic the suite used, with its groups'
// queues, so that shared brokers do not fill up with test topics.
func (s *suite) deleteTopics() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr, err := transport.Open(ctx, s.tc.URL, transport.Options{})
	if err != nil {
		s.t.Errorf("delete the suite's topics: %v", err)
		return
	}
	defer tr.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, groups := range s.topics {
		var gs []string
		for g := range groups {
			gs = append(gs, g)
		}
		if err := tr.DeleteTopic(ctx, topic, gs...); err != nil {
			s.t.Errorf("delete topic %s: %v", topic, err)
		}
	}
}

// suitePublisher records the topics it publishes to. Its Close closes
// this handle only: on mem the Transport's publisher is shared by every
// pair, and elsewhere the Transport closes at the test's end.
type suitePublisher struct {
	s   *suite
	pub message.Publisher

	mu     sync.RWMutex
	closed bool
}

func (p *suitePublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("publisher closed")
	}
	p.s.used(topic, "")
	return p.pub.Publish(topic, msgs...)
}

func (p *suitePublisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

// suiteSubscriber records the topics its group subscribes to.
type suiteSubscriber struct {
	transport.Subscriber
	s     *suite
	group string
}

func (s *suiteSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.s.used(topic, s.group)
	return s.Subscriber.Subscribe(ctx, topic)
}

func (s *suiteSubscriber) SubscribeInitialize(topic string) error {
	s.s.used(topic, s.group)
	return s.Subscriber.SubscribeInitialize(topic)
}
