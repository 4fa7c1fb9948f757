// Package natsjs is the NATS JetStream transport, on nats.go's jetstream
// API. Messages follow the NATS binding of CloudEvents in binary mode: the
// payload is the body, each attribute a ce- header with a percent-encoded
// value, the content type among them (ce-datacontenttype); other metadata,
// encoded alike, and the Watermill UUID travel as headers of their own
// names, as watermill-nats sends them. So the CloudEvents SDKs read what it publishes,
// and it reads what they publish, in binary mode or in structured mode (a
// JSON event as the payload, with no ce- header), as well as the ce_
// headers of eventgen before the binding.
//
// URLs: nats://user:password@host:4222 (tls:// for TLS; several servers may
// be given comma-separated, as nats.go accepts). The server must run with
// JetStream enabled (nats-server -js); Open checks.
//
// Topology: a topic is the NATS subject of the same name (dots are subject
// token separators, which is fine), stored in a stream of its own named
// after the topic with dots replaced by underscores (stream names cannot
// hold dots; two topics that map to one stream name are reported, not
// mixed). A consumer group is a durable pull consumer named after the group
// on the topic's stream; the subscribers of one group (its replicas) pull
// from it and share its messages.
//
// Retention: streams are on file, with the limits of Options.Retention as
// the stream's MaxAge, MaxBytes and MaxMsgs: by default messages are kept
// for 7 days (DefaultMaxAge), with no limit by count or size, so a group
// created later reads the history of the last 7 days. A stream at a limit
// drops its oldest messages (DiscardOld), whether or not every group has
// read them: a group that falls that far behind finds them gone and goes
// on from the oldest message left. With no limit at all (MaxAge Unlimited
// and no other limit) Open logs a warning.
//
// The Broker applies its limits when it first uses a topic, creating the
// stream or, if the stream was created by eventgen (its description is
// "eventgen topic <topic>") with other limits, updating it to them
// (UpdateStream, logged as a warning, since it may delete messages at
// once). So a changed Retention, and the default of a newer version, take
// effect on the streams that exist; give every service that uses a topic
// the same Retention, or each one's first use resets the limits. A stream
// that was created otherwise (by an operator, with limits of its own) is
// left as it is, and a warning names the limits that differ.
//
// Publish waits for JetStream's PubAck of each message, so a nil error means
// the stream stored it. The Watermill UUID is sent as Nats-Msg-Id, so a
// retried publish within the stream's duplicate window (two minutes) is
// stored once.
//
// Each subscription handles one message at a time. Ack is a double ack
// (confirmed by the server). Nack, and a message left unacked when its
// subscription stops, are naked for immediate redelivery to the group.
// While a handler works on a message the subscriber tells the server it is
// in progress, so a slow handler is not redelivered to another replica; a
// subscriber that dies has its messages redelivered after AckWait (30 s).
package natsjs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventgen/eventgen/runtime/internal/wire"
	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "natsjs"

const (
	// ackWait is how long the server waits for an ack before redelivering.
	ackWait = 30 * time.Second
	// pullBatch is how many messages a subscription buffers ahead, at
	// most: fewer where pullBatch messages of the server's max_payload
	// would be over pullBytes, and at least one (see pullSize).
	pullBatch = 10
	pullBytes = 10 << 20
	// retryWait is the pause before a subscription re-creates its consumer
	// after an error.
	retryWait = time.Second
	// ackTimeout bounds waiting for the server to confirm an ack.
	ackTimeout = 10 * time.Second
	// stopGrace bounds it instead once the subscription is stopping.
	stopGrace = time.Second
	// stallAfter is how long a subscription waits for its next message,
	// while the server holds messages for its consumer, before it takes
	// its pulls for lost and starts pulling anew; stallCheck is how often
	// it looks.
	stallAfter = 10 * time.Second
	stallCheck = 2 * time.Second
)

// errStalled ends a pull that the server no longer answers although it
// holds messages for the consumer, as after a server restart in which the
// pull requests were lost; the subscription then pulls anew.
var errStalled = errors.New("no message pulled for a while, although the server holds some: pulling anew")

// Retention bounds what the streams keep. Of its limits, JetStream honours
// all three.
type Retention = support.Retention

// Unlimited, in a field of Retention, lifts that limit.
const Unlimited = support.Unlimited

