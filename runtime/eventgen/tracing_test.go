package eventgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// testPropagator is what services install: W3C trace context and baggage.
var testPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// recorder is an SDK TracerProvider of the test's own (not the global, so
// tests run in parallel) that records every span.
type recorder struct {
	tp  *sdktrace.TracerProvider
	rec *tracetest.SpanRecorder
}

func newRecorder(t testing.TB) *recorder {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &recorder{tp: tp, rec: rec}
}

// waitSpans waits until the ended spans named name number n and returns
// them, oldest first. Spans end after the outcome hooks fire, so tests
// wait for them too.
func (r *recorder) waitSpans(t testing.TB, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		var got []sdktrace.ReadOnlySpan
		for _, s := range r.rec.Ended() {
			if s.Name() == name {
				got = append(got, s)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans named %q ended, want %d", len(got), name, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// attrs returns a span's attributes by key, as strings.
func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// checkAttrs reports attributes of s that differ from want ("" for
// absent).
func checkAttrs(t testing.TB, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := attrs(s)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("span %s: attribute %s = %q, want %q", s.Name(), k, got[k], want[k])
		}
	}
}

func eventNames(s sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, e := range s.Events() {
		names = append(names, e.Name)
	}
	return names
}

// TestTracingFromPublishToHandlers follows one event from the request
// that publishes it, through the relay, to the handler of each of two
// groups and a span the handler starts: one trace, each span the child of
// the one before.
func TestTracingFromPublishToHandlers(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		r := newRecorder(t)
		ob := newOutbox(t, h.db, h.ps, OutboxOptions{TracerProvider: r.tp, Propagator: testPropagator})
		type handlerRun struct {
			m        Metadata
			span     trace.SpanContext
			tenant   string
			childOf  trace.SpanContext
			childCtx trace.SpanContext
		}
		var mu sync.Mutex
		runs := map[string]handlerRun{}
		handler := func(ctx context.Context, e orderPlaced, m Metadata) error {
			_, child := r.tp.Tracer("shop").Start(ctx, "charge card")
			defer child.End()
			mu.Lock()
			defer mu.Unlock()
			runs[m.Group] = handlerRun{m: m, span: trace.SpanContextFromContext(ctx),
				tenant: baggage.FromContext(ctx).Member("tenant").Value(), childCtx: child.SpanContext()}
			return nil
		}
		opts := fastOptions()
		opts.TracerProvider, opts.Propagator = r.tp, testPropagator
		var trackers []*tracker
		for _, group := range []string{"billing", "shipping"} {
			c, tr := h.orders(group, opts, handler)
			h.run(c)
			trackers = append(trackers, tr)
		}

		member, err := baggage.NewMember("tenant", "acme")
		if err != nil {
			t.Fatal(err)
		}
		bag, err := baggage.New(member)
		if err != nil {
			t.Fatal(err)
		}
		ctx, request := r.tp.Tracer("shop").Start(baggage.ContextWithBaggage(context.Background(), bag), "place order")
		err = h.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return ob.Publish(ctx, tx, "shop", []Event{orderPlaced{OrderID: "o-1"}}, WithHeader("x-tenant", "acme"))
		})
		request.End()
		if err != nil {
			t.Fatal(err)
		}
		traceID := request.SpanContext().TraceID()

		stored := outboxHeaders(t, ob)
		if len(stored) != 1 {
			t.Fatalf("%d outbox rows, want 1", len(stored))
		}
		want := map[string]string{
			wire.HeaderTraceParent: fmt.Sprintf("00-%s-%s-01", traceID, request.SpanContext().SpanID()),
			"baggage":              "tenant=acme",
			"x-tenant":             "acme",
		}
		if !maps.Equal(stored[0], want) {
			t.Errorf("stored headers %v, want %v", stored[0], want)
		}

		run(t, ob)
		send := r.waitSpans(t, "send "+topicOrders, 1)[0]
		process := r.waitSpans(t, "process "+topicOrders, 2)
		children := r.waitSpans(t, "charge card", 2)
		for _, tr := range trackers {
			tr.wait(t, "handled", func() bool { return tr.count(tables.StatusSucceeded) == 1 })
		}

		if send.SpanKind() != trace.SpanKindProducer || send.SpanContext().TraceID() != traceID ||
			send.Parent().SpanID() != request.SpanContext().SpanID() {
			t.Errorf("send span: kind %s, trace %s, parent %s; want a producer span in trace %s, child of the request %s",
				send.SpanKind(), send.SpanContext().TraceID(), send.Parent().SpanID(), traceID, request.SpanContext().SpanID())
		}
		id := runs["billing"].m.ID
		checkAttrs(t, send, map[string]string{
			"messaging.system":           "", // GoChannel does not say
			"messaging.destination.name": topicOrders,
			"messaging.message.id":       id,
			"messaging.operation.type":   "send",
			"messaging.operation.name":   "send",
			"eventgen.event.name":        "OrderPlaced",
			"eventgen.event.version":     "1",
			"eventgen.event.key":         "o-1",
			"eventgen.attempt":           "1",
		})
		if send.Status().Code != codes.Unset {
			t.Errorf("send span status %v, want unset", send.Status())
		}

		byGroup := map[string]sdktrace.ReadOnlySpan{}
		for _, p := range process {
			byGroup[attrs(p)["messaging.consumer.group.name"]] = p
		}
		for _, group := range []string{"billing", "shipping"} {
			p := byGroup[group]
			if p == nil {
				t.Errorf("no process span for group %s", group)
				continue
			}
			if p.SpanKind() != trace.SpanKindConsumer || p.SpanContext().TraceID() != traceID ||
				p.Parent().SpanID() != send.SpanContext().SpanID() {
				t.Errorf("%s: process span kind %s, trace %s, parent %s; want a consumer span in trace %s, child of the send span %s",
					group, p.SpanKind(), p.SpanContext().TraceID(), p.Parent().SpanID(), traceID, send.SpanContext().SpanID())
			}
			checkAttrs(t, p, map[string]string{
				"messaging.destination.name":    topicOrders,
				"messaging.message.id":          id,
				"messaging.consumer.group.name": group,
				"messaging.operation.type":      "process",
				"eventgen.event.name":           "OrderPlaced",
				"eventgen.attempt":              "1",
			})
			got := runs[group]
			if got.span.SpanID() != p.SpanContext().SpanID() {
				t.Errorf("%s: the handler's context carries span %s, want the process span %s", group, got.span.SpanID(), p.SpanContext().SpanID())
			}
			if got.tenant != "acme" {
				t.Errorf("%s: the handler's baggage has tenant %q, want acme", group, got.tenant)
			}
			if want := map[string]string{"x-tenant": "acme", "baggage": "tenant=acme"}; !maps.Equal(got.m.Headers, want) {
				t.Errorf("%s: Metadata.Headers %v, want %v (no trace context)", group, got.m.Headers, want)
			}
			var child sdktrace.ReadOnlySpan
			for _, c := range children {
				if c.SpanContext().SpanID() == got.childCtx.SpanID() {
					child = c
				}
			}
			if child == nil || child.Parent().SpanID() != p.SpanContext().SpanID() || child.SpanContext().TraceID() != traceID {
				t.Errorf("%s: the handler's own span does not nest under the process span", group)
			}
		}
	})
}

