package eventgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/backoff"
	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// Consumer receives events for one consumer group from a Watermill
// subscriber, records each message in an inbox table and runs its handler in
// a transaction, so that the handler's database effects are applied exactly
// once per group however often the broker delivers a message.
//
// Register handlers with [Handle] (or a generated Register function), create
// the table with [Consumer.Migrate], then call [Consumer.Run].
//
// # How a message is handled
//
// A delivered message whose event has a handler takes the fast path: one
// transaction inserts its inbox row as succeeded, runs the handler with that
// transaction (see [Tx]) and commits; only then is the message acknowledged.
// If the group already has a row for the message id (a redelivery, or another
// replica got it first), the message is acknowledged without running the
// handler. A crash before the commit leaves nothing behind and the broker
// redelivers; a crash after it leaves the row, so the redelivery is absorbed.
// Only writes made through [Tx] share this guarantee: other side effects of a
// handler (calls to other services) happen at least once, and a retried
// handler may repeat them.
//
// When the handler fails, its transaction is rolled back and the row is
// recorded as pending in a transaction of its own, then the message is
// acknowledged: a failing message never holds up the ones behind it, but
// for the later events of its own key (see "Per-key ordering"). Retries
// run from the table, in two tiers measured in attempts: the first
// LocalRetries retries wait LocalRetryInterval grown exponentially with
// jitter, the later ones RetryInterval grown the same way and at least
// RetryMinAge. Every PollInterval, the retrier claims due rows with a lease
// (FOR UPDATE SKIP LOCKED, so replicas share the work) and runs each in a
// transaction that first checks it still holds the lease. After MaxRetries
// attempts the row is failed: kept for FailedRetention, listed by
// [Consumer.Failed] and re-run by [Consumer.Reexecute].
//
// A message whose payload does not decode or validate, whose metadata is
// malformed, or whose payload is over 4 MiB (then not stored) is recorded as
// failed at once with the reason. A message for an
// event the group has no handler for is recorded as skipped. Both are
// acknowledged.
//
// Decoding is lenient about what a newer producer may add: unknown JSON
// fields are ignored, and an event of a higher version than the handler's is
// decoded all the same. A value the handler's enum does not know fails
// validation, so the message fails.
//
// # Per-key ordering
//
// An event with a key carries its sequence among the events of its source,
// topic and key, numbered in commit order by [Outbox.Publish]. The group
// applies them in that order: an event runs only in the transaction that
// moves its key from the sequence before it to its own, one that arrives
// early is held (stored and acknowledged, taking no handler slot) until the
// one before it is applied, and one that arrives after the key has passed
// it is recorded as failed. An event that fails for good blocks its key
// until it is re-executed or skipped ([Consumer.SkipNext]);
// [Consumer.BlockedKeys] lists such keys. Events of other keys, and events
// without a key, are not held up. See docs/ordering.md.
//
// Concurrency bounds the handlers running at once, across topics. Within
// one topic, handlers run concurrently only where the subscriber lets
// several subscriptions of a group share the topic's messages, as those of
// package transport do: Run then subscribes up to Concurrency times (at
// most 16) per topic. On another subscriber it subscribes once per topic,
// and that topic's messages are handled one at a time.
//
// On SQLite, which has one writer at a time, handlers' transactions run one
// after another whatever Concurrency says; Concurrency 1 avoids lock waits.
type Consumer struct {
	db    *bun.DB
	sub   message.Subscriber
	opts  ConsumerOptions
	inbox *tables.Inbox
	// policy is the retry tiers of opts.
	policy leased.Policy
	log    *slog.Logger
	// owner identifies this Consumer in lock_owner.
	owner string
	// sem bounds the handlers running at once, delivered or retried.
	sem chan struct{}
	// dbErrors counts consecutive database errors on the delivery path, to
	// back off instead of spinning through redeliveries during an outage.
	dbErrors atomic.Int64
	// prepared keeps the inbox's statements prepared; nil with
	// NoPreparedStatements.
	prepared *sqlstore.Prepared
	// tracing is nil when tracing is off; see newTracing.
	tracing *tracing
	// metrics is nil when metrics are off; see meterOf.
	metrics *consumerMetrics

	mu sync.Mutex
	// handlers is keyed by event name; it does not change once Run starts.
	handlers map[string]*handler
	started  bool
	// subscribed is closed once Run has subscribed to every topic.
	subscribed chan struct{}

	// poke makes the retrier look for due rows at once: an event it
	// held has been woken.
	poke chan struct{}
	// warned remembers keys whose wait was logged.
	warned warned

	// hooks is nil outside tests.
	hooks *consumerHooks
}

