package transport_test

import (
	"context"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
)

// The trace a foreign producer's events belong to: a W3C traceparent and
// tracestate, as another language's OpenTelemetry SDK writes them.
const (
	foreignTraceID    = "4bf92f3577b34da6a3ce929d0e0e4736"
	foreignSpanID     = "00f067aa0ba902b7"
	foreignTraceState = "vendor=opaque-value"
)

// TestForeignProducerContinuesItsTrace sends an eventgen Consumer events
// from sdk-go's senders that carry the CloudEvents distributed-tracing
// extension (traceparent, tracestate), as a producer in another language
// would: in binary and structured mode, on NATS and on RabbitMQ (sdk-go's
// AMQP writer). Each handler run's process span must be
// in the producer's trace, as a child of the producer's span, with the
// tracestate kept.
func TestForeignProducerContinuesItsTrace(t *testing.T) {
	foreign := func(t *testing.T) *event.Event {
		t.Helper()
		e := event.New()
		e.SetID(uuid.NewString())
		e.SetType(tracedOrder{}.EventName())
		e.SetSource("urn:foreign:sdk-go")
		e.SetTime(time.Now().Truncate(time.Second))
		e.SetExtension("traceparent", "00-"+foreignTraceID+"-"+foreignSpanID+"-01")
		e.SetExtension("tracestate", foreignTraceState)
		if err := e.SetData(event.ApplicationJSON, []byte(`{"order_id":"o-foreign"}`)); err != nil {
			t.Fatal(err)
		}
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		return &e
	}

	t.Run("nats", func(t *testing.T) {
		url := testenv.TransportURL(t, "nats")
		rec, handled := consumeTraced(t, "nats", url)
		nc, err := nats.Connect(url)
		if err != nil {
			testenv.Unavailable(t, "nats", err)
		}
		defer nc.Close()
		// The consumer's subscription made the topic's stream.
		s, err := cenats.NewSenderFromConn(nc, natsjs.StreamName(tracedTopic), tracedTopic, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range contentModes() {
			e := foreign(t)
			if err := s.Send(mode.ctx, binding.ToMessage(e)); err != nil {
				t.Fatalf("%s mode: %v", mode.name, err)
			}
			checkForeignTrace(t, rec, handled, e.ID(), "nats, "+mode.name+" mode")
		}
	})

	t.Run("amqp", func(t *testing.T) {
		url := testenv.TransportURL(t, "amqp")
		rec, handled := consumeTraced(t, "amqp", url)
		publish := amqpPublisher(t, url, tracedTopic)
		for _, mode := range contentModes() {
			e := foreign(t)
			publish("sdk-go's AMQP writer, "+mode.name+" mode", sdkAMQPPublishing(t, mode.ctx, e))
			checkForeignTrace(t, rec, handled, e.ID(), "amqp, "+mode.name+" mode")
		}
	})
}

// consumeTraced runs a traced consumer of a new group on the broker named
// name at url, and returns its span recorder and the channel its handler
// reports runs on.
func consumeTraced(t *testing.T, name, url string) (*tracetest.SpanRecorder, chan string) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	group := "foreign-traced-" + randomHex(4)
	tr := testenv.TransportCase{Name: name, URL: url}.Open(t)
	testenv.DeleteTopicAtCleanup(t, tr, tracedTopic, group)
	handled := make(chan string, 4)
	startTracedConsumer(t, tr, group, tp, prop, handled)
	return rec, handled
}

// checkForeignTrace waits for one handler run and checks the process span
// of message id: in the foreign trace, the child of the foreign span, the
// tracestate kept, and the handler's own span under it.
func checkForeignTrace(t *testing.T, rec *tracetest.SpanRecorder, handled <-chan string, id, what string) {
	t.Helper()
	select {
	case <-handled:
	case <-time.After(wait):
		t.Fatalf("%s: the handler did not run", what)
	}
	var process sdktrace.ReadOnlySpan
	deadline := time.Now().Add(wait)
	for process == nil {
		for _, s := range rec.Ended() {
			if s.Name() == "process "+tracedTopic && spanAttr(s, "messaging.message.id") == id {
				process = s
			}
		}
		if process == nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no process span for message %s", what, id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sc := process.SpanContext()
	if sc.TraceID().String() != foreignTraceID || process.Parent().SpanID().String() != foreignSpanID || !process.Parent().IsRemote() {
		t.Errorf("%s: process span in trace %s under %s (remote %v); want trace %s under the producer's span %s",
			what, sc.TraceID(), process.Parent().SpanID(), process.Parent().IsRemote(), foreignTraceID, foreignSpanID)
	}
	if got := sc.TraceState().String(); got != foreignTraceState {
		t.Errorf("%s: tracestate %q, want the producer's %q", what, got, foreignTraceState)
	}
	if process.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("%s: process span kind %s", what, process.SpanKind())
	}
	deadline = time.Now().Add(wait)
	for {
		for _, s := range rec.Ended() {
			if s.Parent().SpanID() == sc.SpanID() && s.SpanContext().TraceID() == sc.TraceID() {
				return // the handler's span
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the handler's span does not nest under the process span", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
