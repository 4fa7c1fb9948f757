// Package redisstream is the Redis Streams transport, on
// watermill-redisstream.
//
// URLs: redis://user:password@host:6379/0, or rediss:// for TLS (the forms
// go-redis's ParseURL accepts).
//
// Topology: a topic is the stream at the key of the same name (any key is
// valid, dots included). A consumer group is a Redis consumer group of that
// name on the stream, created at the stream's beginning (ID 0) by the
// group's first Subscribe, so a new group reads the whole history; each
// subscriber is a consumer of its own in the group, and the group's
// consumers share its messages.
//
// Retention: each XADD trims the stream to Options.Retention, approximately
// (MINID ~ and MAXLEN ~, so Redis removes only whole nodes of the stream,
// at next to no cost, and a stream may hold a node's worth, about 100
// entries, more than the limit). By default entries older than 7 days
// (DefaultMaxAge) are trimmed, with no limit by count; Redis has no limit
// by size (Retention.MaxBytes is ignored, with a warning: bound Redis's
// memory with maxmemory). The age of an entry is read from its id, which
// Redis makes of its clock's milliseconds, against the publisher's clock
// (MINID is now - MaxAge): the two clocks should agree. With MaxAge
// Unlimited and no MaxMessages, Open logs a warning: streams then grow
// until Redis runs out of memory. Trimming removes entries whether or not
// every group has read them: a group that falls behind the retention
// never sees the trimmed entries, and those it had read but not acked
// leave its pending list when the group next claims them.
//
// Publish returns once XADD has stored the message in Redis's memory; how
// much survives a Redis restart depends on the server's persistence
// settings (AOF with appendfsync always for the strongest guarantee).
//
// Each subscription is a consumer of its own in the group and reads one
// entry at a time (XREADGROUP COUNT 1), the next only once the current one
// is acked or nacked. Ack is XACK, retried until it succeeds or 10 seconds
// pass, and done before the subscription's Close returns. Nack redelivers
// the message to the same subscription at once. A message that a
// subscription holds when it stops is handed back at once: its idle time
// is set to the claim delay (XCLAIM ... IDLE), so the group's other
// subscriptions claim it within 2 seconds and a new one claims it as it
// starts. A message left by a subscriber that crashed stays pending and is
// claimed once it has been idle for 30 seconds (each subscription looks
// every 2 seconds, with XAUTOCLAIM), as NATS redelivers after its
// 30-second AckWait; a handler that runs longer than that may see its
// message delivered to another consumer as well: consumers must be
// idempotent, as eventgen's Consumer is. A stopping subscription deletes
// its consumer from the group when it has no pending entries left; a
// subscription that starts deletes consumers idle for 10 minutes with
// none (those of crashed subscribers).
//
// Needs Redis 6.2 or newer (XAUTOCLAIM).
package redisstream

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "redisstream"

// Retention bounds what the streams keep. Of its limits, Redis Streams
// honour MaxAge and MaxMessages.
type Retention = support.Retention

// Unlimited, in a field of Retention, lifts that limit.
const Unlimited = support.Unlimited

// DefaultMaxAge is how long streams keep entries when Retention.MaxAge is
// 0.
const DefaultMaxAge = support.DefaultMaxAge

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Retention holds the limits that publishing trims streams to (see
	// the package documentation); the zero value keeps entries for
	// DefaultMaxAge. A negative value other than Unlimited, or a MaxAge
	// under a second, is an error from Open.
	Retention Retention
}

// Broker is a connection pool to a Redis server for publishing, plus one
// per subscriber.
type Broker struct {
	ep      *support.Endpoint
	slog    *slog.Logger
	limits  support.Limits
	opts    *redis.Options
	client  *redis.Client
	pub     *support.Publisher
	closers support.Closers
}

// Open connects to the server at rawURL and pings it. It logs a warning
// if opts.Retention sets no limit that Redis honours.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	limits, err := opts.Retention.Check(pkg)
	if err != nil {
		return nil, err
	}
	ep, err := support.Parse(pkg, rawURL)
	if err != nil {
		return nil, err
	}
	if s := ep.URL.Scheme; s != "redis" && s != "rediss" {
		return nil, fmt.Errorf("redisstream: URL scheme %q is not redis or rediss", s)
	}
	ropts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, ep.Errorf("redisstream: parse URL %s: %w", ep.Redacted, err)
	}
	if ropts.ClientName == "" {
		ropts.ClientName = "eventgen"
	}
	sl := ep.Logger(opts.Logger)
	b := &Broker{ep: ep, slog: sl, limits: limits, opts: ropts}
	b.client = redis.NewClient(b.clientOptions())
	if err := b.client.Ping(ctx).Err(); err != nil {
		_ = b.client.Close()
		return nil, ep.Errorf("redisstream: ping %s: %w", ep.Redacted, err)
	}
	// The wrapper refuses publishes after Close, and closing the client
	// ends one in progress.
	if _, err := b.closers.Add(b.client.Close); err != nil {
		return nil, err
	}
	b.pub = support.NewPublisher(&b.closers, ep, pkg, &publisher{b: b}, nil)
	if limits.MaxBytes > 0 {
		sl.Warn("redisstream: Retention.MaxBytes is ignored: Redis Streams cannot be trimmed by size; bound Redis's memory with maxmemory",
			"max_bytes", limits.MaxBytes)
	}
	limits.WarnUnbounded(sl, pkg, "Redis", false)
	return b, nil
}

