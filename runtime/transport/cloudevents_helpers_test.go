package transport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	ceamqp "github.com/cloudevents/sdk-go/protocol/amqp/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
	"github.com/eventgen/eventgen/runtime/transport"
)

// The events of the CloudEvents tests, as the generator would write them.
// Handle takes an event's topic from its type's zero value, so the topics
// are fixed for the test binary: their random part keeps concurrent runs
// against one broker apart, and every test deletes them when it ends.
var (
	ceRun           = randomHex(6)
	ceOrdersTopic   = "test.ce_orders." + ceRun
	cePaymentsTopic = "test.ce_payments." + ceRun
)

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error: since Go 1.24 a failure crashes the program
	return hex.EncodeToString(b)
}

// ceOrder is keyed: its key travels as the partitionkey extension.
type ceOrder struct {
	OrderID string `json:"order_id"`
	Note    string `json:"note,omitempty"`
}

func (ceOrder) EventName() string { return "OrderPlaced" }
func (ceOrder) EventVersion() int { return 1 }
func (ceOrder) Topic() string     { return ceOrdersTopic }
func (e ceOrder) Key() string     { return e.OrderID }
func (e ceOrder) Validate() error {
	if e.OrderID == "" {
		return errors.New("order_id is required")
	}
	return nil
}

// cePayment has no key, a dotted wire name and a version above 1.
type cePayment struct {
	PaymentID string `json:"payment_id"`
	Amount    int    `json:"amount"`
}

func (cePayment) EventName() string { return "payment.captured" }
func (cePayment) EventVersion() int { return 2 }
func (cePayment) Topic() string     { return cePaymentsTopic }
func (cePayment) Validate() error   { return nil }

// sentEvent is an event as a reader must see it: its CloudEvents
// attributes and the headers it was published with.
type sentEvent struct {
	name       string // the case, for messages
	topic      string
	id         string
	typ        string
	source     string
	time       time.Time
	data       []byte
	extensions map[string]string // partitionkey, eventversion
	headers    map[string]string // from WithHeader
}

// outboxCase is one event that relayOutbox publishes.
type outboxCase struct {
	name    string
	source  string
	event   eventgen.Event
	headers map[string]string
}

// relayOutbox publishes every case through an outbox on SQLite, each in a
// transaction of its own, and runs the outbox's relay to tr until the test
// ends. It returns the events by message id, with the attributes the
// outbox gave them (id and time) read back from its table.
func relayOutbox(t *testing.T, tr *transport.Transport, cases []outboxCase) map[string]sentEvent {
	t.Helper()
	ctx := context.Background()
	db := testenv.OpenSQLite(t)
	ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	byData := make(map[string]sentEvent, len(cases))
	for _, c := range cases {
		var opts []eventgen.PublishOption
		for k, v := range c.headers {
			opts = append(opts, eventgen.WithHeader(k, v))
		}
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return ob.Publish(ctx, tx, c.source, []eventgen.Event{c.event}, opts...)
		})
		if err != nil {
			t.Fatalf("%s: publish: %v", c.name, err)
		}
		data, err := json.Marshal(c.event)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := byData[string(data)]; dup {
			t.Fatalf("%s: two cases publish the same payload %s", c.name, data)
		}
		ext := map[string]string{"eventversion": strconv.Itoa(c.event.EventVersion())}
		if k, ok := c.event.(eventgen.Keyed); ok {
			ext["partitionkey"] = k.Key()
		}
		byData[string(data)] = sentEvent{name: c.name, topic: c.event.Topic(), typ: c.event.EventName(), source: c.source,
			data: data, extensions: ext, headers: c.headers}
	}

	rows, err := db.QueryContext(ctx, "SELECT message_id, created_at, payload, seq FROM "+eventgen.DefaultOutboxTable)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	sent := make(map[string]sentEvent, len(cases))
	for rows.Next() {
		var id string
		var created, seq int64
		var payload []byte
		if err := rows.Scan(&id, &created, &payload, &seq); err != nil {
			t.Fatal(err)
		}
		e, ok := byData[string(payload)]
		if !ok {
			t.Fatalf("outbox row %s holds a payload no case published: %s", id, payload)
		}
		if seq > 0 {
			// The sequence extension: the event's place among its key's
			// events, zero-padded so that string order is numeric order.
			e.extensions = maps.Clone(e.extensions)
			e.extensions["sequence"] = wire.FormatSequence(seq)
		}
		e.id, e.time = id, time.UnixMicro(created).UTC()
		sent[id] = e
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(sent) != len(cases) {
		t.Fatalf("the outbox holds %d rows, want %d", len(sent), len(cases))
	}

	runInBackground(t, "relay", ob.Run)
	return sent
}

// ceConsumer is an eventgen Consumer of ceOrder and cePayment, with its
// inbox on SQLite, that records every handler run.
type ceConsumer struct {
	*eventgen.Consumer
	stop func() // stops Run and closes the subscriber; idempotent

	mu      sync.Mutex
	runs    []handlerRun
	changed chan struct{}
}

// handlerRun is one run of a handler.
type handlerRun struct {
	meta  eventgen.Metadata
	event any // ceOrder or cePayment
}

