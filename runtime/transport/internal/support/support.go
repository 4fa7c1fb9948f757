// Package support holds what every broker package shares: parsing a URL
// without leaking its password, the name rules for topics and consumer
// groups, a Watermill logger on log/slog, and tracking of subscribers so
// that a broker's Close releases them.
package support

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Mask replaces every secret in errors, logs and redacted URLs.
const Mask = "xxxxx"

// secretParams are query parameters whose values are secrets.
var secretParams = []string{"password", "passwd", "pass", "pwd", "secret", "token", "sslpassword", "auth"}

// tokenSchemes are the schemes whose URL may carry a token as a user name
// without a password.
var tokenSchemes = map[string]bool{"nats": true, "tls": true}

// Endpoint is a parsed broker URL and the secrets it holds.
type Endpoint struct {
	URL      *url.URL // the parsed URL, password included: never log it
	Redacted string   // the URL with every secret masked, safe to show
	secrets  []string
}

// Parse parses raw as a URL. A malformed URL is reported without any part of
// it, since the part that failed to parse may be the password.
func Parse(pkg, raw string) (*Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: malformed URL (not shown: it may hold a password)", pkg)
	}
	ep := &Endpoint{URL: u}
	if p, ok := u.User.Password(); ok && p != "" {
		ep.secrets = append(ep.secrets, p, url.QueryEscape(p), url.PathEscape(p))
	}
	red := *u
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			red.User = url.UserPassword(u.User.Username(), Mask)
		} else if tokenSchemes[u.Scheme] && u.User.Username() != "" {
			// nats://token@host: the user part alone is a secret token.
			ep.secrets = append(ep.secrets, u.User.Username(), url.QueryEscape(u.User.Username()))
			red.User = url.User(Mask)
		}
	}
	q := u.Query()
	for k, vs := range q {
		if !isSecretParam(k) {
			continue
		}
		for i, v := range vs {
			if v != "" {
				ep.secrets = append(ep.secrets, v, url.QueryEscape(v))
			}
			vs[i] = Mask
		}
	}
	red.RawQuery = q.Encode()
	ep.Redacted = red.String()
	return ep, nil
}

func isSecretParam(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretParams {
		if k == s {
			return true
		}
	}
	return false
}

// Redact returns s with every secret of the endpoint masked.
func (ep *Endpoint) Redact(s string) string {
	for _, sec := range ep.secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	return s
}

// Errorf formats an error as fmt.Errorf does and masks the endpoint's
// secrets in its text. The wrapped error stays reachable with errors.Is and
// errors.As; only the message is rewritten.
func (ep *Endpoint) Errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &redactedError{msg: ep.Redact(err.Error()), err: errors.Unwrap(err)}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Logger returns l (or a logger that discards everything when l is nil) with
// the endpoint's secrets masked in messages and attribute values.
func (ep *Endpoint) Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	if len(ep.secrets) == 0 {
		return l
	}
	return slog.New(&redactHandler{h: l.Handler(), ep: ep})
}

// Watermill adapts l to Watermill's logger. Watermill's Info messages are
// lifecycle chatter (connected, subscribed) and are logged at Debug; its
// Trace messages at Debug-4. Errors stay errors, except those caused by a
// cancelled context, which is how subscriptions stop: they are logged at
// Debug.
func Watermill(l *slog.Logger) watermill.LoggerAdapter {
	return wmLogger{watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})}
}

type wmLogger struct{ watermill.LoggerAdapter }

func (w wmLogger) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) {
		w.Debug(msg, fields.Add(watermill.LogFields{"error": err}))
		return
	}
	w.LoggerAdapter.Error(msg, err, fields)
}

func (w wmLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return wmLogger{w.LoggerAdapter.With(fields)}
}

type redactHandler struct {
	h  slog.Handler
	ep *Endpoint
}

func (r *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return r.h.Enabled(ctx, l)
}