// clientOptions returns a copy of the parsed options for a new client.
func (b *Broker) clientOptions() *redis.Options {
	o := *b.opts
	return &o
}

// Publisher returns the broker's publisher. Its Close only stops that
// handle; Broker.Close releases the connection.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a new subscriber in consumer group, with a client of
// its own (Redis blocks a connection for each XREADGROUP).
func (b *Broker) Subscriber(group string) (support.GroupSubscriber, error) {
	if err := b.closers.NewSubscriber(pkg, group); err != nil {
		return nil, err
	}
	s := &subscriber{b: b, client: redis.NewClient(b.clientOptions()), group: group}
	return support.Track(&b.closers, b.ep, pkg, s, nil)
}

// DeleteTopic deletes the topic's stream with its messages and groups.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, _ ...string) error {
	if err := support.ValidateTopic(topic); err != nil {
		return fmt.Errorf("redisstream: delete topic: %w", err)
	}
	if err := b.client.Del(ctx, topic).Err(); err != nil {
		return b.ep.Errorf("redisstream: delete stream %s: %w", topic, err)
	}
	return nil
}

// Close closes every subscriber, then the publisher's client.
func (b *Broker) Close() error {
	if err := b.closers.CloseAll(); err != nil {
		return b.ep.Errorf("redisstream: close: %w", err)
	}
	return nil
}

// publisher adds each message to its topic's stream with XADD, in
// watermill-redisstream's format, and trims the stream to the Broker's
// limits as it does.
type publisher struct{ b *Broker }

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(topic, m)
		if err != nil {
			return fmt.Errorf("message %s: %w", m.UUID, err)
		}
		if err := p.add(m.Context(), topic, values); err != nil {
			return fmt.Errorf("message %s: %w", m.UUID, err)
		}
	}
	return nil
}

// add runs XADD, trimming approximately: by age (MINID ~) when there is
// an age limit, else by count (MAXLEN ~). With both, one XADD cannot say
// both, so an XTRIM MAXLEN ~ follows in the same round trip; if that
// fails, the message is stored all the same, and the failure is logged.
func (p *publisher) add(ctx context.Context, topic string, values map[string]any) error {
	l := p.b.limits
	args := &redis.XAddArgs{Stream: topic, Values: values, Approx: true}
	switch {
	case l.MaxAge > 0:
		args.MinID = minID(time.Now(), l.MaxAge)
	case l.MaxMessages > 0:
		args.MaxLen = l.MaxMessages
	}
	if args.MinID == "" || l.MaxMessages == 0 {
		return p.b.client.XAdd(ctx, args).Err()
	}
	var (
		add  *redis.StringCmd
		trim *redis.IntCmd
	)
	_, _ = p.b.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		add = pipe.XAdd(ctx, args)
		trim = pipe.XTrimMaxLenApprox(ctx, topic, l.MaxMessages, 0)
		return nil
	})
	if err := add.Err(); err != nil {
		return err
	}
	if err := trim.Err(); err != nil {
		p.b.slog.Warn("redisstream: trim stream to Retention.MaxMessages", "stream", topic, "error", err)
	}
	return nil
}

func (p *publisher) Close() error { return nil }

// minID is the MINID that trims the entries older than maxAge at now: a
// stream id is the millisecond Redis added the entry, then a sequence.
func minID(now time.Time, maxAge time.Duration) string {
	return fmt.Sprintf("%d-0", max(now.Add(-maxAge).UnixMilli(), 0))
}

// unmarshaller decodes as watermill-redisstream does, but never fails: an
// entry that is not in Watermill's format is delivered with what could be
// read (its payload field, if any) and its UUID, if any, for the consumer
// to reject and ack, and the problem is logged.
type unmarshaller struct{ log *slog.Logger }

func (u unmarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	m, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	if err == nil {
		return m, nil
	}
	id, _ := values[redisstream.UUIDHeaderKey].(string)
	payload, _ := values["payload"].(string)
	u.log.Error("redisstream: entry is not a Watermill message; delivering what could be read", "uuid", id, "error", err)
	return message.NewMessage(id, []byte(payload)), nil
}
