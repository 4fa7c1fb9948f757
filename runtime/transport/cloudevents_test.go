package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	ceamqp "github.com/cloudevents/sdk-go/protocol/amqp/v2"
	cenats "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
	"github.com/eventgen/eventgen/runtime/transport"
	amqptransport "github.com/eventgen/eventgen/runtime/transport/amqp"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
)

// sdkGroup is the consumer group whose queues the SDK readers read.
const sdkGroup = "sdk-reader"

// hostileCases are the events the conformance tests publish: keys that a
// binding must carry unchanged although they need encoding, or look
// encoded already, and the same hostile headers on every event, two of
// them as long as a value may be.
func hostileCases() []outboxCase {
	headers := map[string]string{
		"x-spaces":     "  spaces at both ends  ",
		"x-quotes":     `"quoted" and "more"`,
		"x-percent":    "%41 % %% 100% %zz %E2%82%AC",
		"x-text":       "Grüße 東京 🚚📦",
		"X-Mixed-Case": "Mixed Case",
		"x-max-ascii":  strings.Repeat("a b%", wire.MaxHeaderValue/4),
		"x-max-utf8":   strings.Repeat("é", wire.MaxHeaderValue/2),
	}
	keys := []struct{ name, key string }{
		{"spaces at both ends", "  order 1  "},
		{"double quotes", `say "hi"`},
		{"quoted whole", `"order-2"`},
		{"percent", "%"},
		{"percent 41", "%41"},
		{"trailing percent", "100%"},
		{"looks encoded", "%E2%82%AC%20"},
		{"percent 25", "%25"},
		{"non-ASCII", "Grüße 東京"},
		{"emoji", "🚚📦 ✓"},
		{"backslashes", `\"a\\b\"`},
		{"URL characters", "a+b=c&d;e,f/g?h#i"},
		{"255 bytes", strings.Repeat("ü", 127) + "!"},
	}
	// Sources are URI references, as CloudEvents requires; the second
	// holds a percent sign, which NATS encodes.
	sources := []string{"urn:eventgen:conformance", "/shop/caf%C3%A9"}
	var cases []outboxCase
	for i, k := range keys {
		cases = append(cases, outboxCase{name: "key " + k.name, source: sources[i%2],
			event: ceOrder{OrderID: k.key, Note: k.name}, headers: headers})
	}
	return append(cases, outboxCase{name: "no key", source: sources[1],
		event: cePayment{PaymentID: "p-1", Amount: 4200}, headers: headers})
}

// openWithTopics opens the broker at url and deletes the CloudEvents
// tests' topics, with the given groups' queues, when the test ends.
func openWithTopics(t *testing.T, name, url string, groups ...string) *transport.Transport {
	t.Helper()
	tr := testenv.TransportCase{Name: name, URL: url}.Open(t)
	for _, topic := range []string{ceOrdersTopic, cePaymentsTopic} {
		testenv.DeleteTopicAtCleanup(t, tr, topic, groups...)
	}
	return tr
}

// initSDKGroup creates sdkGroup on both topics, so that the broker keeps
// what the relay publishes for the SDK readers.
func initSDKGroup(t *testing.T, tr *transport.Transport) {
	t.Helper()
	sub, err := tr.Subscriber(sdkGroup)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for _, topic := range []string{ceOrdersTopic, cePaymentsTopic} {
		if err := sub.SubscribeInitialize(topic); err != nil {
			t.Fatalf("SubscribeInitialize(%s): %v", topic, err)
		}
	}
}

// sdkMessage is a message as an SDK reader gets it, and a header's value
// as a receiver of the broker's binding reads it.
type sdkMessage struct {
	msg    binding.Message
	header func(name string) (string, bool)
}

// checkReadBySDK publishes the hostile cases through the outbox relay to
// tr, and checks that every message read returns (the first n of a
// topic's, for each topic) is read by the SDK as a valid CloudEvent in
// binary mode with exactly the attributes the outbox gave it, and carries
// its headers. decode is the binding's decoding step for values that
// needed encoding on the wire, nil where values travel as they are.
func checkReadBySDK(t *testing.T, tr *transport.Transport, decode func(string) string, read func(topic string, n int) []sdkMessage) {
	t.Helper()
	initSDKGroup(t, tr)
	sent := relayOutbox(t, tr, hostileCases())
	perTopic := map[string]int{}
	for _, e := range sent {
		perTopic[e.topic]++
	}
	seen := map[string]bool{}
	for _, topic := range slices.Sorted(maps.Keys(perTopic)) {
		for _, m := range read(topic, perTopic[topic]) {
			want, ok := readSDKEvent(t, m.msg, sent, decode)
			if !ok {
				continue
			}
			seen[want.id] = true
			for k, v := range want.headers {
				if got, ok := m.header(k); !ok || got != v {
					t.Errorf("%s: header %s = %.80q (%v), want %.80q", want.name, k, got, ok, v)
				}
			}
		}
	}
	for id, e := range sent {
		if !seen[id] {
			t.Errorf("%s: message %s was not read", e.name, id)
		}
	}
}