// DefaultMaxAge is how long streams keep messages when Retention.MaxAge
// is 0.
const DefaultMaxAge = support.DefaultMaxAge

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Retention holds the limits of the streams the Broker creates or
	// updates (see the package documentation); the zero value keeps
	// messages for DefaultMaxAge. A negative value other than Unlimited,
	// or a MaxAge under a second, is an error from Open.
	Retention Retention
}

// Broker is a connection to a NATS server with JetStream.
type Broker struct {
	ep      *support.Endpoint
	log     *slog.Logger
	limits  support.Limits
	nc      *nats.Conn
	js      jetstream.JetStream
	pub     *support.Publisher
	closers support.Closers

	mu      sync.Mutex
	streams map[string]jetstream.Stream // by topic
}

// Open connects to the server at rawURL and checks that JetStream is
// enabled. It logs a warning if opts.Retention sets no limit at all.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	limits, err := opts.Retention.Check(pkg)
	if err != nil {
		return nil, err
	}
	ep, err := support.Parse(pkg, rawURL)
	if err != nil {
		return nil, err
	}
	if s := ep.URL.Scheme; s != "nats" && s != "tls" {
		return nil, fmt.Errorf("natsjs: URL scheme %q is not nats or tls", s)
	}
	log := ep.Logger(opts.Logger)
	b := &Broker{ep: ep, log: log, limits: limits, streams: make(map[string]jetstream.Stream)}
	natsOpts := []nats.Option{
		nats.Name("eventgen"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("natsjs: disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("natsjs: reconnected") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("natsjs: connection error", "error", err)
		}),
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > 0 {
		natsOpts = append(natsOpts, nats.Timeout(time.Until(dl)))
	}
	b.nc, err = nats.Connect(rawURL, natsOpts...)
	if err != nil {
		return nil, ep.Errorf("natsjs: connect to %s: %w", ep.Redacted, err)
	}
	b.js, err = jetstream.New(b.nc)
	if err == nil {
		_, err = b.js.AccountInfo(ctx)
	}
	if err != nil {
		b.nc.Close()
		return nil, ep.Errorf("natsjs: JetStream on %s (is nats-server running with -js?): %w", ep.Redacted, err)
	}
	b.pub = support.NewPublisher(&b.closers, ep, pkg, &publisher{b: b}, nil)
	limits.WarnUnbounded(log, pkg, "NATS JetStream", true)
	return b, nil
}

// StreamName is the JetStream stream that holds topic.
func StreamName(topic string) string { return strings.ReplaceAll(topic, ".", "_") }

// stream returns topic's stream, creating it on first use with the
// Broker's limits, or updating to them a stream of eventgen's that has
// others.
func (b *Broker) stream(ctx context.Context, topic string) (jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.streams[topic]; ok {
		return s, nil
	}
	name := StreamName(topic)
	s, err := b.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		cfg := jetstream.StreamConfig{
			Name:        name,
			Description: description(topic),
			Subjects:    []string{topic},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
		}
		b.setLimits(&cfg)
		s, err = b.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile elsewhere
			s, err = b.js.Stream(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	if subj := s.CachedInfo().Config.Subjects; !slices.Contains(subj, topic) {
		return nil, fmt.Errorf("stream %s holds subjects %v, not topic %s (topics that differ only in . and _ cannot share a broker)", name, subj, topic)
	}
	if s, err = b.retain(ctx, topic, s); err != nil {
		return nil, err
	}
	b.streams[topic] = s
	return s, nil
}

// description is the description of the stream that eventgen creates for
// topic, by which it recognises the streams whose limits it manages.
func description(topic string) string { return "eventgen topic " + topic }

// setLimits sets cfg's limits to the Broker's, in JetStream's terms (no
// age limit is 0, no count or size limit -1), and shortens the duplicate
// window to MaxAge if it is longer, as JetStream requires.
func (b *Broker) setLimits(cfg *jetstream.StreamConfig) {
	cfg.MaxAge = b.limits.MaxAge
	cfg.MaxBytes, cfg.MaxMsgs = -1, -1
	if b.limits.MaxBytes > 0 {
		cfg.MaxBytes = b.limits.MaxBytes
	}
	if b.limits.MaxMessages > 0 {
		cfg.MaxMsgs = b.limits.MaxMessages
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
}

// retain brings the limits of s, topic's stream, to the Broker's: a
// stream that eventgen created is updated, and one created otherwise is
// left as it is, with a warning.
func (b *Broker) retain(ctx context.Context, topic string, s jetstream.Stream) (jetstream.Stream, error) {
	have := s.CachedInfo().Config
	want := have
	b.setLimits(&want)
	if have.MaxAge == want.MaxAge && have.MaxBytes == want.MaxBytes && have.MaxMsgs == want.MaxMsgs {
		return s, nil
	}
	log := b.log.With("stream", have.Name,
		"max_age", have.MaxAge.String(), "max_bytes", have.MaxBytes, "max_msgs", have.MaxMsgs,
		"retention_max_age", want.MaxAge.String(), "retention_max_bytes", want.MaxBytes, "retention_max_msgs", want.MaxMsgs)
	if have.Description != description(topic) {
		log.Warn("natsjs: the stream was not created by eventgen, so its limits are left as they are, although they differ from the configured retention")
		return s, nil
	}
	s, err := b.js.UpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("stream %s: update its limits to the configured retention: %w", have.Name, err)
	}
	log.Warn("natsjs: updated the stream's limits to the configured retention; messages past them are deleted")
	return s, nil
}

// forget drops topic's stream from the cache.
func (b *Broker) forget(topic string) {
	b.mu.Lock()
	delete(b.streams, topic)
	b.mu.Unlock()
}

// Publisher returns the broker's publisher. Its Close only stops that
// handle; Broker.Close releases the connection.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a new subscriber in consumer group.
func (b *Broker) Subscriber(group string) (support.GroupSubscriber, error) {
	if err := b.closers.NewSubscriber(pkg, group); err != nil {
		return nil, err
	}
	s := &subscriber{b: b, group: group}
	return support.Track(&b.closers, b.ep, pkg, s, nil)
}

// DeleteTopic deletes the topic's stream with its messages and every
// group's consumer on it.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, _ ...string) error {
	if err := support.ValidateTopic(topic); err != nil {
		return fmt.Errorf("natsjs: delete topic: %w", err)
	}
	b.forget(topic)
	err := b.js.DeleteStream(ctx, StreamName(topic))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return b.ep.Errorf("natsjs: delete stream %s: %w", StreamName(topic), err)
	}
	return nil
}