// NewConsumer returns a consumer that reads from sub and keeps its inbox in
// db. Invalid options are reported here, all at once. The caller keeps
// ownership of sub and closes it after Run returns.
//
// sub may be nil for a Consumer that only works on the inbox table: a tool
// that lists and re-executes failed messages needs no broker. Migrate,
// Stats, Failed, Reexecute, ReexecuteFailed and Clean then work; Run
// returns an error at once.
func NewConsumer(db *bun.DB, sub message.Subscriber, opts ConsumerOptions) (*Consumer, error) {
	if db == nil {
		return nil, errors.New("eventgen: NewConsumer: db is nil")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d, err := sqlstore.DialectOf(db)
	if err != nil {
		return nil, fmt.Errorf("eventgen: NewConsumer: %w", err)
	}
	var prepared *sqlstore.Prepared
	if !opts.NoPreparedStatements {
		prepared = sqlstore.NewPrepared(db, d)
	}
	c := &Consumer{
		db:         db,
		sub:        sub,
		opts:       opts,
		inbox:      tables.NewInbox(d, opts.Table, opts.Group, prepared),
		prepared:   prepared,
		policy:     opts.policy(),
		log:        opts.Logger.With("component", "eventgen.consumer", "group", opts.Group),
		owner:      newOwnerID(),
		sem:        make(chan struct{}, opts.Concurrency),
		subscribed: make(chan struct{}),
		poke:       make(chan struct{}, 1),
		handlers:   make(map[string]*handler),
		tracing:    newTracing(opts.TracerProvider, opts.Propagator, sub, trace.SpanKindConsumer),
	}
	if prepared != nil {
		prepared.TraceWith(c.tracing.statementSpan(d))
	}
	c.metrics = newConsumerMetrics(c, opts.MeterProvider)
	return c, nil
}

// Group returns the consumer group c handles messages for, as given in
// ConsumerOptions.Group. Generated Register functions check it.
func (c *Consumer) Group() string { return c.opts.Group }

// Migrate creates the inbox table and its indexes, or upgrades them. It is
// idempotent and safe to call from several replicas at once. A table that
// was dropped while its versions stayed recorded in eventgen_migrations is
// created again.
func (c *Consumer) Migrate(ctx context.Context) error {
	if err := sqlstore.Migrate(ctx, c.db, c.opts.Table, tables.InboxMigrations); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	return nil
}

// InboxSchema returns the statements that create an inbox table named table
// on dialect (postgres, mysql or sqlite), for teams that apply schema changes
// with their own migration tool. The last statements record the applied
// version, so that [Consumer.Migrate] later finds nothing to do.
func InboxSchema(dialect, table string) ([]string, error) {
	if table == "" {
		table = DefaultInboxTable
	}
	if err := sqlstore.ValidateTableName(table); err != nil {
		return nil, fmt.Errorf("inbox schema: %w", err)
	}
	d, err := sqlstore.DialectByName(dialect)
	if err != nil {
		return nil, fmt.Errorf("inbox schema: %w", err)
	}
	return sqlstore.SchemaSQL(d, table, tables.InboxMigrations), nil
}

// register adds h; see Handle.
func (c *Consumer) register(h *handler) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("eventgen: Handle %s: consumer %q is already running", h.name, c.opts.Group)
	}
	if prev, ok := c.handlers[h.name]; ok {
		return fmt.Errorf("eventgen: Handle %s: group %q already has a handler for it (for %s)", h.name, c.opts.Group, prev.goType)
	}
	c.handlers[h.name] = h
	return nil
}

// start marks c running and returns its topics, sorted.
func (c *Consumer) start() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return nil, errors.New("consumer: Run called more than once")
	}
	if len(c.handlers) == 0 {
		return nil, fmt.Errorf("consumer %s: no handlers registered", c.opts.Group)
	}
	c.started = true
	seen := make(map[string]bool)
	var topics []string
	for _, h := range c.handlers {
		if !seen[h.topic] {
			seen[h.topic] = true
			topics = append(topics, h.topic)
		}
	}
	sort.Strings(topics)
	return topics, nil
}

