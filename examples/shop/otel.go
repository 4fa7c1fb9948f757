package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// tracerName names the tracer of the shop's own spans.
const tracerName = "github.com/eventgen/eventgen/examples/shop"

// The shop's own span attributes.
const (
	attrOrderNumber = attribute.Key("shop.order.number") // on "place order": 1, 2, ...
	attrOrderID     = attribute.Key("shop.order.id")     // on "place order" and the handlers' spans
)

// Span names: the shop's, and the operations of eventgen's.
const (
	spanPlaceOrder = "place order"
	opSend         = "send"
	opProcess      = "process"
)

// telemetry is the shop's OpenTelemetry setup with -trace: an SDK
// TracerProvider that keeps every ended span in memory, for the tree that
// the program prints at its end; the W3C propagators (trace context and
// baggage); and an SDK MeterProvider with a manual reader, for the
// metrics snapshot printed after the tree.
//
// They are passed to the outbox and the consumers in their options, not
// installed as OpenTelemetry's globals: the tests run the program several
// times in one process, and with options no run sees another's spans or
// counts, and nothing global is left to restore. A service that also
// traces its HTTP server and its database would rather set the globals
// once in main, and leave the options unset (see docs/observability.md).
//
// A nil *telemetry is telemetry off: the outbox and the consumers use the
// globals, which are OpenTelemetry's no-op ones, and the shop's own spans
// are no-ops too.
type telemetry struct {
	tracerProvider *sdktrace.TracerProvider
	recorder       *tracetest.SpanRecorder
	propagator     propagation.TextMapPropagator
	meterProvider  *sdkmetric.MeterProvider
	reader         *sdkmetric.ManualReader
}

func newTelemetry() *telemetry {
	rec := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	return &telemetry{
		tracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		recorder:       rec,
		propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		meterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		reader:         reader,
	}
}

// tracer returns the tracer of the shop's own spans.
func (t *telemetry) tracer() trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer(tracerName)
	}
	return t.tracerProvider.Tracer(tracerName)
}

// outbox returns o with t's providers and propagator.
func (t *telemetry) outbox(o eventgen.OutboxOptions) eventgen.OutboxOptions {
	if t != nil {
		o.TracerProvider, o.Propagator, o.MeterProvider = t.tracerProvider, t.propagator, t.meterProvider
	}
	return o
}

// consumer returns o with t's providers and propagator.
func (t *telemetry) consumer(o eventgen.ConsumerOptions) eventgen.ConsumerOptions {
	if t != nil {
		o.TracerProvider, o.Propagator, o.MeterProvider = t.tracerProvider, t.propagator, t.meterProvider
	}
	return o
}

// shutdown stops the providers: spans ended later are not recorded, and
// the reader collects no more.
func (t *telemetry) shutdown() {
	if t != nil {
		// Neither the recorder nor the manual reader has anything to flush.
		_ = t.tracerProvider.Shutdown(context.Background())
		_ = t.meterProvider.Shutdown(context.Background())
	}
}

// startSpan starts a span of the shop's own work on order orderID, a child
// of the span in ctx: in a handler, eventgen's process span.
func startSpan(ctx context.Context, tracer trace.Tracer, name string, orderID uuid.UUID) (context.Context, trace.Span) {
	return tracer.Start(ctx, name, trace.WithAttributes(attrOrderID.String(orderID.String())))
}

// endSpan records *err, if any, on span and ends it. Defer it with the
// address of the function's error result.
func endSpan(span trace.Span, err *error) {
	if *err != nil {
		span.RecordError(*err)
		span.SetStatus(codes.Error, (*err).Error())
	}
	span.End()
}

// spanTree is one trace's ended spans, from its root.
type spanTree struct {
	root     sdktrace.ReadOnlySpan
	spans    int
	children map[trace.SpanID][]sdktrace.ReadOnlySpan
}

// orderTrace returns the trace of the n-th order, whose root is its
// "place order" span, or nil if that span has not ended.
func (t *telemetry) orderTrace(n int) *spanTree {
	spans := t.recorder.Ended()
	i := slices.IndexFunc(spans, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == spanPlaceOrder && !s.Parent().IsValid() && attr(s, attrOrderNumber).AsInt64() == int64(n)
	})
	if i < 0 {
		return nil
	}
	tree := &spanTree{root: spans[i], spans: 1, children: make(map[trace.SpanID][]sdktrace.ReadOnlySpan)}
	id := tree.root.SpanContext().TraceID()
	for _, s := range spans {
		if s.SpanContext().TraceID() == id && s.Parent().IsValid() {
			tree.children[s.Parent().SpanID()] = append(tree.children[s.Parent().SpanID()], s)
			tree.spans++
		}
	}
	// Siblings in a stable order: process spans by group, then each kind
	// of span by when it started.
	for _, c := range tree.children {
		slices.SortStableFunc(c, func(a, b sdktrace.ReadOnlySpan) int {
			return cmp.Or(
				strings.Compare(attr(a, "messaging.consumer.group.name").AsString(), attr(b, "messaging.consumer.group.name").AsString()),
				a.StartTime().Compare(b.StartTime()))
		})
	}
	return tree
}

// complete reports whether the tree holds the whole story of its order:
// a send span for each of the published messages the order led to, and
// under each, a process span that did not end in a retry for every group
// subscribed to its topic (topics maps each topic to those groups).
func (tree *spanTree) complete(published int, topics map[string][]string) bool {
	if tree == nil {
		return false
	}
	sent := make(map[string]bool)
	for _, c := range tree.children {
		for _, s := range c {
			if op, topic, _ := strings.Cut(s.Name(), " "); op == opSend {
				sent[attr(s, "messaging.message.id").AsString()] = true
				for _, g := range topics[topic] {
					if !slices.ContainsFunc(tree.children[s.SpanContext().SpanID()], func(p sdktrace.ReadOnlySpan) bool {
						return attr(p, "messaging.consumer.group.name").AsString() == g && !hasEvent(p, "retry scheduled")
					}) {
						return false
					}
				}
			}
		}
	}
	return len(sent) >= published
}

