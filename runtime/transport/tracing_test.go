package transport_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
)

// tracedTopic is the topic of tracedOrder. Handle takes it from the type's
// zero value, so it is fixed for the test binary; its random part keeps
// concurrent runs against one broker apart, and each case deletes it.
var tracedTopic = "test.traced." + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]

type tracedOrder struct {
	OrderID string `json:"order_id"`
}

func (tracedOrder) EventName() string { return "OrderPlaced" }
func (tracedOrder) EventVersion() int { return 1 }
func (tracedOrder) Topic() string     { return tracedTopic }
func (tracedOrder) Validate() error   { return nil }

// tracedSystems is the messaging.system each broker's spans carry.
var tracedSystems = map[string]string{
	"mem": "in_process", "amqp": "rabbitmq", "nats": "nats", "redis": "redis", "postgres": "sql", "mysql": "sql",
}

// TestTracingEndToEnd publishes an event inside a request's span through
// an outbox, over each broker, to two consumer groups whose handlers start
// spans of their own, and checks that all of it is one trace: request ->
// send -> process (one per group) -> the handler's span. The trace context
// crosses each broker as the CloudEvents distributed-tracing extension, in
// the broker binding's names.
func TestTracingEndToEnd(t *testing.T) {
	for _, tc := range append(testenv.Transports(t), testenv.SQLTransports(t)...) {
		t.Run(tc.Name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
			groups := []string{"billing", "shipping"}

			tr := tc.Open(t)
			testenv.DeleteTopicAtCleanup(t, tr, tracedTopic, groups...)
			handled := make(chan string, 2)
			for _, g := range groups {
				startTracedConsumer(t, tr, g, tp, prop, handled)
			}

			db := testenv.OpenSQLite(t)
			ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{
				Logger: testenv.Logger(t), TracerProvider: tp, Propagator: prop,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := ob.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			reqCtx, request := tp.Tracer("shop").Start(ctx, "place order")
			err = db.RunInTx(reqCtx, nil, func(ctx context.Context, tx bun.Tx) error {
				return ob.Publish(ctx, tx, "shop", []eventgen.Event{tracedOrder{OrderID: "o-1"}})
			})
			request.End()
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- ob.Run(runCtx) }()
			t.Cleanup(func() {
				stop()
				if err := <-done; err != nil {
					t.Errorf("outbox Run: %v", err)
				}
			})
			for range groups {
				select {
				case <-handled:
				case <-time.After(wait):
					t.Fatal("timed out waiting for the handlers")
				}
			}

			spans := waitTracedSpans(t, rec, 1+1+2+2) // request, send, 2 process, 2 handler spans
			traceID := request.SpanContext().TraceID()
			var send sdktrace.ReadOnlySpan
			for _, s := range spans {
				if s.SpanContext().TraceID() != traceID {
					t.Errorf("span %q is in trace %s, want the request's %s", s.Name(), s.SpanContext().TraceID(), traceID)
				}
				if s.Name() == "send "+tracedTopic {
					send = s
				}
			}
			if send == nil {
				t.Fatal("no send span")
			}
			if send.Parent().SpanID() != request.SpanContext().SpanID() || send.SpanKind() != trace.SpanKindProducer {
				t.Errorf("send span: parent %s, kind %s; want the request %s, producer", send.Parent().SpanID(), send.SpanKind(), request.SpanContext().SpanID())
			}
			checkSystem(t, send, tracedSystems[tc.Name])
			seen := map[string]bool{}
			for _, p := range spans {
				if p.Name() != "process "+tracedTopic {
					continue
				}
				group := spanAttr(p, "messaging.consumer.group.name")
				seen[group] = true
				if p.Parent().SpanID() != send.SpanContext().SpanID() || p.SpanKind() != trace.SpanKindConsumer {
					t.Errorf("%s: process span parent %s, kind %s; want the send span %s, consumer", group, p.Parent().SpanID(), p.SpanKind(), send.SpanContext().SpanID())
				}
				checkSystem(t, p, tracedSystems[tc.Name])
				nested := false
				for _, c := range spans {
					if c.Name() == "handle "+group && c.Parent().SpanID() == p.SpanContext().SpanID() {
						nested = true
					}
				}
				if !nested {
					t.Errorf("%s: the handler's span does not nest under the process span", group)
				}
			}
			if !seen["billing"] || !seen["shipping"] {
				t.Errorf("process spans for groups %v, want billing and shipping", seen)
			}
		})
	}
}

// startTracedConsumer runs a consumer of group on tr, with its inbox in a
// database of its own, whose handler starts a span "handle <group>" and
// then sends the group's name to handled. It returns once the consumer has
// subscribed, and stops it when the test ends (before tr closes).
func startTracedConsumer(t *testing.T, tr *transport.Transport, group string, tp trace.TracerProvider, prop propagation.TextMapPropagator, handled chan<- string) {
	t.Helper()
	sub, err := tr.Subscriber(group)
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventgen.NewConsumer(testenv.OpenSQLite(t), sub, eventgen.ConsumerOptions{
		Group: group, Concurrency: 1, Logger: testenv.Logger(t), TracerProvider: tp, Propagator: prop,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = eventgen.Handle(c, func(ctx context.Context, e tracedOrder, m eventgen.Metadata) error {
		_, span := tp.Tracer("shop").Start(ctx, "handle "+group)
		span.End()
		handled <- group
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runConsumer(t, c, sub, group)
}

// waitTracedSpans waits until n spans have ended and returns them; spans
// end just after the work they time, so they are waited for.
func waitTracedSpans(t *testing.T, rec *tracetest.SpanRecorder, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		spans := rec.Ended()
		if len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans ended, want %d", len(spans), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func checkSystem(t *testing.T, s sdktrace.ReadOnlySpan, want string) {
	t.Helper()
	if got := spanAttr(s, "messaging.system"); got != want {
		t.Errorf("span %q: messaging.system %q, want %q", s.Name(), got, want)
	}
}