// Run subscribes to the topics of the registered handlers and handles
// messages, retries due rows and cleans up expired ones until ctx is done.
//
// When ctx is done, Run stops taking messages and cancels the context of the
// handlers still running: their transactions roll back, and their messages
// stay unacknowledged (so the broker redelivers them) or their rows go back
// to pending (so they are retried). Run returns once all of them have
// returned, with nil, or with an error if a subscription failed or closed
// before ctx was done. Run may be called once.
//
// So Run returns as soon as the handlers running return after their
// context is cancelled (and the short writes that record their outcome, at
// most 5 seconds each), whatever the broker does: it does not wait for the
// subscriber to close its channels. Close the subscriber after Run
// returns.
func (c *Consumer) Run(ctx context.Context) error {
	if c.sub == nil {
		return fmt.Errorf("consumer %s: Run needs a subscriber; this Consumer was created with none (database operations only)", c.opts.Group)
	}
	topics, err := c.start()
	if err != nil {
		return err
	}
	// Last: statements that Run's work began to prepare in the background.
	defer c.prepared.Wait(prepareWait)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	perTopic := c.subscriptionsPerTopic(len(topics))
	type subscription struct {
		topic string
		ch    <-chan *message.Message
	}
	subs := make([]subscription, 0, len(topics)*perTopic)
	for _, t := range topics {
		for range perTopic {
			ch, err := c.sub.Subscribe(ctx, t)
			if err != nil {
				cancel()
				return fmt.Errorf("consumer %s: subscribe to %s: %w", c.opts.Group, t, err)
			}
			subs = append(subs, subscription{t, ch})
		}
	}
	c.log.Info("consumer started", "topics", topics, "subscriptions_per_topic", perTopic, "owner", c.owner)
	close(c.subscribed)
	fatal := make(chan error, len(subs))
	for _, s := range subs {
		wg.Add(1)
		go c.receive(ctx, &wg, s.topic, s.ch, fatal)
	}
	wg.Add(3)
	go c.retryLoop(ctx, &wg)
	go c.cleanLoop(ctx, &wg)
	go watchPool(ctx, &wg, newPoolWatch(c.db.DB, c.log, time.Now()))

	select {
	case <-ctx.Done():
	case err = <-fatal:
		cancel()
	}
	wg.Wait()
	c.log.Info("consumer stopped")
	return err
}

// maxSubscriptionsPerTopic bounds the subscriptions Run opens on one topic.
const maxSubscriptionsPerTopic = 16

// subscriptionsPerTopic is how many times Run subscribes to each of n
// topics. A Watermill subscription delivers its next message only once the
// current one is acknowledged, so handlers of one topic run concurrently
// only on several subscriptions. That is safe only where they compete for
// the group's messages instead of each receiving a copy (a plain GoChannel
// copies), which a subscriber states with a CompetingSubscriptions method,
// as package transport's do. Together the subscriptions cover Concurrency.
func (c *Consumer) subscriptionsPerTopic(n int) int {
	cs, ok := c.sub.(interface{ CompetingSubscriptions() bool })
	if !ok || !cs.CompetingSubscriptions() {
		return 1
	}
	return min(max((c.opts.Concurrency+n-1)/n, 1), maxSubscriptionsPerTopic)
}

// Subscribed returns a channel that is closed once Run has subscribed to the
// topics of every registered handler. On brokers where a group receives only
// what is published after it exists (the in-process transport and AMQP),
// wait for it before publishing events this group must see.
func (c *Consumer) Subscribed() <-chan struct{} {
	return c.subscribed
}

// receive hands each message of one subscription to a handler goroutine,
// within the concurrency bound, until the subscriber closes the channel.
func (c *Consumer) receive(ctx context.Context, wg *sync.WaitGroup, topic string, ch <-chan *message.Message, fatal chan<- error) {
	defer wg.Done()
	for {
		var msg *message.Message
		select {
		case m, ok := <-ch:
			if !ok {
				if ctx.Err() == nil {
					fatal <- fmt.Errorf("consumer %s: subscription to %s closed", c.opts.Group, topic)
				}
				return
			}
			msg = m
		case <-ctx.Done():
			// Stop here rather than wait for the subscriber to close
			// the channel, which a subscriber stuck on its broker may
			// not do for a long time.
			return
		}
		if !c.acquire(ctx) {
			msg.Nack() // shutting down: leave it to a redelivery
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.release(1)
			c.deliver(ctx, topic, msg)
		}()
	}
}

