// Package mem is the in-process transport: one Watermill GoChannel shared by
// a Broker's publisher and subscribers, with consumer groups added on top.
//
// URLs: mem:// or gochannel:// (anything after the scheme is ignored).
//
// Each (topic, group) pair gets one GoChannel subscription, created by the
// group's first Subscribe and kept until the Broker closes, so that
// messages published while the group's subscribers restart wait for them.
// The group's subscribers take turns: each message goes to one of them,
// and a subscriber handles one message at a time (the next is offered once
// the current one is acked or nacked). A nacked message, or one that a
// subscriber held unacked when it stopped, goes back to the group.
//
// Publish returns once the message is handed to every group subscribed to
// the topic; a topic with no group yet drops it, as a broker's fanout
// exchange with no queue bound does (SubscribeInitialize creates a group
// without consuming). Messages arrive in no particular order. Nothing
// survives the process.
package mem

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "mem"

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the GoChannel's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is an in-process message broker.
type Broker struct {
	ep      *support.Endpoint
	gc      *gochannel.GoChannel
	pub     *support.Publisher
	closers support.Closers

	// ctx lives until Close and carries the groups' GoChannel subscriptions.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	groups map[groupKey]<-chan *message.Message
}

type groupKey struct{ topic, group string }

// Open returns a new in-process broker. rawURL must be empty or use the mem
// or gochannel scheme.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	ep := &support.Endpoint{}
	if rawURL != "" {
		var err error
		if ep, err = support.Parse(pkg, rawURL); err != nil {
			return nil, err
		}
		if s := ep.URL.Scheme; s != "mem" && s != "gochannel" {
			return nil, fmt.Errorf("mem: URL scheme %q is not mem or gochannel", s)
		}
	}
	log := ep.Logger(opts.Logger)
	gc := gochannel.NewGoChannel(gochannel.Config{}, support.Watermill(log))
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b := &Broker{
		ep:     ep,
		gc:     gc,
		ctx:    bctx,
		cancel: cancel,
		groups: make(map[groupKey]<-chan *message.Message),
	}
	b.pub = support.NewPublisher(&b.closers, ep, pkg, gc, nil)
	return b, nil
}

// Publisher returns the broker's publisher. Its Close only stops that
// handle; Broker.Close releases the broker.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a new subscriber in consumer group. Each subscriber is
// one replica of the group; see the package documentation.
func (b *Broker) Subscriber(group string) (support.GroupSubscriber, error) {
	if err := b.closers.NewSubscriber(pkg, group); err != nil {
		return nil, err
	}
	s := &subscriber{b: b, group: group}
	return support.Track(&b.closers, b.ep, pkg, s, nil)
}

// DeleteTopic only checks topic: an in-process broker keeps nothing that
// outlives it.
func (b *Broker) DeleteTopic(_ context.Context, topic string, _ ...string) error {
	if err := support.ValidateTopic(topic); err != nil {
		return fmt.Errorf("mem: delete topic: %w", err)
	}
	return nil
}

// Close closes every subscriber, then the GoChannel. Messages not yet acked
// are lost.
func (b *Broker) Close() error {
	err := b.closers.CloseAll()
	b.cancel()
	if cerr := b.gc.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("mem: close: %w", cerr)
	}
	return err
}

// groupOutput returns the GoChannel subscription of (topic, group),
// subscribing on first use.
func (b *Broker) groupOutput(topic, group string) (<-chan *message.Message, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := groupKey{topic, group}
	if out, ok := b.groups[k]; ok {
		return out, nil
	}
	out, err := b.gc.Subscribe(b.ctx, topic)
	if err != nil {
		return nil, err
	}
	b.groups[k] = out
	return out, nil
}

type subscriber struct {
	b     *Broker
	group string
	life  support.Lifecycle
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.life.Subscribe(ctx, func() (<-chan *message.Message, error) {
		return s.b.groupOutput(topic, s.group)
	})
}

// SubscribeInitialize creates the group's subscription to topic, so that
// messages published from now on wait for the group's subscribers.
func (s *subscriber) SubscribeInitialize(topic string) error {
	_, err := s.b.groupOutput(topic, s.group)
	return err
}

func (s *subscriber) Close() error { return s.life.Close() }