// Close closes every subscriber, then the connection.
//
// A subscription drains before it stops, which takes a round trip to the
// server: if that has not happened within stopGrace (a server that stopped
// answering), the connection is closed under it, which ends it at once.
func (b *Broker) Close() error {
	done := make(chan error, 1)
	go func() { done <- b.closers.CloseAll() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(stopGrace):
		b.nc.Close()
		err = <-done
	}
	b.nc.Close()
	if err != nil {
		return b.ep.Errorf("natsjs: close: %w", err)
	}
	return nil
}

type publisher struct{ b *Broker }

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		ctx := m.Context()
		if _, err := p.b.stream(ctx, topic); err != nil {
			return err
		}
		nm, err := marshal(topic, m)
		if err != nil {
			return err
		}
		if _, err := p.b.js.PublishMsg(ctx, nm, jetstream.WithMsgID(m.UUID)); err != nil {
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				p.b.forget(topic) // the stream was deleted: re-create it next time
			}
			return fmt.Errorf("message %s: %w", m.UUID, err)
		}
	}
	return nil
}

func (p *publisher) Close() error { return nil }

// marshal encodes m for the NATS binding of CloudEvents: each attribute a
// ce- header with a percent-encoded value, the content type among them as
// ce-datacontenttype, and other metadata under its own name, percent-encoded
// too. The Watermill UUID travels as watermill-nats sends it. Metadata that
// no NATS header can name is refused instead of corrupting the protocol.
func marshal(topic string, m *message.Message) (*nats.Msg, error) {
	h := make(nats.Header, len(m.Metadata)+1)
	h.Set(wmnats.WatermillUUIDHdr, m.UUID)
	for k, v := range m.Metadata {
		if k == "" || strings.ContainsAny(k, ": \t\r\n") {
			return nil, fmt.Errorf("message %s: metadata key %q cannot be a NATS header name", m.UUID, k)
		}
		h.Set(wire.NATS.Header(k, v))
	}
	return &nats.Msg{Subject: topic, Header: h, Data: m.Payload}, nil
}