// treeAttrs are the attributes printed for each span, in this order, when
// it has them.
var treeAttrs = []attribute.Key{
	attrOrderNumber,
	"messaging.destination.name",
	"messaging.consumer.group.name",
	"eventgen.event.name",
	"eventgen.attempt",
	"db.system.name",
}

// print writes the tree, one span a line: its name indented under its
// parent's, its kind, its duration, its key attributes, its events and
// its error.
func (tree *spanTree) print(w io.Writer, n int) {
	type line struct{ name, rest string }
	var lines []line
	var walk func(s sdktrace.ReadOnlySpan, prefix, branch string)
	walk = func(s sdktrace.ReadOnlySpan, prefix, branch string) {
		var rest strings.Builder
		fmt.Fprintf(&rest, "%-8s %9s", s.SpanKind(), s.EndTime().Sub(s.StartTime()).Round(time.Microsecond))
		for _, k := range treeAttrs {
			if v := attr(s, k); v.Type() != attribute.INVALID {
				fmt.Fprintf(&rest, " %s=%s", k, v.Emit())
			}
		}
		for _, e := range s.Events() {
			if e.Name != "exception" {
				fmt.Fprintf(&rest, " [%s]", e.Name)
			}
		}
		if s.Status().Code == codes.Error {
			fmt.Fprintf(&rest, " error=%q", s.Status().Description)
		}
		lines = append(lines, line{prefix + branch + s.Name(), rest.String()})
		children := tree.children[s.SpanContext().SpanID()]
		switch branch {
		case "├─ ":
			prefix += "│  "
		case "└─ ":
			prefix += "   "
		}
		for i, c := range children {
			if i == len(children)-1 {
				walk(c, prefix, "└─ ")
			} else {
				walk(c, prefix, "├─ ")
			}
		}
	}
	walk(tree.root, "", "")
	width := 0
	for _, l := range lines {
		width = max(width, len([]rune(l.name)))
	}
	system := "none"
	if kids := tree.children[tree.root.SpanContext().SpanID()]; len(kids) > 0 {
		system = cmp.Or(attr(kids[0], "messaging.system").Emit(), system)
	}
	fmt.Fprintf(w, "\ntrace of order %d (%s): %d spans, trace ID %s, messaging.system %s\n",
		n, shortCorrelation(attr(tree.root, attrOrderID).AsString()), tree.spans, tree.root.SpanContext().TraceID(), system)
	for _, l := range lines {
		fmt.Fprintf(w, "  %s%s  %s\n", l.name, strings.Repeat(" ", width-len([]rune(l.name))), l.rest)
	}
}

// attr returns the value of span s's attribute k, or an invalid value.
func attr(s sdktrace.ReadOnlySpan, k attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	return slices.ContainsFunc(s.Events(), func(e sdktrace.Event) bool { return e.Name == name })
}

// printMetrics collects the metrics once and writes them, one point a
// line, sorted: a counter's or a gauge's value, a histogram's count and
// sum.
func (t *telemetry) printMetrics(ctx context.Context, w io.Writer) error {
	var rm metricdata.ResourceMetrics
	if err := t.reader.Collect(ctx, &rm); err != nil {
		return fmt.Errorf("collect metrics: %w", err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			unit := " " + strings.Trim(m.Unit, "{}")
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				lines = appendValues(lines, m.Name, unit, d.DataPoints)
			case metricdata.Sum[float64]:
				lines = appendValues(lines, m.Name, unit, d.DataPoints)
			case metricdata.Gauge[int64]:
				lines = appendValues(lines, m.Name, unit, d.DataPoints)
			case metricdata.Gauge[float64]:
				lines = appendValues(lines, m.Name, unit, d.DataPoints)
			case metricdata.Histogram[int64]:
				lines = appendHistograms(lines, m.Name, unit, d.DataPoints)
			case metricdata.Histogram[float64]:
				lines = appendHistograms(lines, m.Name, unit, d.DataPoints)
			}
		}
	}
	slices.Sort(lines)
	fmt.Fprintf(w, "\nmetrics: %d points\n", len(lines))
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return nil
}

// appendValues appends a line for each point of a counter or a gauge:
// name{attributes} value unit.
func appendValues[N int64 | float64](lines []string, name, unit string, points []metricdata.DataPoint[N]) []string {
	for _, p := range points {
		lines = append(lines, fmt.Sprintf("%s{%s} %s%s", name, attrList(p.Attributes), number(p.Value), unit))
	}
	return lines
}

// appendHistograms appends a line for each point of a histogram:
// name{attributes} count=N sum=S unit.
func appendHistograms[N int64 | float64](lines []string, name, unit string, points []metricdata.HistogramDataPoint[N]) []string {
	for _, p := range points {
		lines = append(lines, fmt.Sprintf("%s{%s} count=%d sum=%s%s", name, attrList(p.Attributes), p.Count, number(p.Sum), unit))
	}
	return lines
}

// number formats a point's value: an integer in full, a float to 4
// significant digits.
func number[N int64 | float64](v N) string {
	if f, ok := any(v).(float64); ok {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	return fmt.Sprint(v)
}

// attrList returns set as k=v,k=v, sorted by key.
func attrList(set attribute.Set) string {
	var attrs []string
	for _, kv := range set.ToSlice() {
		attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
	}
	return strings.Join(attrs, ",")
}
