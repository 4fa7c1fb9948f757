// Package transport builds Watermill publishers and subscribers from a URL,
// so that a service picks its broker in configuration:
//
//	t, err := transport.Open(ctx, os.Getenv("BROKER_URL"), transport.Options{Logger: logger})
//	...
//	defer t.Close()
//	pub := t.Publisher()                 // for the outbox relay
//	sub, err := t.Subscriber("billing")  // one replica of consumer group billing
//
// The URL's scheme chooses the broker:
//
//	""  mem://  gochannel://        in-process GoChannel (package mem), the default
//	amqp://  amqps://               RabbitMQ (package amqp)
//	nats://  tls://                 NATS JetStream (package natsjs)
//	redis://  rediss://             Redis Streams (package redisstream)
//	postgres://  postgresql://  mysql://   a database through watermill-sql (package sqlbroker)
//
// Kafka is not offered: watermill-kafka is not among this module's
// dependencies.
//
// On every broker a consumer group receives every message published to a
// topic, and the subscribers of one group (a service's replicas) divide the
// group's messages between them, each message going to one of them (on SQL
// they take turns, batch by batch). An unacked or nacked message is
// delivered again (at least once), so consumers must be idempotent.
//
// A group exists from its first Subscribe, or from SubscribeInitialize. On
// mem and AMQP a group gets only what is published after that; NATS, Redis
// and SQL keep topics' history, and a new group reads all of it (on NATS
// and Redis, all that Options.Retention kept). So create each group, with
// SubscribeInitialize or Subscribe, before publishing to it.
// Subscriber returns a [Subscriber], which has SubscribeInitialize in its
// method set, so no type assertion is needed:
//
//	sub, err := t.Subscriber("billing")
//	...
//	err = sub.SubscribeInitialize("shop.orders") // the group now gets what is published
//
// A Subscriber is a message.Subscriber, so code that holds the result in a
// message.Subscriber compiles as before.
//
// The subpackages document each broker's topology, publish confirmation
// and redelivery.
//
// Options.Retention bounds what the brokers that keep history store of
// each topic, whether or not every group has read it:
//
//	                  MaxAge (default 7 days)   MaxBytes   MaxMessages
//	NATS JetStream    stream MaxAge             MaxBytes   MaxMsgs
//	Redis Streams     XADD MINID ~              (none)     MAXLEN ~
//	RabbitMQ, mem     (none: a group's queue holds only what it has not consumed)
//	SQL               (none: watermill-sql never deletes; see below)
//
// A group that is down for longer than MaxAge, or falls further behind
// than the other limits, loses the messages past them. The 7-day default
// lets a group be down for a day, or a long weekend, and lose nothing,
// while a broker's storage stays bounded by a week of traffic. Set
// MaxAge to Unlimited to keep everything (Open then logs a warning,
// unless a size limit is set). The SQL transport's tables grow for good:
// watermill-sql has no retention for topics with consumer groups (its
// delete-on-ack queue schema has one consumer per table), so delete old
// rows of watermill_<topic> yourself, by created_at.
//
// Topic names are 1 to 200 characters from A-Z a-z 0-9 _ - and dots between
// parts (shop.orders); group names 1 to 64 characters from A-Z a-z 0-9 _ -.
// Each broker maps them to what it needs; the subpackages say how.
//
// Importing this package compiles every broker's client. A service that
// uses one broker may import only its subpackage, whose Open and Broker
// offer the same methods.
//
// Errors and logs never show a URL's password: URLs appear redacted, and
// secrets are masked in the text of errors that the clients return.
package transport

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/transport/amqp"
	"github.com/eventgen/eventgen/runtime/transport/internal/support"
	"github.com/eventgen/eventgen/runtime/transport/mem"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
	"github.com/eventgen/eventgen/runtime/transport/redisstream"
	"github.com/eventgen/eventgen/runtime/transport/sqlbroker"
)

// Options configure Open. The zero value is ready to use.
type Options struct {
	// Logger receives the broker client's logs, with secrets masked; nil
	// discards them.
	Logger *slog.Logger
	// SQLMaxConns bounds the connections the SQL transport opens to its
	// database (sqlbroker.DefaultMaxConns, 16, when 0; negative is an
	// error). Other brokers ignore it.
	SQLMaxConns int
	// Retention bounds what NATS JetStream and Redis Streams keep of each
	// topic (see the package documentation): messages for 7 days when
	// zero. A negative value other than Unlimited, or a MaxAge under a
	// second, is an error from Open. Other brokers ignore it.
	Retention Retention
}

// Retention holds the limits of Options.Retention.
type Retention = support.Retention