// startConsumer runs a consumer of group on tr, with the given
// MaxMessageBytes (0 for the default), and returns once it has subscribed.
// It stops when the test ends, before tr closes and the topics are deleted
// (tr and the topics' deletion must be set up before).
func startConsumer(t *testing.T, tr *transport.Transport, group string, maxMessageBytes int) *ceConsumer {
	t.Helper()
	sub, err := tr.Subscriber(group)
	if err != nil {
		t.Fatalf("Subscriber(%q): %v", group, err)
	}
	c, err := eventgen.NewConsumer(testenv.OpenSQLite(t), sub, eventgen.ConsumerOptions{
		Group: group,
		// SQLite has one writer: handlers one at a time avoid lock waits.
		Concurrency:     1,
		MaxMessageBytes: maxMessageBytes,
		Logger:          testenv.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	cc := &ceConsumer{Consumer: c, changed: make(chan struct{}, 1)}
	err = errors.Join(
		eventgen.Handle(c, func(ctx context.Context, e ceOrder, m eventgen.Metadata) error { cc.record(m, e); return nil }),
		eventgen.Handle(c, func(ctx context.Context, e cePayment, m eventgen.Metadata) error { cc.record(m, e); return nil }),
	)
	if err != nil {
		t.Fatal(err)
	}

	cc.stop = runConsumer(t, c, sub, group)
	return cc
}

// runConsumer runs c, which reads from sub, and returns once it has
// subscribed. stop stops Run and closes sub; it is idempotent, and runs
// when the test ends.
func runConsumer(t *testing.T, c *eventgen.Consumer, sub message.Subscriber, group string) (stop func()) {
	t.Helper()
	stopRun, returned := runInBackground(t, "consumer "+group, c.Run)
	var once sync.Once
	stop = func() {
		stopRun()
		once.Do(func() {
			if err := sub.Close(); err != nil {
				t.Errorf("consumer %s: close subscriber: %v", group, err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-c.Subscribed():
	case <-returned:
		stop()
		t.Fatalf("consumer %s: Run returned before subscribing", group)
	}
	return stop
}

// runInBackground calls run in a goroutine of its own until stop is called
// or the test ends: stop cancels run's context, waits for it to return and
// reports its error, once. returned is closed when run returns.
func runInBackground(t *testing.T, what string, run func(context.Context) error) (stop func(), returned <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			if err != nil {
				t.Errorf("%s: Run: %v", what, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, done
}

func (c *ceConsumer) record(m eventgen.Metadata, e any) {
	c.mu.Lock()
	c.runs = append(c.runs, handlerRun{m, e})
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// runsOf returns the handler runs for message id on topic.
func (c *ceConsumer) runsOf(id, topic string) []handlerRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []handlerRun
	for _, r := range c.runs {
		if r.meta.ID == id && r.meta.Topic == topic {
			out = append(out, r)
		}
	}
	return out
}

// allRuns returns every handler run so far.
func (c *ceConsumer) allRuns() []handlerRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.runs)
}

// waitHandled waits until the handler of message id on topic has run, and
// returns that run.
func (c *ceConsumer) waitHandled(t *testing.T, id, topic string) handlerRun {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		if runs := c.runsOf(id, topic); len(runs) > 0 {
			return runs[0]
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			t.Fatalf("message %s on %s was not handled within %s", id, topic, wait)
		}
	}
}

// waitFailed waits until message id on topic is among the group's failed
// messages, and returns it. The consumer has no signal for that outside
// its package, so the inbox is polled.
func (c *ceConsumer) waitFailed(t *testing.T, id, topic string) eventgen.FailedMessage {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		failed, err := c.Failed(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range failed {
			if f.ID == id && f.Topic == topic {
				return f
			}
		}
		if runs := c.runsOf(id, topic); len(runs) > 0 {
			t.Fatalf("message %s on %s ran the handler, want it recorded failed", id, topic)
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s on %s was not recorded failed within %s", id, topic, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventMessage encodes e as the outbox relay does, with message id id, so
// that the transport's publisher maps it onto its broker's binding.
func eventMessage(t *testing.T, e eventgen.Event, id string, at time.Time) *message.Message {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	env := wire.Envelope{ID: id, Name: e.EventName(), Version: e.EventVersion(), Source: "urn:eventgen:test",
		Time: at, Payload: data}
	if k, ok := e.(eventgen.Keyed); ok {
		env.Key = k.Key()
	}
	return wire.Encode(env)
}

// amqpPublisher returns a function that publishes to the exchange of topic
// on the RabbitMQ at url, through a channel in confirm mode, and waits for
// the broker's confirm. producer names the sender in failures.
func amqpPublisher(t *testing.T, url, topic string) func(producer string, p amqp091.Publishing) {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "amqp", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return func(producer string, p amqp091.Publishing) {
		t.Helper()
		conf, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), topic, "", false, false, p)
		if err != nil {
			t.Fatalf("%s: %v", producer, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if ok, err := conf.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("%s: not confirmed: %v", producer, err)
		}
	}
}

// sdkAMQPPublishing writes e with sdk-go's AMQP writer, in the mode ctx
// asks for (binding.WithForceStructured, or binary), and returns it as a
// 0-9-1 publishing, as RabbitMQ maps an AMQP 1.0 message: the cloudEvents:
// application properties become headers of the same names and types, the
// content type stays the content type.
func sdkAMQPPublishing(t *testing.T, ctx context.Context, e *event.Event) amqp091.Publishing {
	t.Helper()
	var am goamqp.Message
	if err := ceamqp.WriteMessage(ctx, binding.ToMessage(e), &am); err != nil {
		t.Fatal(err)
	}
	p := amqp091.Publishing{Headers: amqp091.Table(am.ApplicationProperties), Body: bytes.Join(am.Data, nil), DeliveryMode: amqp091.Persistent}
	if am.Properties != nil && am.Properties.ContentType != nil {
		p.ContentType = *am.Properties.ContentType
	}
	return p
}

// contentModes are the two ways an SDK sender writes an event: binary and
// structured mode, as the context of Send or WriteMessage asks.
func contentModes() []struct {
	name string
	ctx  context.Context
} {
	return []struct {
		name string
		ctx  context.Context
	}{
		{"binary", context.Background()},
		{"structured", binding.WithForceStructured(context.Background())},
	}
}