// TestCloudEventsNATSReadBySDK publishes the hostile cases through the
// outbox relay to NATS JetStream and reads them with sdk-go's NATS
// JetStream binding (its NewMessage on the *nats.Msg a JetStream
// subscription delivers, then binding.ToEvent), as a Go service that is
// not eventgen would: see checkReadBySDK.
func TestCloudEventsNATSReadBySDK(t *testing.T) {
	url := testenv.TransportURL(t, "nats")
	tr := openWithTopics(t, "nats", url, sdkGroup)
	nc, err := nats.Connect(url)
	if err != nil {
		testenv.Unavailable(t, "nats", err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	checkReadBySDK(t, tr, natsDecode, func(topic string, n int) []sdkMessage {
		sub, err := js.SubscribeSync(topic, nats.OrderedConsumer())
		if err != nil {
			t.Fatalf("subscribe to %s: %v", topic, err)
		}
		defer sub.Unsubscribe()
		out := make([]sdkMessage, 0, n)
		for i := range n {
			msg, err := sub.NextMsg(wait)
			if err != nil {
				t.Fatalf("%s: message %d of %d: %v", topic, i+1, n, err)
			}
			// Headers are not attributes, so the SDK does not read
			// them: the test reads them as a binding receiver would.
			header := func(name string) (string, bool) {
				vs := msg.Header.Values(name)
				if len(vs) != 1 {
					return "", false
				}
				return wire.PercentDecode(vs[0]), true
			}
			out = append(out, sdkMessage{cenats.NewMessage(msg), header})
		}
		return out
	})
}

// natsDecode is the NATS binding's decoding step, which sdk-go's NATS
// reader leaves out: its ReadBinary (protocol/nats_jetstream message.go)
// hands each ce- header's value to the event as it travels, percent
// escapes and all, where the binding says a receiver MUST unquote and
// percent-decode it. So where a value needed encoding, the test compares
// the SDK's string after applying that step; a value that needed none
// must be exact as the SDK read it.
func natsDecode(s string) string { return wire.PercentDecode(s) }

// TestCloudEventsAMQPReadBySDK publishes the hostile cases through the
// outbox relay to RabbitMQ, consumes them with amqp091-go from a queue of
// the topic's exchange, and reads each through sdk-go's AMQP binding (its
// NewMessage on the AMQP 1.0 message that RabbitMQ's mapping makes of the
// delivery, then binding.ToEvent): see checkReadBySDK. Values travel
// unencoded, so every one must be exact.
func TestCloudEventsAMQPReadBySDK(t *testing.T) {
	url := testenv.TransportURL(t, "amqp")
	tr := openWithTopics(t, "amqp", url, sdkGroup)
	conn, err := amqp091.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "amqp", err)
	}
	defer conn.Close()
	checkReadBySDK(t, tr, nil, func(topic string, n int) []sdkMessage {
		var out []sdkMessage
		for _, d := range amqpDeliveries(t, conn, amqptransport.QueueName(topic, sdkGroup), n) {
			header := func(name string) (string, bool) {
				v, ok := d.Headers[name].(string)
				return v, ok
			}
			out = append(out, sdkMessage{ceamqp.NewMessage(sdkAMQPMessage(d), nil), header})
		}
		return out
	})
}