func (r *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.ep.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.ep.Redact(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		red := make([]any, len(attrs))
		for i, ga := range attrs {
			red[i] = r.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		// fmt calls Error and String, and survives a nil pointer in an
		// interface (amqp091 sends a nil *Error when a connection closes
		// cleanly), which a direct call would not.
		return slog.String(a.Key, r.ep.Redact(fmt.Sprint(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (r *redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = r.attr(a)
	}
	return &redactHandler{h: r.h.WithAttrs(red), ep: r.ep}
}

func (r *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: r.h.WithGroup(name), ep: r.ep}
}

// MaxTopicLen is the longest topic name any transport accepts.
const MaxTopicLen = 200

// MaxGroupLen is the longest consumer group name any transport accepts.
const MaxGroupLen = 64

// ValidateTopic checks that topic can name a stream on every broker: 1 to
// MaxTopicLen characters from [A-Za-z0-9_.-], with dots only between
// non-empty parts (shop.orders, not .orders or shop..orders).
func ValidateTopic(topic string) error {
	if topic == "" {
		return errors.New("topic is empty")
	}
	if len(topic) > MaxTopicLen {
		return fmt.Errorf("topic %q is longer than %d characters", topic, MaxTopicLen)
	}
	for i := 0; i < len(topic); i++ {
		if !nameByte(topic[i]) && topic[i] != '.' {
			return fmt.Errorf("topic %q: character %q is not allowed (use A-Z a-z 0-9 _ - .)", topic, topic[i])
		}
	}
	if topic[0] == '.' || topic[len(topic)-1] == '.' || strings.Contains(topic, "..") {
		return fmt.Errorf("topic %q: dots must separate non-empty parts", topic)
	}
	return nil
}

// ValidateGroup checks that group can name a durable queue, consumer or
// consumer group on every broker: 1 to MaxGroupLen characters from
// [A-Za-z0-9_-] (no dots: NATS consumer names cannot hold them).
func ValidateGroup(group string) error {
	if group == "" {
		return errors.New("consumer group is empty")
	}
	if len(group) > MaxGroupLen {
		return fmt.Errorf("consumer group %q is longer than %d characters", group, MaxGroupLen)
	}
	for i := 0; i < len(group); i++ {
		if !nameByte(group[i]) {
			return fmt.Errorf("consumer group %q: character %q is not allowed (use A-Z a-z 0-9 _ -)", group, group[i])
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ErrClosed is returned by a broker used after Close.
var ErrClosed = errors.New("transport is closed")

// Closers tracks what a broker must close on Close. The zero value is ready.
type Closers struct {
	mu     sync.Mutex
	closed bool
	next   int
	items  map[int]func() error
}

// Add registers close and returns a function that closes it once and
// forgets it. It fails with ErrClosed after CloseAll.
func (c *Closers) Add(close func() error) (func() error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.items == nil {
		c.items = make(map[int]func() error)
	}
	id := c.next
	c.next++
	c.items[id] = close
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			c.mu.Lock()
			delete(c.items, id)
			c.mu.Unlock()
			err = close()
		})
		return err
	}, nil
}

// CloseAll closes everything registered, in the reverse order of
// registration, and refuses new registrations.
func (c *Closers) CloseAll() error {
	c.mu.Lock()
	c.closed = true
	items := c.items
	c.items = nil
	c.mu.Unlock()
	ids := slices.Sorted(maps.Keys(items))
	var errs []error
	for _, id := range slices.Backward(ids) { // newest first, like defer
		errs = append(errs, items[id]())
	}
	return errors.Join(errs...)
}

// NewSubscriber checks, for pkg's Broker.Subscriber, that group is a valid
// name and that the broker is still open.
func (c *Closers) NewSubscriber(pkg, group string) error {
	if err := ValidateGroup(group); err != nil {
		return fmt.Errorf("%s: new subscriber: %w", pkg, err)
	}
	if c.Closed() {
		return fmt.Errorf("%s: new subscriber: %w", pkg, ErrClosed)
	}
	return nil
}

// Closed reports whether CloseAll has been called.
func (c *Closers) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Lifecycle runs the goroutines of a subscriber's subscriptions and stops
// them on Close. The zero value is ready.
type Lifecycle struct {
	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// Start runs setup and, if it succeeds, run in a new goroutine; run must
// return soon after closing is closed. Start fails with ErrClosed after
// Close. Calls to Start are serialized.
func (l *Lifecycle) Start(setup func() error, run func(closing <-chan struct{})) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.closing == nil {
		l.closing = make(chan struct{})
	}
	if err := setup(); err != nil {
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		run(l.closing)
	}()
	return nil
}

// Close closes the channel every run watches and waits for them to return.
// It is safe to call more than once.
func (l *Lifecycle) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		if l.closing == nil {
			l.closing = make(chan struct{})
		}
		close(l.closing)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// Forward hands the messages of in to out one at a time, until in is
// closed, ctx is done or stop is closed. Each goes out as a copy whose
// context derives from ctx and is cancelled once the copy is acked or
// nacked or Forward stops, as message.Subscriber's contract says; the
// original is acked or nacked as the copy is. A message held when Forward
// stops is nacked, unless its copy was acked just then.
//
// It is for subscribers whose messages' contexts outlive their ack (the
// GoChannel's live until it closes; watermill-sql redelivers a nacked
// message with the same context).
func Forward(ctx context.Context, stop <-chan struct{}, in <-chan *message.Message, out chan<- *message.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case m, ok := <-in:
			if !ok || !forward(ctx, stop, m, out) {
				return
			}
		}
	}
}

// Serve starts a subscription: setup runs at once, and if it succeeds
// run delivers to the returned channel in a goroutine of its own, until
// closing is closed (by Close); the channel is closed when run returns.
// It fails with ErrClosed after Close.
func (l *Lifecycle) Serve(setup func() error, run func(closing <-chan struct{}, out chan<- *message.Message)) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	err := l.Start(setup, func(closing <-chan struct{}) {
		defer close(out)
		run(closing, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Subscribe starts a subscription whose messages come from the channel
// subscribe returns, through Forward (see there), until ctx is done or
// Close is called. It fails with ErrClosed after Close.
func (l *Lifecycle) Subscribe(ctx context.Context, subscribe func() (<-chan *message.Message, error)) (<-chan *message.Message, error) {
	var in <-chan *message.Message
	return l.Serve(func() (err error) {
		in, err = subscribe()
		return err
	}, func(closing <-chan struct{}, out chan<- *message.Message) {
		Forward(ctx, closing, in, out)
	})
}

// forward hands a copy of m to out and settles m as the copy is settled.
// It reports false if ctx is done or stop closed meanwhile.
func forward(ctx context.Context, stop <-chan struct{}, m *message.Message, out chan<- *message.Message) bool {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := m.Copy()
	c.SetContext(mctx)
	select {
	case out <- c:
	case <-ctx.Done():
		m.Nack()
		return false
	case <-stop:
		m.Nack()
		return false
	}
	select {
	case <-c.Acked():
		m.Ack()
		return true
	case <-c.Nacked():
		m.Nack()
		return true
	case <-ctx.Done():
	case <-stop:
	}
	if c.Nack() { // not acked: it goes back
		m.Nack()
	} else {
		m.Ack()
	}
	return false
}

// GroupSubscriber is what every broker's Subscriber returns (package
// transport names it transport.Subscriber): a Watermill subscriber of one
// consumer group that can also create the group's subscription to a topic
// before the first Subscribe.
type GroupSubscriber interface {
	message.Subscriber
	message.SubscribeInitializer
}

// Subscriber wraps a broker's Watermill subscriber: every topic is checked
// before use, errors are redacted, and Close also forgets the subscriber in
// the broker's Closers.
//
// Close cancels the context of every subscription before it closes the
// inner subscriber, so that a subscription blocked on a broker that stopped
// answering (a query, a fetch) ends at once instead of holding Close until
// the network gives up.
type Subscriber struct {
	inner   message.Subscriber
	ep      *Endpoint
	pkg     string
	close   func() error
	prepare func(topic string) error

	mu      sync.Mutex
	cancels []context.CancelFunc
}

// Track registers sub in c. prepare, if not nil, runs before each Subscribe
// and SubscribeInitialize with the validated topic (to check broker-specific
// limits or create resources). pkg prefixes error messages. On error the
// GroupSubscriber is nil, not a nil *Subscriber, so that a broker's
// Subscriber can return Track's results as they are.
func Track(c *Closers, ep *Endpoint, pkg string, sub message.Subscriber, prepare func(topic string) error) (GroupSubscriber, error) {
	s := &Subscriber{inner: sub, ep: ep, pkg: pkg, prepare: prepare}
	closeFn, err := c.Add(func() error {
		s.cancelAll()
		return sub.Close()
	})
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("%s: new subscriber: %w", pkg, err)
	}
	s.close = closeFn
	return s, nil
}

func (s *Subscriber) cancelAll() {
	s.mu.Lock()
	cancels := s.cancels
	s.cancels = nil
	s.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}

// CompetingSubscriptions reports true: on every broker of package transport,
// several Subscribe calls to one topic in one group share the group's
// messages, each message going to one of them. eventgen's Consumer looks
// for this method before it subscribes to a topic more than once.
func (s *Subscriber) CompetingSubscriptions() bool { return true }

// MessagingSystem returns the broker's value of the OpenTelemetry
// attribute messaging.system; see the package function MessagingSystem.
func (s *Subscriber) MessagingSystem() string { return MessagingSystem(s.pkg) }

// Subscribe implements message.Subscriber.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := check(topic, s.prepare); err != nil {
		return nil, s.ep.Errorf("%s: subscribe to %s: %w", s.pkg, topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancels = append(s.cancels, cancel)
	s.mu.Unlock()
	ch, err := s.inner.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		return nil, s.ep.Errorf("%s: subscribe to %s: %w", s.pkg, topic, err)
	}
	return ch, nil
}

// SubscribeInitialize creates what the topic needs on the broker without
// consuming, where the broker supports it.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if err := check(topic, s.prepare); err != nil {
		return s.ep.Errorf("%s: initialize %s: %w", s.pkg, topic, err)
	}
	if si, ok := s.inner.(message.SubscribeInitializer); ok {
		if err := si.SubscribeInitialize(topic); err != nil {
			return s.ep.Errorf("%s: initialize %s: %w", s.pkg, topic, err)
		}
	}
	return nil
}

// Close implements message.Subscriber. It is safe to call more than once.
func (s *Subscriber) Close() error {
	if err := s.close(); err != nil {
		return s.ep.Errorf("%s: close subscriber: %w", s.pkg, err)
	}
	return nil
}

// Publisher wraps a broker's Watermill publisher: every topic is checked
// before use and errors are redacted. Its Close only stops this handle from
// publishing; the broker closes the inner publisher in its own Close.
type Publisher struct {
	inner   message.Publisher
	ep      *Endpoint
	pkg     string
	prepare func(topic string) error
	closers *Closers

	mu     sync.RWMutex
	closed bool
}

// NewPublisher wraps inner. prepare, if not nil, runs before each Publish
// with the validated topic.
func NewPublisher(c *Closers, ep *Endpoint, pkg string, inner message.Publisher, prepare func(topic string) error) *Publisher {
	return &Publisher{inner: inner, ep: ep, pkg: pkg, prepare: prepare, closers: c}
}

// MessagingSystem returns the broker's value of the OpenTelemetry
// attribute messaging.system; see the package function MessagingSystem.
func (p *Publisher) MessagingSystem() string { return MessagingSystem(p.pkg) }

// MessagingSystem returns the value of the OpenTelemetry attribute
// messaging.system for the broker package pkg: the semantic conventions'
// well-known value where there is one (rabbitmq), and otherwise the
// broker's name in lower case, as the conventions ask of a system they do
// not list. eventgen's Outbox and Consumer read it from a publisher or
// subscriber with a MessagingSystem method, which Publisher and Subscriber
// have, for their spans.
func MessagingSystem(pkg string) string {
	switch pkg {
	case "amqp":
		return "rabbitmq"
	case "natsjs":
		return "nats"
	case "redisstream":
		return "redis"
	case "sqlbroker":
		return "sql"
	case "mem":
		return "in_process"
	}
	return pkg
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed || p.closers.Closed() {
		return fmt.Errorf("%s: publish to %s: %w", p.pkg, topic, ErrClosed)
	}
	if err := check(topic, p.prepare); err != nil {
		return p.ep.Errorf("%s: publish to %s: %w", p.pkg, topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return p.ep.Errorf("%s: publish to %s: %w", p.pkg, topic, err)
	}
	return nil
}

// Close implements message.Publisher: later calls to Publish fail. It waits
// for publishes in progress and is safe to call more than once.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

func check(topic string, prepare func(string) error) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if prepare != nil {
		return prepare(topic)
	}
	return nil
}