// unmarshal reads a message that marshal, watermill-nats, an earlier
// eventgen or any producer of the NATS binding wrote, in binary or
// structured mode; a message with neither the type attribute nor a content
// type is structured, as the binding has it. An earlier eventgen
// sent ce_ headers and encoded no value, so its messages (a ce_specversion
// header and no ce-specversion) are read as they are: decoding them would
// turn a key such as %41 into A. A header with several values is an error:
// it cannot be metadata.
func unmarshal(jm jetstream.Msg) (*message.Message, error) {
	h := jm.Headers()
	binding := wire.NATS
	if _, plain := h[wire.HeaderSpecVersion]; plain && !hasHeader(h, "ce-specversion") {
		binding = wire.Plain
	}
	md := make(message.Metadata, len(h))
	for k, vs := range h {
		switch k {
		case wmnats.WatermillUUIDHdr, nats.MsgIdHdr, nats.ExpectedLastMsgIdHdr, nats.ExpectedStreamHdr, nats.ExpectedLastSubjSeqHdr, nats.ExpectedLastSeqHdr:
			continue
		}
		if len(vs) != 1 {
			return nil, fmt.Errorf("header %q has %d values", k, len(vs))
		}
		mk, mv := binding.Metadata(k, vs[0])
		md[mk] = mv
	}
	if _, binary := md[wire.HeaderType]; !binary {
		if _, set := md[wire.HeaderContentType]; !set && jsonObject(jm.Data()) {
			// Structured mode, as the NATS binding writes it: the event
			// in the JSON format is the payload, and no header says so
			// (sdk-go's senders write it so, and its receiver reads a
			// message without ce-specversion so).
			md[wire.HeaderContentType] = wire.StructuredContentType
		}
	}
	m := message.NewMessage(h.Get(wmnats.WatermillUUIDHdr), jm.Data())
	m.Metadata = md
	return m, nil
}

// jsonObject reports whether b starts as a JSON object does.
func jsonObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// hasHeader reports whether h has the header name, in any case, as NATS
// header names are case-insensitive.
func hasHeader(h nats.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

type subscriber struct {
	b     *Broker
	group string
	life  support.Lifecycle
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	var cons jetstream.Consumer
	return s.life.Serve(func() (err error) {
		cons, err = s.consumer(ctx, topic)
		return err
	}, func(closing <-chan struct{}, out chan<- *message.Message) {
		s.run(ctx, closing, topic, cons, out)
	})
}

// SubscribeInitialize creates the topic's stream and the group's consumer.
func (s *subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.consumer(ctx, topic)
	return err
}

// consumer creates or updates the group's durable consumer on topic.
func (s *subscriber) consumer(ctx context.Context, topic string) (jetstream.Consumer, error) {
	st, err := s.b.stream(ctx, topic)
	if err != nil {
		return nil, err
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       s.group,
		Description:   "eventgen consumer group " + s.group,
		FilterSubject: topic,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s.b.forget(topic) // deleted meanwhile: re-create it next time
		}
		return nil, fmt.Errorf("consumer %s on stream %s: %w", s.group, st.CachedInfo().Config.Name, err)
	}
	return cons, nil
}

// run pulls from cons until ctx is done or the subscriber closes. After an
// error it waits and re-creates the consumer, so a deleted consumer or a
// restarted server does not end the subscription.
func (s *subscriber) run(ctx context.Context, closing <-chan struct{}, topic string, cons jetstream.Consumer, out chan<- *message.Message) {
	log := s.b.log.With("topic", topic, "group", s.group)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-closing:
		}
		close(stop)
	}()
	for {
		if cons != nil {
			err := s.consume(ctx, cons, out, stop)
			if err == nil {
				return
			}
			if errors.Is(err, errStalled) {
				log.Warn("natsjs: consume", "error", err)
			} else {
				log.Error("natsjs: consume", "error", err)
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(retryWait):
		}
		var err error
		if cons, err = s.consumer(ctx, topic); err != nil {
			log.Error("natsjs: re-create consumer", "error", err)
		}
	}
}

