package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// NodeConfig configures the relays and consumers of one process.
type NodeConfig struct {
	DB     string // sqlite, postgres or mysql
	DSN    string // file path for SQLite
	Broker string // transport URL, "" for in-process
	// Namespace prefixes every topic (see Namespace).
	Namespace string
	Tables    Tables
	// Groups are the consumer groups to run; none runs no consumer.
	Groups []string
	// Relays is how many outbox relays to run.
	Relays int
	// RawDir receives the raw delivery log.
	RawDir string
	// ProgressFile, if set, receives the node's ProgressLog.
	ProgressFile string
	// MaxRetries of the consumers; 0 for the default.
	MaxRetries int
	// TuneOutbox, if set, adjusts the relays' options.
	TuneOutbox func(*eventgen.OutboxOptions)
	Logger     *slog.Logger

	// Failpoint hooks; nil hooks do nothing.
	BeforePublish func()
	AfterPublish  func()
	BeforeAck     func(id string)
	MidHandler    func(id string)
}

// Node is a running set of relays and consumers.
type Node struct {
	DB         *bun.DB
	Transport  *transport.Transport
	Outbox     *eventgen.Outbox // the first relay's, nil without relays
	Publishers []*Publisher
	Consumers  []*eventgen.Consumer

	cancel context.CancelFunc
	wg     sync.WaitGroup
	subs   []*Subscriber
	raw    *RawLog
	prog   *ProgressLog

	mu   sync.Mutex
	errs []error
}

// StartNode opens the database and the broker and starts cfg's consumers,
// then its relays. The consumers' groups exist on the broker before any
// relay publishes.
func StartNode(ctx context.Context, cfg NodeConfig) (_ *Node, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{}
	ctx, n.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			_ = n.Stop()
		}
	}()
	if n.DB, err = OpenDB(cfg.DB, cfg.DSN); err != nil {
		return nil, err
	}
	if n.Transport, err = OpenTransport(ctx, cfg.Broker, transport.Options{Logger: log}); err != nil {
		return nil, err
	}
	if cfg.RawDir != "" && len(cfg.Groups) > 0 {
		if n.raw, err = OpenRawLog(cfg.RawDir); err != nil {
			return nil, err
		}
	}
	if cfg.ProgressFile != "" {
		if n.prog, err = OpenProgressLog(cfg.ProgressFile); err != nil {
			return nil, err
		}
	}
	var acks *AckWaiter
	if n.Transport.Scheme() == "mem" && len(cfg.Groups) > 0 {
		acks = NewAckWaiter(len(cfg.Groups), 10*time.Second)
	}
	for _, g := range cfg.Groups {
		inner, err := n.Transport.Subscriber(g)
		if err != nil {
			return nil, err
		}
		sub := NewSubscriber(inner, cfg.Namespace, g, n.raw, acks)
		sub.BeforeAck, sub.Progress = cfg.BeforeAck, n.prog
		n.subs = append(n.subs, sub)
		if err := sub.SubscribeInitialize(shopevents.TopicOrders); err != nil {
			return nil, fmt.Errorf("chaos: create group %s: %w", g, err)
		}
		c, err := NewConsumer(n.DB, sub, cfg.Tables, ConsumerOptions(cfg.Tables, g, cfg.MaxRetries, log), cfg.MidHandler)
		if err != nil {
			return nil, err
		}
		n.Consumers = append(n.Consumers, c)
		n.run(func() error { return c.Run(ctx) })
	}
	for range cfg.Relays {
		p := NewPublisher(n.Transport.Publisher(), cfg.Namespace, acks)
		p.BeforePublish, p.AfterPublish, p.Progress = cfg.BeforePublish, cfg.AfterPublish, n.prog
		opts := RelayOptions(cfg.Tables, log)
		if cfg.TuneOutbox != nil {
			cfg.TuneOutbox(&opts)
		}
		ob, err := eventgen.NewOutbox(n.DB, p, opts)
		if err != nil {
			return nil, err
		}
		if n.Outbox == nil {
			n.Outbox = ob
		}
		n.Publishers = append(n.Publishers, p)
		n.run(func() error { return ob.Run(ctx) })
	}
	return n, nil
}

func (n *Node) run(f func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(); err != nil {
			n.mu.Lock()
			n.errs = append(n.errs, err)
			n.mu.Unlock()
		}
	}()
}

// Stop stops the relays and consumers, waits for them and closes
// everything. It returns the errors the relays and consumers returned.
func (n *Node) Stop() error {
	n.cancel()
	n.wg.Wait()
	errs := n.errs
	for _, s := range n.subs {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.Transport != nil {
		if err := n.Transport.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.raw.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := n.prog.Close(); err != nil {
		errs = append(errs, err)
	}
	if n.DB != nil {
		_ = n.DB.Close()
	}
	return errors.Join(errs...)
}