// acquire takes a handler slot, or reports false once ctx is done.
func (c *Consumer) acquire(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case c.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Consumer) release(n int) {
	for range n {
		<-c.sem
	}
}

// deliver handles one delivered message and acknowledges it or not.
//
// Each delivery is a CONSUMER span, parented to the trace context the
// message carries; the handler's ctx carries it.
func (c *Consumer) deliver(ctx context.Context, topic string, msg *message.Message) {
	env, err := wire.Decode(msg, c.opts.MaxMessageBytes)
	row, headers, reason := storable(env, topic, msg, c.opts.MaxMessageBytes)
	c.metrics.delivered(&row)
	ctx, span := c.tracing.startProcess(ctx, env.Headers, &row, c.opts.Group, 1)
	defer span.End()
	if err != nil {
		reason = strings.TrimSuffix(err.Error()+"; "+reason, "; ")
	}
	if reason != "" {
		o := c.finished(tables.StatusFailed, 0, reason)
		spanOutcome(span, o, nil, "malformed")
		c.record(ctx, msg, row, o)
		return
	}
	h := c.handlers[row.Name]
	if reason := wrongTopic(h, row.Topic); reason != "" {
		o := c.finished(tables.StatusFailed, 0, reason)
		spanOutcome(span, o, nil, "rejected")
		c.record(ctx, msg, row, o)
		return
	}
	if row.Seq > 0 {
		if c.deliverInOrder(ctx, msg, row, headers, h) {
			span.End() // before the next events of the key run
			c.runNext(ctx, row)
		}
		return
	}
	if h == nil {
		o := c.skipped(row)
		spanOutcome(span, o, nil, "skipped")
		c.record(ctx, msg, row, o)
		return
	}

	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		c.redeliver(ctx, msg, row, "begin transaction", err)
		return
	}
	inserted, err := c.inbox.Insert(ctx, tx, row, c.finished(tables.StatusSucceeded, 1, ""))
	if err != nil {
		_ = tx.Rollback()
		c.redeliver(ctx, msg, row, "insert inbox row", err)
		return
	}
	if !inserted {
		// Handled already, or recorded for the retrier, which owns it.
		_ = tx.Rollback()
		msg.Ack()
		span.AddEvent("duplicate")
		c.log.Debug("duplicate delivery acknowledged", "message_id", row.MessageID, "event", row.Name)
		c.hooks.onSettled(row.MessageID, outcomeDuplicate)
		return
	}
	began := time.Now()
	herr := c.call(ctx, tx, h, row, metadataOf(row, headers, 1, c.opts.Group))
	c.metrics.ran(&row, began, herr)
	if herr == nil {
		if err := tx.Commit(); err != nil {
			c.redeliver(ctx, msg, row, "commit", err)
			return
		}
		c.dbErrors.Store(0)
		msg.Ack()
		c.metrics.outcome(&row, tables.StatusSucceeded)
		c.hooks.onSettled(row.MessageID, tables.StatusSucceeded)
		return
	}
	c.deliveryFailed(ctx, tx, msg, row, herr)
}

// deliveryFailed rolls back tx, whose handler failed with herr on the first
// run of a delivered message, and records the row for a retry, or leaves
// the message to the broker if shutdown cancelled the run.
func (c *Consumer) deliveryFailed(ctx context.Context, tx bun.Tx, msg *message.Message, row tables.InboxRow, herr error) {
	_ = tx.Rollback()
	span := trace.SpanFromContext(ctx)
	if ctx.Err() != nil {
		spanError(span, herr, false, 0)
		msg.Nack()
		c.hooks.onSettled(row.MessageID, outcomeAbandoned)
		return
	}
	o := c.afterFailure(row, 1, herr)
	spanOutcome(span, o, herr, "")
	c.record(ctx, msg, row, o)
}

