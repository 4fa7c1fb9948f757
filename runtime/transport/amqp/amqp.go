// Package amqp is the AMQP 0-9-1 (RabbitMQ) transport, on watermill-amqp.
//
// URLs: amqp://user:password@host:5672/vhost, or amqps:// for TLS.
//
// Topology: a topic is a durable fanout exchange of the same name. A
// consumer group is a durable queue named "<topic>.<group>" bound to it
// (group names hold no dots, so the name is unambiguous). Every group gets
// every message; the subscribers of one group (its replicas) share the
// group's queue, each holding at most one unacked message (prefetch 1).
// Messages are persistent. They follow the AMQP binding of CloudEvents in
// binary mode, as RabbitMQ maps AMQP 1.0 application properties onto
// headers: each attribute a cloudEvents_ header, the content type the
// content-type property, the payload the body. It reads cloudEvents: names
// too, and the ce_ headers of eventgen before the binding.
//
// Publish waits for the broker's publisher confirm of each message, so a
// nil error means RabbitMQ has taken responsibility for it. A message
// published before any group's queue exists is dropped by the exchange, as
// with every fanout exchange: subscribe (or call SubscribeInitialize) each
// group once before publishing.
//
// Ack acks the delivery; Nack, and a delivery left unacked when its
// subscriber stops or its connection drops, requeue it for the group.
//
// # Failures
//
// Every Publish ends by a deadline: its messages' context deadline, else
// DefaultPublishTimeout. A publish that fails is never retried here (the
// caller, such as eventgen's outbox relay, decides); what it leaves in
// doubt is dropped: a failed channel is closed, and a connection that
// closed, or on which a confirm did not come in time, is closed and dialled
// again by the next Publish, with backoff while dials fail. So a publisher
// whose connection died while the process was frozen (SIGSTOP, a long GC
// pause, a VM migration) publishes again at the first Publish after it
// resumes. While RabbitMQ blocks publishers (a memory or disk alarm),
// Publish fails at once and says why.
//
// Heartbeats are every 10 seconds unless the URL sets another interval
// (amqps://host/vhost?heartbeat=5; 0 turns them off, which is unwise).
// RabbitMQ closes a connection that missed two heartbeats; the client
// closes one whose server sent nothing for three intervals, which bounds
// how long a send to a broker that stopped answering can block.
//
// A subscription whose channel or connection fails consumes again, on a new
// channel and if need be a new connection, with backoff while that fails;
// the message it held unacked goes back to the group. Close returns within
// about two seconds whatever the broker does.
//
// The connections, channels and their recovery are this package's own, on
// amqp091-go; the topology and the mapping of messages are watermill-amqp's
// durable pub/sub configuration, so its subscribers and publishers
// interoperate with these.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "amqp"

// publishChannels bounds concurrent publishes, each on an AMQP channel of
// its own while it waits for its confirms.
const publishChannels = 8

// dialTimeout bounds connecting and the handshakes that follow.
const dialTimeout = 30 * time.Second

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is a connection to RabbitMQ: one connection for publishing and one
// shared by the subscribers, as RabbitMQ recommends. Each is dialled again
// when it fails.
type Broker struct {
	ep      *support.Endpoint
	uri     string
	log     *slog.Logger
	pub     *support.Publisher
	pubConn *connector
	subConn *connector
	closers support.Closers
}

// Open connects to the broker at rawURL.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	ep, err := support.Parse(pkg, rawURL)
	if err != nil {
		return nil, err
	}
	if s := ep.URL.Scheme; s != "amqp" && s != "amqps" {
		return nil, fmt.Errorf("amqp: URL scheme %q is not amqp or amqps", s)
	}
	log := ep.Logger(opts.Logger)
	dial := func(ctx context.Context) (*amqp091.Connection, error) {
		return amqp091.DialConfig(rawURL, *clientConfig(ctx))
	}
	b := &Broker{
		ep:      ep,
		uri:     rawURL,
		log:     log,
		pubConn: newConnector("publisher", log, dial),
		subConn: newConnector("subscribers", log, dial),
	}
	// Connect now, so that a wrong URL or an unreachable broker fails Open.
	for _, c := range []*connector{b.pubConn, b.subConn} {
		if _, err := c.get(ctx); err != nil {
			_ = b.pubConn.close()
			_ = b.subConn.close()
			return nil, ep.Errorf("amqp: %s: %w", ep.Redacted, err)
		}
	}
	b.pub = support.NewPublisher(&b.closers, ep, pkg, newPublisher(b.config(""), publishChannels, b.pubConn), checkTopic)
	return b, nil
}