// TestTracingRetriesAndFailures checks that every run of a retried
// message is a span in the producer's trace, with its attempt number, and
// that a message that fails for good says so.
func TestTracingRetriesAndFailures(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		r := newRecorder(t)
		opts := fastOptions() // MaxRetries 3
		opts.TracerProvider, opts.Propagator = r.tp, testPropagator
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			switch {
			case e.OrderID == "doomed":
				return errors.New("card declined")
			case m.Attempt < 2:
				return fmt.Errorf("transient failure %d", m.Attempt)
			}
			return nil
		})
		h.run(c)

		ctx, producer := r.tp.Tracer("test").Start(context.Background(), "producer")
		producer.End()
		headers := map[string]string{}
		testPropagator.Inject(ctx, headerCarrier(headers))
		h.publish(topicOrders,
			eventMessage(t, orderPlaced{OrderID: "flaky"}, "flaky", headers),
			eventMessage(t, orderPlaced{OrderID: "doomed"}, "doomed", headers),
			eventMessage(t, orderPlaced{OrderID: "untraced"}, "untraced", nil))
		tr.waitOutcome(t, "flaky", tables.StatusSucceeded)
		tr.waitOutcome(t, "doomed", tables.StatusFailed)
		tr.waitOutcome(t, "untraced", tables.StatusSucceeded)

		byMessage := map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range r.waitSpans(t, "process "+topicOrders, 2+3+2) {
			id := attrs(s)["messaging.message.id"]
			byMessage[id] = append(byMessage[id], s)
		}
		for _, id := range []string{"flaky", "doomed", "untraced"} {
			slices.SortFunc(byMessage[id], func(a, b sdktrace.ReadOnlySpan) int {
				return strings.Compare(attrs(a)["eventgen.attempt"], attrs(b)["eventgen.attempt"])
			})
		}

		flaky := byMessage["flaky"]
		if len(flaky) != 2 {
			t.Fatalf("%d spans for the retried message, want 2", len(flaky))
		}
		for i, s := range flaky {
			if got := attrs(s)["eventgen.attempt"]; got != fmt.Sprint(i+1) {
				t.Errorf("flaky run %d: eventgen.attempt %s", i+1, got)
			}
			// The retry runs from the inbox table: its parent comes from
			// the headers stored with the row.
			if s.Parent().SpanID() != producer.SpanContext().SpanID() || s.SpanContext().TraceID() != producer.SpanContext().TraceID() {
				t.Errorf("flaky run %d: parent %s in trace %s, want the producer's span %s", i+1,
					s.Parent().SpanID(), s.SpanContext().TraceID(), producer.SpanContext().SpanID())
			}
		}
		if s := flaky[0]; s.Status().Code != codes.Error || s.Status().Description != "transient failure 1" ||
			!slices.Equal(eventNames(s), []string{"exception", "retry scheduled"}) {
			t.Errorf("first run: status %v, events %v; want the error and a retry", s.Status(), eventNames(s))
		}
		if s := flaky[1]; s.Status().Code != codes.Unset || len(s.Events()) != 0 {
			t.Errorf("second run: status %v, events %v; want a plain success", s.Status(), eventNames(s))
		}

		doomed := byMessage["doomed"]
		if len(doomed) != 3 {
			t.Fatalf("%d spans for the failing message, want 3 (MaxRetries)", len(doomed))
		}
		for i, s := range doomed {
			want := []string{"exception", "retry scheduled"}
			if i == 2 {
				want = []string{"exception", "failed after 3 attempts"}
			}
			if s.Status().Code != codes.Error || s.Status().Description != "card declined" || !slices.Equal(eventNames(s), want) {
				t.Errorf("doomed run %d: status %v, events %v; want card declined and %v", i+1, s.Status(), eventNames(s), want)
			}
		}
		last := doomed[2].Events()[1]
		if len(last.Attributes) != 1 || last.Attributes[0] != attrAttempts.Int(3) {
			t.Errorf("failed event attributes %v", last.Attributes)
		}

		untraced := byMessage["untraced"]
		if len(untraced) != 2 {
			t.Fatalf("%d spans for the untraced message, want 2", len(untraced))
		}
		for i, s := range untraced {
			if s.Parent().IsValid() || s.SpanContext().TraceID() == producer.SpanContext().TraceID() {
				t.Errorf("untraced run %d has parent %s in trace %s; want a root span", i+1, s.Parent().SpanID(), s.SpanContext().TraceID())
			}
		}
		if untraced[0].SpanContext().TraceID() == untraced[1].SpanContext().TraceID() {
			t.Error("the runs of an untraced message share a trace; each should be a root of its own")
		}
		if r := h.row(c, "untraced"); r.Headers.Valid {
			t.Errorf("untraced row stores headers %s", r.Headers.String)
		}
	})
}

