package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

// resubscribeBackoff paces a subscription's attempts to consume again after
// its channel or connection failed.
var resubscribeBackoff = redialBackoff

// subscriber is one replica of a consumer group. Each Subscribe consumes
// the group's queue of one topic on a channel of its own (prefetch 1), on
// the connection the Broker's subscribers share, and consumes again, on a
// new channel and if need be a new connection, whenever the channel fails.
// Its topology and message mapping are watermill-amqp's, so queues and
// messages are the same as with watermill-amqp's subscriber.
type subscriber struct {
	cfg  wamqp.Config
	conn *connector
	log  *slog.Logger
	wlog watermill.LoggerAdapter
	life support.Lifecycle
}

func newSubscriber(cfg wamqp.Config, conn *connector, log *slog.Logger) *subscriber {
	return &subscriber{cfg: cfg, conn: conn, log: log, wlog: support.Watermill(log)}
}

func (s *subscriber) params(topic string) wamqp.BuildTopologyParams {
	return wamqp.BuildTopologyParams{
		Topic:        topic,
		QueueName:    s.cfg.Queue.GenerateName(topic),
		ExchangeName: s.cfg.Exchange.GenerateName(topic),
		RoutingKey:   s.cfg.QueueBind.GenerateRoutingKey(topic),
	}
}

// SubscribeInitialize declares topic's exchange, the group's queue and the
// binding between them.
func (s *subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := s.conn.get(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer s.closeChannel(conn, ch)
	return s.cfg.TopologyBuilder.BuildTopology(ch, s.params(topic), s.cfg, s.wlog)
}

// Subscribe declares the topology, as SubscribeInitialize does, then
// delivers the group's messages of topic until ctx is done or the
// subscriber is closed.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	err := s.life.Start(func() error { return s.SubscribeInitialize(topic) }, func(closing <-chan struct{}) {
		defer close(out)
		s.consume(ctx, closing, topic, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// consume delivers messages until ctx is done or closing is closed,
// consuming again after each failure.
func (s *subscriber) consume(ctx context.Context, closing <-chan struct{}, topic string, out chan<- *message.Message) {
	stopped := func() bool {
		select {
		case <-ctx.Done():
			return true
		case <-closing:
			return true
		default:
			return false
		}
	}
	for failures := 0; ; {
		conn, err := s.conn.wait(ctx, closing)
		if err != nil {
			return // stopped
		}
		delivered, err := s.consumeOn(ctx, closing, conn, topic, out)
		if stopped() {
			return
		}
		if delivered {
			failures = 0
		}
		failures++
		s.log.Warn("amqp: subscription interrupted; consuming again",
			slog.String("topic", topic), slog.String("queue", s.cfg.Queue.GenerateName(topic)), slog.Any("error", err))
		t := time.NewTimer(resubscribeBackoff.Delay(failures))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-closing:
			t.Stop()
			return
		}
	}
}

// consumeOn consumes topic's queue on a new channel of conn until the
// channel fails (returning why) or the subscription stops (returning nil).
// delivered reports whether any message was delivered.
func (s *subscriber) consumeOn(ctx context.Context, closing <-chan struct{}, conn *amqp091.Connection, topic string, out chan<- *message.Message) (delivered bool, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	// Closing the channel hands back the message held unacked, if any.
	defer s.closeChannel(conn, ch)
	q := s.cfg.Consume.Qos
	if err := ch.Qos(q.PrefetchCount, q.PrefetchSize, q.Global); err != nil {
		return false, fmt.Errorf("set prefetch: %w", err)
	}
	params := s.params(topic)
	if err := s.cfg.TopologyBuilder.BuildTopology(ch, params, s.cfg, s.wlog); err != nil {
		return false, err
	}
	deliveries, err := ch.Consume(params.QueueName, "", false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", params.QueueName, err)
	}
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return delivered, errors.New("the channel closed")
			}
			delivered = true
			if err := s.deliver(ctx, closing, d, out); err != nil {
				return delivered, err
			}
		case <-ctx.Done():
			return delivered, nil
		case <-closing:
			return delivered, nil
		}
	}
}

// deliver hands d to the subscription's reader and acks or nacks it as
// the reader says. It returns nil without settling d when the
// subscription stops first: closing the channel requeues it.
func (s *subscriber) deliver(ctx context.Context, closing <-chan struct{}, d amqp091.Delivery, out chan<- *message.Message) error {
	// Whatever it holds, the message is handed on, for the reader to
	// record if it cannot use it, rather than requeued for ever or dropped.
	msg, _ := marshaler{}.Unmarshal(d)
	if d.Redelivered {
		msg.Metadata.Set(wamqp.MetadataRedeliveredKey, "true")
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(mctx)
	select {
	case out <- msg:
	case <-ctx.Done():
		return nil
	case <-closing:
		return nil
	}
	select {
	case <-msg.Acked():
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	case <-msg.Nacked():
		if err := d.Nack(false, true); err != nil {
			return fmt.Errorf("nack: %w", err)
		}
	case <-ctx.Done():
	case <-closing:
	}
	return nil
}

// closeChannel closes ch, waiting at most closeTimeout for the broker's
// answer; a broker that does not answer in time costs the connection,
// which is dropped (and with it the channel).
func (s *subscriber) closeChannel(conn *amqp091.Connection, ch *amqp091.Channel) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ch.Close()
	}()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.conn.drop(conn, errors.New("the broker did not answer a channel close"))
		<-done
	}
}

// Close stops the subscriber's subscriptions and waits for them to end:
// each closes its channel, which hands its unacked message back to the
// group. It is safe to call more than once.
func (s *subscriber) Close() error { return s.life.Close() }