// amqpDeliveries consumes n deliveries from queue, acking each.
func amqpDeliveries(t *testing.T, conn *amqp091.Connection, queue string, n int) []amqp091.Delivery {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	dc, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	out := make([]amqp091.Delivery, 0, n)
	for len(out) < n {
		select {
		case d, ok := <-dc:
			if !ok {
				t.Fatalf("%s: the channel closed after %d of %d deliveries", queue, len(out), n)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		case <-timeout.C:
			t.Fatalf("%s: %d of %d deliveries within %s", queue, len(out), n, wait)
		}
	}
	return out
}

// sdkAMQPMessage is the AMQP 1.0 message that RabbitMQ's mapping makes of
// the 0-9-1 delivery d, for sdk-go's AMQP binding to read: the headers
// become application properties, the content-type property the message's
// content type, and the body its one data section.
//
// The AMQP binding names attributes cloudEvents_ (the separator it says
// producers SHOULD prefer, as JMS selectors cannot hold ':') or
// cloudEvents:, and says consumers SHOULD understand both; sdk-go's reader
// understands only cloudEvents: (its message.go matches that prefix
// alone). So the adapter renames cloudEvents_ to cloudEvents:, as a reader
// following the binding would read either.
func sdkAMQPMessage(d amqp091.Delivery) *goamqp.Message {
	props := make(map[string]any, len(d.Headers))
	for k, v := range d.Headers {
		if attr, ok := strings.CutPrefix(k, "cloudEvents_"); ok {
			k = "cloudEvents:" + attr
		}
		props[k] = v
	}
	m := &goamqp.Message{ApplicationProperties: props, Data: [][]byte{d.Body}}
	if d.ContentType != "" {
		ct := d.ContentType
		m.Properties = &goamqp.MessageProperties{ContentType: &ct}
	}
	return m
}

// readSDKEvent reads msg with the SDK and checks it against the sent
// event of its id. decode is the binding's decoding step for values that
// needed encoding on the wire, nil where values travel as they are.
func readSDKEvent(t *testing.T, msg binding.Message, sent map[string]sentEvent, decode func(string) string) (sentEvent, bool) {
	t.Helper()
	if enc := msg.ReadEncoding(); enc != binding.EncodingBinary {
		t.Errorf("the SDK reads a message in %s mode, want binary", enc)
		return sentEvent{}, false
	}
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		t.Errorf("the SDK refuses a message: %v", err)
		return sentEvent{}, false
	}
	want, ok := sent[e.ID()]
	if !ok {
		t.Errorf("the SDK reads an event with id %q, which the outbox did not send", e.ID())
		return sentEvent{}, false
	}
	checkEvent(t, e, want, decode)
	return want, true
}

// checkEvent fails t unless e, as the SDK read it, is a valid CloudEvent
// with exactly want's attributes, extensions and data.
func checkEvent(t *testing.T, e *event.Event, want sentEvent, decode func(string) string) {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Errorf("%s: the event does not validate: %v", want.name, err)
	}
	str := func(attr, got, w string) {
		t.Helper()
		if decode != nil && wire.PercentEncode(w) != w {
			got = decode(got)
		}
		if got != w {
			t.Errorf("%s: %s = %q, want %q", want.name, attr, got, w)
		}
	}
	str("specversion", e.SpecVersion(), wire.SpecVersion)
	str("id", e.ID(), want.id)
	str("type", e.Type(), want.typ)
	str("source", e.Source(), want.source)
	str("datacontenttype", e.DataContentType(), wire.ContentType)
	str("subject", e.Subject(), "")
	str("dataschema", e.DataSchema(), "")
	if !e.Time().Equal(want.time) {
		t.Errorf("%s: time = %s, want %s", want.name, e.Time().Format(time.RFC3339Nano), want.time.Format(time.RFC3339Nano))
	}
	if !bytes.Equal(e.Data(), want.data) {
		t.Errorf("%s: data = %s, want %s", want.name, e.Data(), want.data)
	}
	exts := e.Extensions()
	if got, w := slices.Sorted(maps.Keys(exts)), slices.Sorted(maps.Keys(want.extensions)); !slices.Equal(got, w) {
		t.Errorf("%s: extensions %q, want %q", want.name, got, w)
	}
	for name, w := range want.extensions {
		if got, ok := exts[name].(string); ok || exts[name] == nil {
			str("extension "+name, got, w)
		} else {
			t.Errorf("%s: extension %s is the %T %v, want the string %q", want.name, name, exts[name], exts[name], w)
		}
	}
}

// foreignEvent is an event written by another producer than eventgen's
// relay, and what the handler must see of it.
type foreignEvent struct {
	producer string
	id       string
	key      string
	source   string
	time     time.Time
	version  int
	order    ceOrder
	headers  map[string]string // Metadata.Headers; nil for none
}

