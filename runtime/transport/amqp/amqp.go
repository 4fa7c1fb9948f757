// Package amqp is the AMQP 0-9-1 (RabbitMQ) transport, on watermill-amqp.
//
// URLs: amqp://user:password@host:5672/vhost, or amqps:// for TLS.
//
// Topology: a topic is a durable fanout exchange of the same name. A
// consumer group is a durable queue named "<topic>.<group>" bound to it
// (group names hold no dots, so the name is unambiguous). Every group gets
// every message; the subscribers of one group (its replicas) share the
// group's queue, each holding at most one unacked message (prefetch 1).
// Messages are persistent.
//
// Publish waits for the broker's publisher confirm of each message, so a
// nil error means RabbitMQ has taken responsibility for it. A message
// published before any group's queue exists is dropped by the exchange, as
// with every fanout exchange: subscribe (or call SubscribeInitialize) each
// group once before publishing.
//
// Ack acks the delivery; Nack, and a delivery left unacked when its
// subscriber stops or its connection drops, requeue it for the group.
// Connections are re-established with backoff after a failure.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "amqp"

// publishChannels is how many AMQP channels the publisher keeps open for
// concurrent publishes (each waits for its confirms).
const publishChannels = 8

// dialTimeout bounds connecting and the handshakes that follow.
const dialTimeout = 30 * time.Second

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is a connection to RabbitMQ: one connection for publishing and one
// shared by the subscribers, as RabbitMQ recommends.
type Broker struct {
	ep      *support.Endpoint
	uri     string
	log     watermill.LoggerAdapter
	pub     *support.Publisher
	subConn *wamqp.ConnectionWrapper
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
	b := &Broker{ep: ep, uri: rawURL, log: support.Watermill(ep.Logger(opts.Logger))}
	dial := func() (*wamqp.ConnectionWrapper, error) {
		return wamqp.NewConnection(wamqp.ConnectionConfig{
			AmqpURI:    rawURL,
			AmqpConfig: clientConfig(ctx),
		}, b.log)
	}
	pubConn, err := dial()
	if err != nil {
		return nil, ep.Errorf("amqp: connect to %s: %w", ep.Redacted, err)
	}
	cfg := b.config("")
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = publishChannels
	pub, err := wamqp.NewPublisherWithConnection(cfg, b.log, pubConn)
	if err != nil {
		_ = pubConn.Close()
		return nil, ep.Errorf("amqp: new publisher: %w", err)
	}
	b.subConn, err = dial()
	if err != nil {
		_ = pub.Close()
		_ = pubConn.Close()
		return nil, ep.Errorf("amqp: connect to %s: %w", ep.Redacted, err)
	}
	// Closers run newest first: the publisher, then its connection.
	if _, err := b.closers.Add(pubConn.Close); err != nil {
		return nil, err
	}
	if _, err := b.closers.Add(pub.Close); err != nil {
		return nil, err
	}
	b.pub = support.NewPublisher(&b.closers, ep, pkg, pub, checkTopic)
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

// clientConfig is the AMQP client configuration: RabbitMQ shows the
// connection as "eventgen"; heartbeats are amqp091's default or the URL's.
// The first dial honours ctx; reconnects do not, since ctx may be long done.
func clientConfig(ctx context.Context) *amqp091.Config {
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName("eventgen")
	var dialed atomic.Bool
	dial := func(network, addr string) (net.Conn, error) {
		dctx := context.WithoutCancel(ctx)
		if !dialed.Swap(true) {
			dctx = ctx
		}
		dctx, cancel := context.WithTimeout(dctx, dialTimeout)
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
	sub, err := wamqp.NewSubscriberWithConnection(b.config(group), b.log, b.subConn)
	if err != nil {
		return nil, b.ep.Errorf("amqp: new subscriber: %w", err)
	}
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

// Close closes every subscriber, the publisher and both connections.
func (b *Broker) Close() error {
	err := b.closers.CloseAll()
	if b.subConn != nil {
		err = errors.Join(err, b.subConn.Close())
	}
	if err != nil {
		return b.ep.Errorf("amqp: close: %w", err)
	}
	return nil
}