// wrongTopic returns why a message of h's event that arrived on topic must
// not run h, or "" if it may: the spec binds every event to one topic, and
// a broker user allowed to write to another topic the group reads must not
// be able to run h.
func wrongTopic(h *handler, topic string) string {
	if h == nil || topic == h.topic {
		return ""
	}
	return fmt.Sprintf("rejected: event %q belongs on topic %q but arrived on %q; no handler ran", h.name, h.topic, topic)
}

// record inserts a row for a message that is not handled now (failed,
// skipped, or pending after a failed run), then acknowledges the message.
func (c *Consumer) record(ctx context.Context, msg *message.Message, row tables.InboxRow, o tables.Outcome) {
	if _, err := c.inbox.Insert(ctx, c.db, row, o); err != nil {
		c.redeliver(ctx, msg, row, "record "+o.Status+" row", err)
		return
	}
	c.dbErrors.Store(0)
	msg.Ack()
	c.metrics.outcome(&row, o.Status)
	c.logOutcome(row, o)
	c.hooks.onSettled(row.MessageID, o.Status)
}

// redeliver leaves msg to the broker after a database error, backing off
// first so that an outage does not turn into a redelivery loop.
func (c *Consumer) redeliver(ctx context.Context, msg *message.Message, row tables.InboxRow, what string, err error) {
	spanError(trace.SpanFromContext(ctx), fmt.Errorf("%s: %w", what, err), false, 0)
	if ctx.Err() == nil {
		c.log.Warn("consumer: "+what+" failed; message left for redelivery",
			"message_id", row.MessageID, "event", row.Name, "error", err)
		n := c.dbErrors.Add(1)
		sleep(ctx, backoff.Policy{Base: dbErrorBackoff, Max: maxDBErrorBackoff}.Delay(int(min(n, 64))))
	}
	msg.Nack()
	c.hooks.onSettled(row.MessageID, outcomeNacked)
}

const (
	dbErrorBackoff    = 100 * time.Millisecond
	maxDBErrorBackoff = 10 * time.Second
)

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// call runs h with tx in its context, turning a panic into an error that
// carries the stack.
func (c *Consumer) call(ctx context.Context, tx bun.Tx, h *handler, row tables.InboxRow, m Metadata) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return h.run(withTx(ctx, tx), row.Payload, m)
}

// failed returns the outcome of a row that failed for good in its run. A
// row with a sequence blocks its key, and is kept until re-executed or
// skipped.
func (c *Consumer) failed(row tables.InboxRow, attempts int, reason string) tables.Outcome {
	o := c.finished(tables.StatusFailed, attempts, reason)
	o.Keep = row.Seq > 0
	return o
}

// skipped returns the outcome of a row of an event the group has no handler
// for.
func (c *Consumer) skipped(row tables.InboxRow) tables.Outcome {
	return c.finished(tables.StatusSkipped, 0, fmt.Sprintf("group %q has no handler for event %q", c.opts.Group, row.Name))
}

// finished returns the outcome of a row that is done with, kept for the
// retention of its status.
func (c *Consumer) finished(status string, attempts int, reason string) tables.Outcome {
	retention := c.opts.SucceededRetention
	if status == tables.StatusFailed {
		retention = c.opts.FailedRetention
	}
	return tables.Outcome{Status: status, Attempts: attempts, Retention: retention, LastError: clip(reason, maxErrorBytes)}
}

// afterFailure returns the outcome of a row whose attempt-th run failed with
// err: pending again, or failed if err is permanent or attempts are used up.
func (c *Consumer) afterFailure(row tables.InboxRow, attempt int, err error) tables.Outcome {
	if isPermanent(err) {
		return c.failed(row, attempt, err.Error())
	}
	if c.policy.Exhausted(attempt) {
		return c.failed(row, attempt, fmt.Sprintf("gave up after %d attempts: %v", attempt, err))
	}
	d := c.policy.Delay(attempt)
	c.log.Warn("handler failed; will retry", "message_id", row.MessageID, "event", row.Name,
		"attempt", attempt, "retry_in", d, "error", firstLine(err.Error()))
	return tables.Outcome{Status: tables.StatusPending, Attempts: attempt, Delay: d, LastError: clip(err.Error(), maxErrorBytes)}
}