// sdkEvent builds f as a CloudEvent with sdk-go: an OrderPlaced with the
// partitionkey extension and JSON data, and the given further extensions.
func (f foreignEvent) sdkEvent(t *testing.T, extensions map[string]any) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID(f.id)
	e.SetType(f.order.EventName())
	e.SetSource(f.source)
	e.SetTime(f.time)
	e.SetExtension("partitionkey", f.key)
	for k, v := range extensions {
		e.SetExtension(k, v)
	}
	data, err := json.Marshal(f.order)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("%s: %v", f.producer, err)
	}
	return &e
}

// legacyMessage is f as eventgen wrote it before the bindings: ce_
// metadata, the content type a content-type entry, and the Watermill UUID.
func (f foreignEvent) legacyMessage(t *testing.T) *message.Message {
	t.Helper()
	m := eventMessage(t, f.order, f.id, f.time)
	m.Metadata.Set(wire.HeaderSource, f.source)
	for k, v := range f.headers {
		m.Metadata.Set(k, v)
	}
	return m
}

// checkHandled waits until every one of events is handled on the orders
// topic and checks that each ran the handler once, with its id, key,
// attributes and payload, and that nothing else ran.
func checkHandled(t *testing.T, c *ceConsumer, events []foreignEvent) {
	t.Helper()
	for _, f := range events {
		run := c.waitHandled(t, f.id, ceOrdersTopic)
		m := run.meta
		got := fmt.Sprintf("%s %s v%d key=%q source=%q time=%s headers=%q",
			m.ID, m.Name, m.Version, m.Key, m.Source, m.Time.UTC().Format(time.RFC3339Nano), m.Headers)
		want := fmt.Sprintf("%s %s v%d key=%q source=%q time=%s headers=%q",
			f.id, f.order.EventName(), f.version, f.key, f.source, f.time.UTC().Format(time.RFC3339Nano), f.headers)
		if got != want {
			t.Errorf("%s: the handler saw\n%s, want\n%s", f.producer, got, want)
		}
		if run.event != f.order {
			t.Errorf("%s: the handler got %+v, want %+v", f.producer, run.event, f.order)
		}
	}
	if runs := c.allRuns(); len(runs) != len(events) {
		t.Errorf("%d handler runs, want one for each of %d messages", len(runs), len(events))
	}
}

// consumeForeign runs a consumer of a new group on the broker named name,
// and returns the broker's URL for the foreign producers.
func consumeForeign(t *testing.T, name string) (url string, c *ceConsumer) {
	t.Helper()
	url = testenv.TransportURL(t, name)
	group := "foreign-" + randomHex(4)
	return url, startConsumer(t, openWithTopics(t, name, url, group), group, 0)
}