// Unlimited, in a field of Retention, lifts that limit.
const Unlimited = support.Unlimited

// Transport is an open connection to a broker. Its methods are safe for
// concurrent use.
type Transport struct {
	scheme   string
	redacted string
	b        broker
}

// Subscriber is one replica of a consumer group: a Watermill subscriber
// whose SubscribeInitialize (message.SubscribeInitializer) creates the
// group's subscription to a topic without consuming. Every broker
// subpackage's Broker.Subscriber returns this same type.
type Subscriber = support.GroupSubscriber

// broker is what every subpackage's Broker provides.
type broker interface {
	Publisher() message.Publisher
	Subscriber(group string) (Subscriber, error)
	DeleteTopic(ctx context.Context, topic string, groups ...string) error
	Close() error
}

// Open connects to the broker that rawURL names (see the package
// documentation) and checks that it answers. An empty URL opens the
// in-process transport. ctx bounds connecting, not the Transport's life.
func Open(ctx context.Context, rawURL string, opts Options) (*Transport, error) {
	scheme := "mem"
	redacted := "mem://"
	if rawURL != "" {
		ep, err := support.Parse("transport", rawURL)
		if err != nil {
			return nil, err
		}
		scheme, redacted = ep.URL.Scheme, ep.Redacted
	}
	var (
		b   broker
		err error
	)
	switch scheme {
	case "mem", "gochannel":
		b, err = mem.Open(ctx, rawURL, mem.Options{Logger: opts.Logger})
	case "amqp", "amqps":
		b, err = amqp.Open(ctx, rawURL, amqp.Options{Logger: opts.Logger})
	case "nats", "tls":
		b, err = natsjs.Open(ctx, rawURL, natsjs.Options{Logger: opts.Logger, Retention: opts.Retention})
	case "redis", "rediss":
		b, err = redisstream.Open(ctx, rawURL, redisstream.Options{Logger: opts.Logger, Retention: opts.Retention})
	case "postgres", "postgresql", "mysql":
		b, err = sqlbroker.Open(ctx, rawURL, sqlbroker.Options{Logger: opts.Logger, MaxConns: opts.SQLMaxConns})
	default:
		return nil, fmt.Errorf("transport: unsupported URL scheme %q in %s (want mem, gochannel, amqp, amqps, nats, tls, redis, rediss, postgres, postgresql or mysql)", scheme, redacted)
	}
	if err != nil {
		return nil, fmt.Errorf("transport: open %s: %w", redacted, err)
	}
	return &Transport{scheme: scheme, redacted: redacted, b: b}, nil
}

// Scheme returns the scheme of the URL the Transport was opened with
// ("mem" for an empty URL).
func (t *Transport) Scheme() string { return t.scheme }

// String returns the Transport's URL with its secrets masked.
func (t *Transport) String() string { return t.redacted }

// Publisher returns the Transport's publisher. Publish returns once the
// broker has the messages (see each broker's documentation for what that
// means); it is safe for concurrent use. Its Close only stops that handle:
// Close the Transport to release the connection.
func (t *Transport) Publisher() message.Publisher { return t.b.Publisher() }

// Subscriber returns a new subscriber in consumer group: one replica of the
// group. Each Subscribe on it delivers the group's messages of one topic.
// Closing the subscriber stops its subscriptions; messages it held unacked
// go back to the group. The Transport's Close closes it too.
func (t *Transport) Subscriber(group string) (Subscriber, error) {
	return t.b.Subscriber(group)
}

// DeleteTopic removes what the broker keeps for topic and for the given
// consumer groups on it, messages included: the exchange and the groups'
// queues (AMQP), the stream and its consumers (NATS, Redis) or the tables
// (SQL). Tests use it to clean up; it is also how a topic is retired.
func (t *Transport) DeleteTopic(ctx context.Context, topic string, groups ...string) error {
	return t.b.DeleteTopic(ctx, topic, groups...)
}

// Close closes every subscriber and the publisher, then the connections.
// It is safe to call more than once, and on a Transport that was never
// opened (nil, or the zero value). It does not wait for a broker that stopped answering: see each
// broker's Close.
func (t *Transport) Close() error {
	if t == nil || t.b == nil {
		return nil
	}
	return t.b.Close()
}

// Redact returns rawURL with its password and secret query parameters
// masked, for logs. A malformed URL is returned as a placeholder.
func Redact(rawURL string) string {
	if rawURL == "" {
		return ""
	}
	ep, err := support.Parse("transport", rawURL)
	if err != nil {
		return "(malformed URL)"
	}
	return ep.Redacted
}