func (c *Consumer) logOutcome(row tables.InboxRow, o tables.Outcome) {
	switch o.Status {
	case tables.StatusFailed:
		c.log.Error("message failed; kept in the inbox for re-execution", "message_id", row.MessageID,
			"event", row.Name, "attempts", o.Attempts, "error", firstLine(o.LastError))
	case tables.StatusSkipped:
		c.log.Debug("message skipped: no handler", "message_id", row.MessageID, "event", row.Name)
	}
}

// Test outcomes besides the row statuses.
const (
	outcomeDuplicate = "duplicate" // already recorded; acknowledged
	outcomeNacked    = "nacked"    // database error; left for redelivery
	outcomeAbandoned = "abandoned" // shutting down; rolled back
	outcomeLostLease = "lost-lease"
	outcomeReleased  = "released"
)

// maxColumnBytes bounds the VARCHAR(255) columns.
const maxColumnBytes = 255

// maxErrorBytes bounds last_error; MySQL's TEXT holds 64 KiB.
const maxErrorBytes = 16 << 10

// maxHeadersBytes bounds the headers' JSON; MySQL's TEXT holds 64 KiB.
const maxHeadersBytes = 60 << 10

// storable maps a decoded envelope to its inbox row. A non-empty reason
// means it cannot be handled as it is; the row is then made storable anyway
// (ids and names clipped, headers dropped), to record the failure.
func storable(env wire.Envelope, topic string, msg *message.Message, maxPayload int) (row tables.InboxRow, headers map[string]string, reason string) {
	row = tables.InboxRow{
		MessageID: env.ID,
		Name:      env.Name,
		Version:   env.Version,
		Topic:     topic,
		Key:       env.Key,
		Seq:       env.Sequence,
		Source:    env.Source,
		Payload:   env.Payload, // the event's data, also in structured mode
	}
	if !env.Time.IsZero() {
		row.EventTime = env.Time.UnixMicro()
	}
	if row.MessageID == "" {
		row.MessageID = uuid.NewString() // recorded once per delivery: there is nothing to tell them apart by
	}
	var bad []string
	if len(row.Payload) > maxPayload {
		bad = append(bad, fmt.Sprintf("payload is %d bytes, over MaxMessageBytes (%d); not stored", len(row.Payload), maxPayload))
		row.Payload = nil
	}
	for _, f := range []struct {
		what string
		v    *string
	}{{"message id", &row.MessageID}, {"event name", &row.Name}, {"source", &row.Source}, {"key", &row.Key}} {
		if c := clip(*f.v, maxColumnBytes); c != *f.v {
			bad = append(bad, f.what+" is over 255 bytes or not valid UTF-8")
			*f.v = c
		}
	}
	if len(env.Headers) > 0 {
		b, err := json.Marshal(env.Headers)
		switch {
		case err != nil:
			bad = append(bad, "headers: "+err.Error())
		case len(b) > maxHeadersBytes:
			bad = append(bad, fmt.Sprintf("headers are %d bytes as JSON, over the limit of %d", len(b), maxHeadersBytes))
		default:
			row.Headers.String, row.Headers.Valid = string(b), true
			headers = env.Headers
		}
	}
	return row, headers, strings.Join(bad, "; ")
}

// clip makes s storable in a text column of n bytes: valid UTF-8, no NUL
// (PostgreSQL rejects it), cut at a rune boundary.
func clip(s string, n int) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// metadataOf builds a handler's Metadata. headers may be nil, in which case
// they are read from the row; the trace context is removed from them.
func metadataOf(row tables.InboxRow, headers map[string]string, attempt int, group string) Metadata {
	if headers == nil {
		headers = rowHeaders(row)
	}
	headers = withoutTraceContext(headers)
	m := Metadata{
		ID:       row.MessageID,
		Name:     row.Name,
		Version:  row.Version,
		Topic:    row.Topic,
		Key:      row.Key,
		Sequence: row.Seq,
		Source:   row.Source,
		Attempt:  attempt,
		Group:    group,
		Headers:  headers,
	}
	if row.EventTime != 0 {
		m.Time = time.UnixMicro(row.EventTime).UTC()
	}
	return m
}

// rowHeaders returns the headers stored with row, nil if it has none.
func rowHeaders(row tables.InboxRow) map[string]string {
	if !row.Headers.Valid {
		return nil
	}
	h, _ := decodeHeaders(row.Headers.String) // written by storable: valid
	return h
}
