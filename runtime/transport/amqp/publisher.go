package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// DefaultPublishTimeout bounds a Publish whose messages' contexts carry no
// deadline: getting a channel (and a connection), sending, and waiting for
// the broker's confirms.
const DefaultPublishTimeout = 30 * time.Second

// publisher publishes with publisher confirms on a connection and channels
// of its own, instead of watermill-amqp's channel pool: that pool loses a
// channel each time reopening one fails (on a connection that died while
// the process was frozen, say) and, once empty, blocks every Publish for
// good; its Close then panics on the channels it failed to reopen.
//
// Here no failure can leak capacity: each Publish holds one of a fixed
// number of slots only while it runs; a channel that fails is dropped, and
// a connection that failed, or on which a confirm did not arrive in time,
// is closed and dialled again on the next Publish. Every Publish ends by
// its deadline (the messages' contexts, else DefaultPublishTimeout), except
// for a send to a broker that stopped answering, which ends when the
// client's heartbeat check closes the connection.
type publisher struct {
	cfg   wamqp.Config // topology and marshaling, as the subscribers expect
	conn  *connector
	slots chan struct{} // one per Publish in progress

	mu sync.Mutex
	pc *pubConn // state of the connector's latest connection
}

// pubConn is what lives and dies with one connection.
type pubConn struct {
	conn     *amqp091.Connection
	idle     []*amqp091.Channel // channels in confirm mode not in use
	declared map[string]bool    // exchanges declared on this connection
	// blocked is why the broker blocks publishing (connection.blocked,
	// on a memory or disk alarm), or nil.
	blocked atomic.Pointer[string]
}

func newPublisher(cfg wamqp.Config, channels int, conn *connector) *publisher {
	return &publisher{cfg: cfg, conn: conn, slots: make(chan struct{}, channels)}
}

// Publish sends msgs to topic's exchange and waits for the broker to
// confirm each one. It returns nil only once every message is confirmed.
func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx := msgs[0].Context()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPublishTimeout)
		defer cancel()
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a free channel: %w", context.Cause(ctx))
	}
	defer func() { <-p.slots }()

	pc, err := p.connection(ctx)
	if err != nil {
		return err
	}
	if reason := pc.blocked.Load(); reason != nil {
		return fmt.Errorf("the broker blocks publishing: %s", *reason)
	}
	ch, err := p.channel(pc, topic)
	if err != nil {
		p.failed(pc, nil, err)
		return err
	}
	if err := p.send(ctx, ch, topic, msgs); err != nil {
		p.failed(pc, ch, err)
		return err
	}
	p.mu.Lock()
	pc.idle = append(pc.idle, ch)
	p.mu.Unlock()
	return nil
}

// send publishes msgs on ch and waits for their confirms.
func (p *publisher) send(ctx context.Context, ch *amqp091.Channel, topic string, msgs []*message.Message) error {
	exchange := p.cfg.Exchange.GenerateName(topic)
	key := p.cfg.Publish.GenerateRoutingKey(topic)
	confirms := make([]*amqp091.DeferredConfirmation, 0, len(msgs))
	for _, msg := range msgs {
		pub, err := p.cfg.Marshaler.Marshal(msg)
		if err != nil {
			return fmt.Errorf("marshal message %s: %w", msg.UUID, err)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, pub)
		if err != nil {
			return fmt.Errorf("send message %s: %w", msg.UUID, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("no confirm for message %s: %w", msgs[i].UUID, context.Cause(ctx))
		case !acked && ch.IsClosed():
			return fmt.Errorf("no confirm for message %s: the channel closed", msgs[i].UUID)
		case !acked:
			return fmt.Errorf("the broker refused message %s (nack)", msgs[i].UUID)
		}
	}
	return nil
}

// connection returns the state of the connector's open connection.
func (p *publisher) connection(ctx context.Context) (*pubConn, error) {
	conn, err := p.conn.get(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pc == nil || p.pc.conn != conn {
		p.pc = &pubConn{conn: conn, declared: make(map[string]bool)}
		go p.pc.watchBlocked()
	}
	return p.pc, nil
}

// watchBlocked follows the broker's connection.blocked notifications until
// the connection closes.
func (pc *pubConn) watchBlocked() {
	for b := range pc.conn.NotifyBlocked(make(chan amqp091.Blocking, 1)) {
		if b.Active {
			reason := b.Reason
			pc.blocked.Store(&reason)
		} else {
			pc.blocked.Store(nil)
		}
	}
}

// channel returns an idle channel of pc, or opens one in confirm mode, with
// topic's exchange declared on pc.
func (p *publisher) channel(pc *pubConn, topic string) (*amqp091.Channel, error) {
	exchange := p.cfg.Exchange.GenerateName(topic)
	p.mu.Lock()
	var ch *amqp091.Channel
	for ch == nil && len(pc.idle) > 0 {
		ch = pc.idle[len(pc.idle)-1]
		pc.idle = pc.idle[:len(pc.idle)-1]
		if ch.IsClosed() {
			ch = nil
		}
	}
	declared := pc.declared[exchange]
	p.mu.Unlock()
	if ch == nil {
		var err error
		if ch, err = pc.conn.Channel(); err != nil {
			return nil, fmt.Errorf("open channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			return nil, fmt.Errorf("put channel in confirm mode: %w", err)
		}
	}
	if !declared && exchange != "" {
		if err := p.cfg.TopologyBuilder.ExchangeDeclare(ch, exchange, p.cfg); err != nil {
			return nil, fmt.Errorf("declare exchange %s: %w", exchange, err)
		}
		p.mu.Lock()
		pc.declared[exchange] = true
		p.mu.Unlock()
	}
	return ch, nil
}

// failed drops what a failed Publish leaves in doubt. A channel that is
// still open after a refusal (a nack) is kept. A timeout means that the
// connection no longer answers, or answers too slowly to trust: it is
// dropped, and the next Publish dials a new one.
func (p *publisher) failed(pc *pubConn, ch *amqp091.Channel, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		p.conn.drop(pc.conn, err)
		return
	}
	if ch == nil || pc.conn.IsClosed() {
		return
	}
	if !ch.IsClosed() {
		p.mu.Lock()
		pc.idle = append(pc.idle, ch)
		p.mu.Unlock()
		return
	}
	_ = ch.Close() // closed already: this releases the client's side
}

// Close only stops this publisher's use of the connection: the Broker
// closes the connection.
func (p *publisher) Close() error { return nil }