// consume delivers cons's messages to out one at a time. It returns nil
// once stop is closed and an error if the iterator fails.
func (s *subscriber) consume(ctx context.Context, cons jetstream.Consumer, out chan<- *message.Message, stop <-chan struct{}) error {
	iter, err := cons.Messages(jetstream.PullMaxMessages(pullSize(s.b.nc.MaxPayload())), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return err
	}
	defer iter.Stop()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-stop:
			iter.Drain() // Next returns what is buffered, then ErrMsgIteratorClosed
		case <-stopped:
		}
	}()
	// Next runs in a goroutine of its own, one call per request, because
	// after Drain it blocks until the server has answered: a server that
	// stopped answering must not hold the subscription (and Close) for
	// good. Once stop has been closed for stopGrace, consume returns
	// without it; the call ends when the drain does, and a message it
	// returns then is redelivered after ackWait.
	type next struct {
		jm  jetstream.Msg
		err error
	}
	requests := make(chan struct{})
	defer close(requests)
	results := make(chan next, 1)
	go func() {
		for range requests {
			jm, err := iter.Next()
			results <- next{jm, err}
		}
	}()
	stopping := stop
	var abandon <-chan time.Time
	check := time.NewTicker(stallCheck)
	defer check.Stop()
	for {
		requests <- struct{}{}
		waiting := time.Now()
		var r next
		for received := false; !received; {
			select {
			case r = <-results:
				received = true
			case <-stopping:
				stopping = nil
				t := time.NewTimer(stopGrace)
				defer t.Stop()
				abandon = t.C
			case <-abandon:
				return nil
			case <-check.C:
				if stopping != nil && time.Since(waiting) >= stallAfter && s.stalled(ctx, cons) {
					return errStalled
				}
			}
		}
		jm, err := r.jm, r.err
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			select {
			case <-stop:
				return nil
			default:
				return err
			}
		}
		if err != nil {
			return err
		}
		select {
		case <-stop: // drained after stop: give it back at once
			s.nak(jm)
			continue
		default:
		}
		s.handle(ctx, jm, out, stop)
	}
}

// pullSize is how many messages a subscription pulls ahead: pullBatch, or
// as many of the largest message the server takes (maxPayload, its
// max_payload) as fit in pullBytes, and at least one. So a subscription
// holds at most pullBytes (or max_payload, if larger) ahead, plus the
// message being handled. The bound is by count, not with PullMaxBytes: a
// pull whose max_bytes is under the size of the consumer's next message
// gets nothing, again and again, so one message over it would stop the
// group for good.
func pullSize(maxPayload int64) int {
	return int(max(1, min(pullBatch, pullBytes/max(maxPayload, 1))))
}

// stalled reports whether the server holds messages for cons that none
// of its pulls has been given (its pull requests were lost), or no longer
// knows cons.
func (s *subscriber) stalled(ctx context.Context, cons jetstream.Consumer) bool {
	ctx, cancel := context.WithTimeout(ctx, stallCheck)
	defer cancel()
	info, err := cons.Info(ctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true // lost with the server's state: re-created on the next pull
	}
	return err == nil && info.NumPending > 0
}

// handle delivers one message and waits for its ack or nack.
func (s *subscriber) handle(ctx context.Context, jm jetstream.Msg, out chan<- *message.Message, stop <-chan struct{}) {
	m, err := unmarshal(jm)
	if err != nil {
		// A header with several values: redelivering cannot help, so
		// terminate it and say so.
		s.b.log.Error("natsjs: cannot decode message; terminated", "subject", jm.Subject(), "error", err)
		if err := jm.Term(); err != nil {
			s.b.log.Error("natsjs: terminate message", "error", err)
		}
		return
	}
	// The message's context ends when the message is acked or nacked or
	// the subscription stops, as message.Subscriber's contract says.
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.SetContext(mctx)
	select {
	case out <- m:
	case <-stop:
		s.nak(jm)
		return
	}
	progress := time.NewTicker(ackWait / 3)
	defer progress.Stop()
	for {
		select {
		case <-m.Acked():
			actx, cancel := ackContext(ctx, stop)
			err := jm.DoubleAck(actx)
			cancel()
			if err != nil {
				s.b.log.Error("natsjs: ack", "uuid", m.UUID, "error", err)
			}
			return
		case <-m.Nacked():
			s.nak(jm)
			return
		case <-progress.C:
			if err := jm.InProgress(); err != nil {
				s.b.log.Warn("natsjs: mark message in progress", "uuid", m.UUID, "error", err)
			}
		case <-stop:
			if m.Nack() {
				s.nak(jm)
			} else { // the handler acked just now
				actx, cancel := ackContext(ctx, stop)
				_ = jm.DoubleAck(actx)
				cancel()
			}
			return
		}
	}
}

// ackContext bounds waiting for the server to confirm an ack: ackTimeout,
// or stopGrace once stop is closed, so that a server that stopped answering
// cannot hold up Close. An ack left unconfirmed is redelivered after
// ackWait, which consumers absorb.
func ackContext(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	go func() {
		select {
		case <-stop:
			t := time.NewTimer(stopGrace)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-actx.Done():
			}
		case <-actx.Done():
		}
	}()
	return actx, cancel
}

func (s *subscriber) nak(jm jetstream.Msg) {
	if err := jm.Nak(); err != nil {
		s.b.log.Error("natsjs: nak", "error", err)
	}
}

func (s *subscriber) Close() error { return s.life.Close() }