// TestTracingConsumerSkipsAndRejects checks the spans of messages no
// handler runs for.
func TestTracingConsumerSkipsAndRejects(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		r := newRecorder(t)
		opts := fastOptions()
		opts.TracerProvider, opts.Propagator = r.tp, testPropagator
		c, tr := h.orders("billing", opts, func(context.Context, orderPlaced, Metadata) error { return nil })
		if err := Handle(c, func(context.Context, orderShipped, Metadata) error { return nil }); err != nil {
			t.Fatal(err)
		}
		h.run(c)
		// Not handled by this group; on the wrong topic; malformed.
		unknown := eventMessage(t, orderShipped{OrderID: "o-1"}, "unknown", nil)
		unknown.Metadata.Set(wire.HeaderType, "OrderCancelled")
		malformed := eventMessage(t, orderPlaced{OrderID: "o-1"}, "malformed", nil)
		malformed.Metadata.Set(wire.HeaderEventVersion, "two")
		h.publish(topicOrders, unknown, eventMessage(t, orderShipped{OrderID: "o-1"}, "forged", nil), malformed)
		tr.waitOutcome(t, "unknown", tables.StatusSkipped)
		tr.waitOutcome(t, "forged", tables.StatusFailed)
		tr.waitOutcome(t, "malformed", tables.StatusFailed)

		got := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range r.waitSpans(t, "process "+topicOrders, 3) {
			got[attrs(s)["messaging.message.id"]] = s
		}
		for _, tt := range []struct {
			id, event string
			status    codes.Code
		}{{"unknown", "skipped", codes.Unset}, {"forged", "rejected", codes.Error}, {"malformed", "malformed", codes.Error}} {
			s := got[tt.id]
			if s == nil {
				t.Errorf("%s: no span", tt.id)
				continue
			}
			if s.Status().Code != tt.status || !slices.Equal(eventNames(s), []string{tt.event}) {
				t.Errorf("%s: status %v, events %v; want %v and %s", tt.id, s.Status(), eventNames(s), tt.status, tt.event)
			}
		}
	})
}