// maxName is the longest exchange or queue name AMQP 0-9-1 allows.
const maxName = 255

// checkTopic refuses topics that RabbitMQ reserves ("amq." exchanges).
func checkTopic(topic string) error {
	if strings.HasPrefix(topic, "amq.") {
		return fmt.Errorf("topic %q: names starting with amq. are reserved by AMQP", topic)
	}
	return nil
}

// clientConfig is the AMQP client configuration for one dial bounded by
// ctx and dialTimeout: RabbitMQ shows the connection as "eventgen";
// heartbeats are amqp091's default (10s) or the URL's.
func clientConfig(ctx context.Context) *amqp091.Config {
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName("eventgen")
	dial := func(network, addr string) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		conn, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		// A deadline for the TLS and AMQP handshakes; amqp091 clears it once
		// the connection is open.
		deadline, _ := dctx.Deadline()
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
	return &amqp091.Config{Locale: "en_US", Properties: props, Dial: dial}
}

// config is the topology for group (empty for the publisher).
func (b *Broker) config(group string) wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(b.uri, func(topic string) string { return QueueName(topic, group) })
	cfg.Consume.NoRequeueOnNack = false
	cfg.Marshaler = marshaler{}
	return cfg
}

// QueueName is the durable queue that consumer group reads topic from.
func QueueName(topic, group string) string { return topic + "." + group }

// Publisher returns the broker's publisher. Its Close only stops that
// handle; Broker.Close releases the connection.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a new subscriber in consumer group, on the broker's
// subscriber connection. Its Subscribe declares the exchange, the group's
// queue and the binding, then consumes from the queue.
func (b *Broker) Subscriber(group string) (support.GroupSubscriber, error) {
	if err := b.closers.NewSubscriber(pkg, group); err != nil {
		return nil, err
	}
	sub := newSubscriber(b.config(group), b.subConn, b.log)
	return support.Track(&b.closers, b.ep, pkg, sub, func(topic string) error {
		if q := QueueName(topic, group); len(q) > maxName {
			return fmt.Errorf("queue name %q is longer than AMQP's %d bytes: shorten the topic or the group", q, maxName)
		}
		return checkTopic(topic)
	})
}

// DeleteTopic deletes the topic's exchange and the queues of the given
// groups, with the messages they hold.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, groups ...string) error {
	if err := support.ValidateTopic(topic); err != nil {
		return fmt.Errorf("amqp: delete topic: %w", err)
	}
	conn, err := amqp091.DialConfig(b.uri, *clientConfig(ctx))
	if err != nil {
		return b.ep.Errorf("amqp: delete topic %s: connect: %w", topic, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return b.ep.Errorf("amqp: delete topic %s: open channel: %w", topic, err)
	}
	defer ch.Close()
	for _, g := range groups {
		if _, err := ch.QueueDelete(QueueName(topic, g), false, false, false); err != nil {
			return b.ep.Errorf("amqp: delete queue %s: %w", QueueName(topic, g), err)
		}
	}
	if err := ch.ExchangeDelete(topic, false, false); err != nil {
		return b.ep.Errorf("amqp: delete exchange %s: %w", topic, err)
	}
	return nil
}

// Close closes every subscriber, the publisher and both connections. It
// is safe to call more than once, and in any state of the connections. It
// returns within about two seconds even when the broker no longer
// answers: what has not closed by then is dropped without the close
// handshake.
func (b *Broker) Close() error {
	if b == nil || b.ep == nil {
		return nil // a nil or zero Broker holds nothing
	}
	err := b.closers.CloseAll()
	err = errors.Join(err, b.pubConn.close(), b.subConn.close())
	if err != nil {
		return b.ep.Errorf("amqp: close: %w", err)
	}
	return nil
}