// TestForeignProducersAreHandled sends an eventgen Consumer events that
// eventgen's relay did not write, on the topic of their type: one from
// sdk-go's sender for the broker's binding, and one with the ce_ headers
// that eventgen wrote before the bindings (from Watermill's marshaler for
// the broker, as eventgen used it). Each must run the handler once, with
// its id, key (the partitionkey extension) and payload.
func TestForeignProducersAreHandled(t *testing.T) {
	// A millisecond-precise time: the consumer keeps microseconds.
	at := time.Date(2025, 6, 7, 8, 9, 10, 123_000_000, time.UTC)
	legacy := func() foreignEvent {
		// Spaces inside the key only: NATS header values lose leading
		// and trailing ones, and eventgen before the binding sent them
		// as they were. It sent %41 as it was too, which must not be
		// percent-decoded now.
		key := "legacy Grüße 東京 a=b %41"
		return foreignEvent{producer: "eventgen before the bindings", id: uuid.NewString(), key: key,
			source: "urn:eventgen:legacy", time: at, version: 1, order: ceOrder{OrderID: key, Note: "legacy"},
			headers: map[string]string{"x-legacy": "kept as sent"}}
	}

	t.Run("nats", func(t *testing.T) {
		url, c := consumeForeign(t, "nats")
		nc, err := nats.Connect(url)
		if err != nil {
			testenv.Unavailable(t, "nats", err)
		}
		defer nc.Close()

		key := "sdk Grüße 東京 🚚"
		sdk := foreignEvent{producer: "sdk-go's NATS JetStream sender", id: uuid.NewString(), key: key,
			source: "urn:foreign:sdk-go", time: at, version: 1, order: ceOrder{OrderID: key, Note: "from sdk-go"}}
		// The consumer's subscription made the topic's stream, which the
		// sender then finds (it would make one of another shape).
		s, err := cenats.NewSenderFromConn(nc, natsjs.StreamName(ceOrdersTopic), ceOrdersTopic, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(context.Background(), binding.ToMessage(sdk.sdkEvent(t, nil))); err != nil {
			t.Fatalf("%s: %v", sdk.producer, err)
		}

		old := legacy()
		nm, err := (&wmnats.NATSMarshaler{}).Marshal(ceOrdersTopic, old.legacyMessage(t))
		if err != nil {
			t.Fatal(err)
		}
		js, err := nc.JetStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(nm); err != nil {
			t.Fatalf("%s: %v", old.producer, err)
		}
		checkHandled(t, c, []foreignEvent{sdk, old})
	})

	t.Run("amqp", func(t *testing.T) {
		url, c := consumeForeign(t, "amqp")
		publish := amqpPublisher(t, url, ceOrdersTopic)

		// AMQP 0-9-1 timestamps hold whole seconds.
		key := "sdk Grüße 東京 🚚"
		sdk := foreignEvent{producer: "sdk-go's AMQP writer", id: uuid.NewString(), key: key,
			source: "urn:foreign:sdk-go", time: at.Truncate(time.Second), version: 1,
			order: ceOrder{OrderID: key, Note: "from sdk-go"}}
		// sdk-go writes the time as an AMQP timestamp and an integer
		// extension as a long, which RabbitMQ maps onto 0-9-1 headers of
		// the same types.
		publish(sdk.producer, sdkAMQPPublishing(t, context.Background(), sdk.sdkEvent(t, map[string]any{"eventversion": 1})))

		old := legacy()
		lp, err := wamqp.DefaultMarshaler{}.Marshal(old.legacyMessage(t))
		if err != nil {
			t.Fatal(err)
		}
		publish(old.producer, lp)
		checkHandled(t, c, []foreignEvent{sdk, old})
	})
}

// TestForeignProducerIsOrderedBySequence sends an eventgen Consumer three
// events of one key from sdk-go's NATS JetStream sender, with the sequence
// extension as plain digits (another producer's spelling) and in the order
// 3, 1, 2: the handler runs them 1, 2, 3.
func TestForeignProducerIsOrderedBySequence(t *testing.T) {
	url, c := consumeForeign(t, "nats")
	nc, err := nats.Connect(url)
	if err != nil {
		testenv.Unavailable(t, "nats", err)
	}
	defer nc.Close()
	s, err := cenats.NewSenderFromConn(nc, natsjs.StreamName(ceOrdersTopic), ceOrdersTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := "order-" + randomHex(4)
	ids := map[int]string{}
	for _, seq := range []int{3, 1, 2} {
		f := foreignEvent{producer: "sdk-go", id: uuid.NewString(), key: key, source: "urn:foreign:sdk-go",
			time: time.Now().UTC().Truncate(time.Millisecond), version: 1, order: ceOrder{OrderID: key, Note: fmt.Sprint("event ", seq)}}
		ids[seq] = f.id
		if err := s.Send(context.Background(), binding.ToMessage(f.sdkEvent(t, map[string]any{"sequence": fmt.Sprint(seq)}))); err != nil {
			t.Fatal(err)
		}
	}
	c.waitHandled(t, ids[3], ceOrdersTopic)
	var order []int64
	for _, r := range c.allRuns() {
		order = append(order, r.meta.Sequence)
	}
	if !slices.Equal(order, []int64{1, 2, 3}) {
		t.Errorf("the handler ran sequences %v, want 1, 2, 3", order)
	}
}

// TestForgedTopicCollidingIDAndOversize checks, on every transport, what a
// broker user who may write to one topic a consumer group reads can do to
// the group's handlers of another topic's events: nothing. A message whose
// type belongs to the orders topic, sent to the payments topic, runs no
// handler and is recorded failed as rejected; reusing the id of an order
// that comes later does not make the order a duplicate; and a message
// over the consumer's MaxMessageBytes is recorded failed and acknowledged,
// running no handler.
func TestForgedTopicCollidingIDAndOversize(t *testing.T) {
	const maxBytes = 1024
	for _, tc := range suiteCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			group := "forged-" + randomHex(4)
			tr := tc.Open(t)
			for _, topic := range []string{ceOrdersTopic, cePaymentsTopic} {
				testenv.DeleteTopicAtCleanup(t, tr, topic, group)
			}
			c := startConsumer(t, tr, group, maxBytes)
			publish := func(topic string, m *message.Message) {
				t.Helper()
				if err := tr.Publisher().Publish(topic, m); err != nil {
					t.Fatalf("publish %s to %s: %v", m.UUID, topic, err)
				}
			}
			at := time.Now().UTC().Truncate(time.Microsecond)
			forged, shared, big := uuid.NewString(), uuid.NewString(), uuid.NewString()

			publish(cePaymentsTopic, eventMessage(t, ceOrder{OrderID: "forged"}, forged, at))
			f := c.waitFailed(t, forged, cePaymentsTopic)
			reason := fmt.Sprintf("rejected: event %q belongs on topic %q but arrived on %q", "OrderPlaced", ceOrdersTopic, cePaymentsTopic)
			if !strings.Contains(f.Error, reason) {
				t.Errorf("the forged message failed with %q, want %q", f.Error, reason)
			}

			genuine := ceOrder{OrderID: "genuine"}
			publish(ceOrdersTopic, eventMessage(t, genuine, forged, at))
			if run := c.waitHandled(t, forged, ceOrdersTopic); run.event != genuine {
				t.Errorf("the order with the forged message's id ran with %+v, want %+v", run.event, genuine)
			}

			// Legitimate messages of two topics may share an id too.
			publish(cePaymentsTopic, eventMessage(t, cePayment{PaymentID: "p", Amount: 1}, shared, at))
			publish(ceOrdersTopic, eventMessage(t, ceOrder{OrderID: "o"}, shared, at))
			c.waitHandled(t, shared, cePaymentsTopic)
			c.waitHandled(t, shared, ceOrdersTopic)

			publish(ceOrdersTopic, eventMessage(t, ceOrder{OrderID: "big", Note: strings.Repeat("x", maxBytes)}, big, at))
			f = c.waitFailed(t, big, ceOrdersTopic)
			if want := fmt.Sprintf("over MaxMessageBytes (%d); not stored", maxBytes); !strings.Contains(f.Error, want) || len(f.Payload) != 0 {
				t.Errorf("the oversized message failed with %q and %d payload bytes kept, want %q and none", f.Error, len(f.Payload), want)
			}

			// Both failed messages were acknowledged. A subscription takes
			// its next message only once the current one is settled, so a
			// later message handled on each topic shows that the consumer
			// settled them while it ran; acked, they never come back.
			later := map[string]string{ceOrdersTopic: uuid.NewString(), cePaymentsTopic: uuid.NewString()}
			publish(ceOrdersTopic, eventMessage(t, ceOrder{OrderID: "later"}, later[ceOrdersTopic], at))
			publish(cePaymentsTopic, eventMessage(t, cePayment{PaymentID: "later"}, later[cePaymentsTopic], at))
			for topic, id := range later {
				c.waitHandled(t, id, topic)
			}

			var runs []string
			for _, r := range c.allRuns() {
				runs = append(runs, r.meta.ID+" on "+r.meta.Topic)
			}
			slices.Sort(runs)
			want := []string{forged + " on " + ceOrdersTopic, shared + " on " + ceOrdersTopic, shared + " on " + cePaymentsTopic,
				later[ceOrdersTopic] + " on " + ceOrdersTopic, later[cePaymentsTopic] + " on " + cePaymentsTopic}
			slices.Sort(want)
			if !slices.Equal(runs, want) {
				t.Errorf("handler runs %q, want %q", runs, want)
			}

			// Once the consumer has stopped, a subscriber of the group gets
			// a new message after at most the later one again (its ack may
			// have met the stop: delivery is at least once), and never a
			// failed one. That is strict where an unacknowledged message
			// comes back at once (mem, RabbitMQ, SQL); NATS and Redis may
			// hold one for their ack wait (30 s) first, so there it shows
			// less, and the transports' own conformance tests cover acks.
			c.stop()
			sub, err := tr.Subscriber(group)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, topic := range []string{ceOrdersTopic, cePaymentsTopic} {
				ch, err := sub.Subscribe(ctx, topic)
				if err != nil {
					t.Fatal(err)
				}
				last := uuid.NewString()
				publish(topic, eventMessage(t, ceOrder{OrderID: "last"}, last, at))
				for {
					m := nextWithin(t, ch, wait)
					m.Ack()
					if m.UUID == last {
						break
					}
					if m.UUID != later[topic] {
						t.Errorf("%s: after the consumer stopped, the group got %s again", topic, m.UUID)
					}
				}
			}
		})
	}
}