// TestTracingOutboxRetriesAndFailures checks the send spans of a publish
// that fails, then succeeds, and of one that fails for good.
func TestTracingOutboxRetriesAndFailures(t *testing.T) {
	db := testenv.OpenSQLite(t)
	r := newRecorder(t)
	ps := newPubSub(t)
	got := collect(t, ps)
	failures := map[int]int{1: 1, 2: 100} // event 1 fails once, event 2 always
	var mu sync.Mutex
	pub := &flakyPublisher{Publisher: ps, reject: func(n int) bool {
		mu.Lock()
		defer mu.Unlock()
		if failures[n] > 0 {
			failures[n]--
			return true
		}
		return false
	}}
	ob := newOutbox(t, db, pub, OutboxOptions{
		LocalRetries: 1, LocalRetryInterval: time.Millisecond,
		RetryInterval: time.Millisecond, RetryMinAge: time.Millisecond,
		MaxRetries: 3, PollInterval: 5 * time.Millisecond,
		TracerProvider: r.tp, Propagator: testPropagator,
	})
	ctx, request := r.tp.Tracer("test").Start(context.Background(), "request")
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return ob.Publish(ctx, tx, "test", []Event{testEvent{N: 1}, testEvent{N: 2}})
	})
	request.End()
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan string, 4)
	ob.hooks = &outboxHooks{ended: func(_ int64, status string) { ended <- status }}
	run(t, ob)
	got.waitDistinct(1)
	for status := range ended {
		if status == tables.StatusFailed {
			break
		}
	}

	byEvent := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range r.waitSpans(t, "send "+testTopic, 2+3) {
		if s.Parent().SpanID() != request.SpanContext().SpanID() {
			t.Errorf("send span parent %s, want the request %s", s.Parent().SpanID(), request.SpanContext().SpanID())
		}
		key := attrs(s)["eventgen.event.key"]
		byEvent[key] = append(byEvent[key], s)
	}
	flaky, doomed := byEvent["k1"], byEvent["k2"]
	if len(flaky) != 2 || len(doomed) != 3 {
		t.Fatalf("%d and %d send spans, want 2 and 3", len(flaky), len(doomed))
	}
	for i, s := range flaky {
		want := []string{"exception"}
		if i == 1 {
			want = nil
		}
		if a := attrs(s)["eventgen.attempt"]; a != fmt.Sprint(i+1) || !slices.Equal(eventNames(s), want) {
			t.Errorf("event 1, span %d: attempt %s, events %v; want %d and %v", i, a, eventNames(s), i+1, want)
		}
	}
	for i, s := range doomed {
		want := []string{"exception"}
		if i == 2 {
			want = []string{"exception", "failed after 3 attempts"}
		}
		if a := attrs(s)["eventgen.attempt"]; a != fmt.Sprint(i+1) || s.Status().Code != codes.Error || !slices.Equal(eventNames(s), want) {
			t.Errorf("event 2, span %d: attempt %s, status %v, events %v; want %d, an error and %v", i, a, s.Status(), eventNames(s), i+1, want)
		}
	}
	// The message carries the send span's context, not the request's.
	m := got.message(1)
	sent := flaky[1].SpanContext()
	if want := fmt.Sprintf("00-%s-%s-01", sent.TraceID(), sent.SpanID()); m.Metadata.Get(wire.HeaderTraceParent) != want {
		t.Errorf("message traceparent %q, want the send span's %q", m.Metadata.Get(wire.HeaderTraceParent), want)
	}
}

// TestTracingOffStoresNothing checks that nothing is stored with the row
// or sent with the message without a propagator (the global one carries
// nothing until set), without a span, or with tracing turned off, and
// that tracing through no-op providers allocates nothing where it says.
func TestTracingOffStoresNothing(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ps := newPubSub(t)
	got := collect(t, ps)
	r := newRecorder(t)
	// A request traced by an SDK of its own, while the outbox uses the
	// globals, which nothing in this test binary sets.
	traced, request := r.tp.Tracer("test").Start(context.Background(), "request")
	defer request.End()

	globals := newOutbox(t, db, ps, OutboxOptions{})
	publishCtx(t, globals, db, traced, 1)
	// A propagator, but no span in the context.
	untraced := newOutbox(t, db, ps, OutboxOptions{TracerProvider: noop.NewTracerProvider(), Propagator: testPropagator})
	publishCtx(t, untraced, db, context.Background(), 2)
	// Tracing turned off, in a traced context.
	offOptions := OutboxOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.NewCompositeTextMapPropagator()}
	off := newOutbox(t, db, ps, offOptions)
	publishCtx(t, off, db, traced, 3)
	if globals.tracing == nil || untraced.tracing == nil || off.tracing != nil {
		t.Errorf("tracing off: globals %v, no-op provider with a propagator %v, no-op provider with no propagation %v; want false, false, true",
			globals.tracing == nil, untraced.tracing == nil, off.tracing == nil)
	}
	c, err := NewConsumer(db, ps, ConsumerOptions{Group: "g", TracerProvider: offOptions.TracerProvider, Propagator: offOptions.Propagator})
	if err != nil || c.tracing != nil {
		t.Errorf("consumer with tracing off: tracing %v, %v", c.tracing, err)
	}
	for _, ob := range []*Outbox{globals, untraced, off} {
		for _, h := range outboxHeaders(t, ob) {
			if h != nil {
				t.Errorf("stored headers %v, want none", h)
			}
		}
	}
	run(t, globals)
	run(t, untraced)
	run(t, off)
	got.waitDistinct(3)
	for n := 1; n <= 3; n++ {
		for k := range got.message(n).Metadata {
			if k == wire.HeaderTraceParent || k == wire.HeaderTraceState || k == "baggage" {
				t.Errorf("message %d carries %s", n, k)
			}
		}
	}

	if n := testing.AllocsPerRun(100, func() { _ = untraced.tracing.headers(context.Background()) }); n != 0 {
		t.Errorf("headers of a context without a span allocate %v times, want 0", n)
	}
	span := trace.SpanFromContext(context.Background()) // what the no-op tracer returns
	if n := testing.AllocsPerRun(100, func() {
		spanError(span, errTest, true, 3)
		spanOutcome(span, tables.Outcome{Status: tables.StatusFailed, Attempts: 3, LastError: "x"}, errTest, "")
	}); n != 0 {
		t.Errorf("span annotations of a non-recording span allocate %v times, want 0", n)
	}
}

var errTest = errors.New("test")

// TestHeaderCarrier checks the names the trace context is stored under,
// and that the carrier drops what could not travel as a header.
func TestHeaderCarrier(t *testing.T) {
	h := headerCarrier{}
	h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	h.Set("tracestate", "vendor=v")
	h.Set("baggage", "tenant=acme")
	h.Set("ce_forged", "x")      // an attribute's name
	h.Set("content-type", "x")   // reserved
	h.Set("_broker", "x")        // the brokers'
	h.Set("bad name", "x")       // not a token
	h.Set("b3", "line\nbreak")   // a control character
	h.Set("uber-trace-id", "ok") // another propagator's field
	want := map[string]string{
		wire.HeaderTraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		wire.HeaderTraceState:  "vendor=v",
		"baggage":              "tenant=acme",
		"uber-trace-id":        "ok",
	}
	if !maps.Equal(map[string]string(h), want) {
		t.Errorf("carrier holds %v, want %v", h, want)
	}
	if got := h.Get("traceparent"); got != want[wire.HeaderTraceParent] {
		t.Errorf("Get(traceparent) = %q", got)
	}
	if got, want := slices.Sorted(slices.Values(h.Keys())), []string{"baggage", "traceparent", "tracestate", "uber-trace-id"}; !slices.Equal(got, want) {
		t.Errorf("Keys() = %v, want %v", got, want)
	}

	// A header the application set itself is kept over the propagator's.
	enc, err := encodeHeaders(map[string]string{"baggage": "mine=1"}, map[string]string{"baggage": "tenant=acme", wire.HeaderTraceParent: "tp"})
	if err != nil || enc != `{"baggage":"mine=1","ce_traceparent":"tp"}` {
		t.Errorf("encodeHeaders = %v, %v", enc, err)
	}
	// The application still may not set the extension's names.
	if _, err := encodeHeaders(map[string]string{wire.HeaderTraceParent: "tp"}, nil); err == nil {
		t.Error("WithHeader(ce_traceparent) was accepted")
	}
	// Metadata.Headers has no trace context.
	m := metadataOf(tables.InboxRow{MessageID: "id"}, map[string]string{wire.HeaderTraceParent: "tp", wire.HeaderTraceState: "ts"}, 1, "g")
	if m.Headers != nil {
		t.Errorf("Metadata.Headers = %v, want nil", m.Headers)
	}
}

// publishCtx publishes event n in a transaction begun with ctx.
func publishCtx(t *testing.T, ob *Outbox, db *bun.DB, ctx context.Context, n int) {
	t.Helper()
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return ob.Publish(ctx, tx, "test", []Event{testEvent{N: n}})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// outboxHeaders returns the decoded headers of every row of ob, nil for a
// row without, in id order.
func outboxHeaders(t testing.TB, ob *Outbox) []map[string]string {
	t.Helper()
	rows, err := ob.db.QueryContext(context.Background(), "SELECT headers FROM "+ob.opts.Table+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []map[string]string
	for rows.Next() {
		var s *string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		var h map[string]string
		if s != nil {
			h = map[string]string{}
			if err := json.Unmarshal([]byte(*s), &h); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTracingPreparedStatements checks that the runtime's prepared
// statements, which Bun's query hooks do not see, are CLIENT spans of their
// own under the span that runs them (the outbox insert under the request,
// the inbox insert under the process span), and that the relay's and the
// retrier's background statements start no trace of their own. Statements
// are prepared in the background after their first use, so the test
// publishes until they run prepared.
func TestTracingPreparedStatements(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		r := newRecorder(t)
		ob := newOutbox(t, h.db, h.ps, OutboxOptions{TracerProvider: r.tp, Propagator: testPropagator})
		opts := fastOptions()
		opts.TracerProvider, opts.Propagator = r.tp, testPropagator
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error { return nil })
		h.run(c)
		stop := run(t, ob)
		defer stop()

		// spans returns the ended spans named name by their parent's id.
		spans := func(name string) map[trace.SpanID]sdktrace.ReadOnlySpan {
			got := map[trace.SpanID]sdktrace.ReadOnlySpan{}
			for _, s := range r.rec.Ended() {
				if s.Name() == name {
					got[s.Parent().SpanID()] = s
				}
			}
			return got
		}
		requests := map[trace.SpanID]bool{}
		deadline := time.Now().Add(20 * time.Second)
		for n := 0; len(spans("INSERT "+ob.opts.Table)) == 0 || len(spans("INSERT "+c.opts.Table)) == 0; n++ {
			if time.Now().After(deadline) {
				t.Fatalf("after %d events, %d outbox and %d inbox INSERT spans", n,
					len(spans("INSERT "+ob.opts.Table)), len(spans("INSERT "+c.opts.Table)))
			}
			ctx, request := r.tp.Tracer("shop").Start(context.Background(), "place order")
			err := h.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return ob.Publish(ctx, tx, "shop", []Event{orderPlaced{OrderID: fmt.Sprint("o-", n)}})
			})
			request.End()
			if err != nil {
				t.Fatal(err)
			}
			requests[request.SpanContext().SpanID()] = true
			tr.wait(t, "handled", func() bool { return tr.count(tables.StatusSucceeded) == n+1 })
		}
		processes := spans("process " + topicOrders)
		processIDs := map[trace.SpanID]bool{}
		for _, p := range processes {
			processIDs[p.SpanContext().SpanID()] = true
		}
		for _, tc := range []struct {
			table   string
			parents map[trace.SpanID]bool
			under   string
		}{{ob.opts.Table, requests, "a request span"}, {c.opts.Table, processIDs, "a process span"}} {
			for parent, s := range spans("INSERT " + tc.table) {
				if s.SpanKind() != trace.SpanKindClient || !tc.parents[parent] {
					t.Errorf("INSERT %s: a %s span under %s, want a CLIENT span under %s", tc.table, s.SpanKind(), parent, tc.under)
				}
				a := attrs(s)
				if a["db.system.name"] != map[string]string{"postgres": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}[h.dbName] ||
					a["db.operation.name"] != "INSERT" || a["db.collection.name"] != tc.table || !strings.Contains(a["db.query.text"], "INTO "+tc.table) {
					t.Errorf("INSERT %s: attributes %v", tc.table, a)
				}
			}
		}
		for _, s := range r.rec.Ended() {
			if s.SpanKind() == trace.SpanKindClient && !s.Parent().IsValid() {
				t.Errorf("statement span %q started a trace of its own", s.Name())
			}
		}
	})
}
