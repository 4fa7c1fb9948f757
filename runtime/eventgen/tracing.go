package eventgen

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// instrumentationName names the tracer of the Outbox and the Consumer: this
// package's import path, as OpenTelemetry asks of instrumentation.
const instrumentationName = "github.com/eventgen/eventgen/runtime/eventgen"

// modulePath is the module whose version the tracer reports.
const modulePath = "github.com/eventgen/eventgen"

// eventgen's own span attributes, beside the messaging semantic
// conventions'.
const (
	attrEventName    = attribute.Key("eventgen.event.name")
	attrEventVersion = attribute.Key("eventgen.event.version")
	attrEventKey     = attribute.Key("eventgen.event.key")
	// attrAttempt is the attempt a span is: the publish attempt of an
	// outbox row, or the handler run of an inbox row, from 1.
	attrAttempt = attribute.Key("eventgen.attempt")
	// attrAttempts, on a "failed after N attempts" event, is N.
	attrAttempts = attribute.Key("eventgen.attempts")
	// attrReason says why a message was skipped, rejected or malformed.
	attrReason = attribute.Key("eventgen.reason")
	// attrRetryIn, on a "retry scheduled" event, is the wait before the
	// next attempt.
	attrRetryIn = attribute.Key("eventgen.retry_in")
)

// tracing is what an Outbox or a Consumer traces with: its tracer, its
// propagator, and the broker's messaging.system.
//
// A nil *tracing is tracing turned off altogether: no span is started and
// no trace context is read or written.
type tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// system is the messaging.system attribute; its key is empty when
	// the broker does not say.
	system attribute.KeyValue
	// start holds the span kind, built once rather than on every span.
	start []trace.SpanStartOption
	// kinds holds the spanKinds built so far, by operation and topic.
	kinds  sync.Map
	nkinds atomic.Int64
}

// newTracing returns the tracing of an Outbox (kind Producer) or a
// Consumer (kind Consumer). tp and p default to OpenTelemetry's globals,
// read now. broker is the publisher or subscriber, which may say its
// messaging.system with a MessagingSystem method, as those of package
// transport do.
//
// It returns nil, tracing off, for the no-op TracerProvider of package
// trace/noop with a propagator that carries no fields: such options ask
// for no spans and no trace context, and then eventgen runs no tracing
// code at all. (The global providers cannot be told apart from an SDK's
// until they are used, so they never turn tracing off.)
func newTracing(tp trace.TracerProvider, p propagation.TextMapPropagator, broker any, kind trace.SpanKind) *tracing {
	if _, ok := tp.(noop.TracerProvider); ok && p != nil && len(p.Fields()) == 0 {
		return nil
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if p == nil {
		p = otel.GetTextMapPropagator()
	}
	t := &tracing{
		tracer: tp.Tracer(instrumentationName,
			trace.WithInstrumentationVersion(moduleVersion()), trace.WithSchemaURL(semconv.SchemaURL)),
		propagator: p,
		start:      []trace.SpanStartOption{trace.WithSpanKind(kind)},
	}
	if s, ok := broker.(interface{ MessagingSystem() string }); ok {
		if name := s.MessagingSystem(); name != "" {
			t.system = semconv.MessagingSystemKey.String(name)
		}
	}
	return t
}

// moduleVersion returns the version of this module in the running binary,
// or "" when it has none (a development build).
func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := info.Main.Version
	if info.Main.Path != modulePath {
		v = ""
		for _, d := range info.Deps {
			if d.Path == modulePath {
				v = d.Version
				break
			}
		}
	}
	if v == "(devel)" {
		return ""
	}
	return v
}

// headers returns the trace context of ctx, as the propagator writes it,
// for an outbox row's headers, or nil when ctx has no valid span context
// and no baggage: then nothing is stored and nothing is allocated. (No
// propagator writes anything for such a context; inject relies on that
// too.)
func (t *tracing) headers(ctx context.Context) map[string]string {
	if t == nil || !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return nil
	}
	h := make(headerCarrier, 3)
	t.propagator.Inject(ctx, h)
	if len(h) == 0 {
		return nil
	}
	return map[string]string(h)
}

// startSend starts the PRODUCER span of one publish attempt of row,
// parented to the trace context stored with it in headers (a root span if
// there is none).
func (t *tracing) startSend(headers map[string]string, row *tables.OutboxRow, attempt int) (context.Context, trace.Span) {
	return t.startSpan(context.Background(), headers, spanOf{op: "send", topic: row.Topic, messageID: row.MessageID,
		name: row.Name, version: row.Version, key: row.Key, attempt: attempt})
}

// inject replaces the trace context in a message's metadata md with that
// of ctx, the send span's, so that consumers continue the trace from the
// span that sent the message. Baggage extracted with the trace context is
// written back unchanged.
func (t *tracing) inject(ctx context.Context, md map[string]string) {
	if t == nil {
		return
	}
	delete(md, wire.HeaderTraceParent)
	delete(md, wire.HeaderTraceState)
	if trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0 {
		t.propagator.Inject(ctx, headerCarrier(md))
	}
}

// extract returns ctx with the trace context and baggage in headers, if
// any: without headers there is nothing to read.
func (t *tracing) extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return t.propagator.Extract(ctx, headerCarrier(headers))
}

// startProcess starts the CONSUMER span of one handler run of row in
// group, parented to the trace context in headers: the message's, or that
// stored with the inbox row for a retry.
func (t *tracing) startProcess(ctx context.Context, headers map[string]string, row *tables.InboxRow, group string, attempt int) (context.Context, trace.Span) {
	return t.startSpan(ctx, headers, spanOf{op: "process", topic: row.Topic, messageID: row.MessageID,
		name: row.Name, version: row.Version, key: row.Key, group: group, attempt: attempt})
}

// spanOf is what a span is about.
type spanOf struct {
	// op is the operation: send or process.
	op                          string
	topic, messageID, name, key string
	version, attempt            int
	group                       string // of a process span
}

// startSpan starts the span "<op> <topic>" in ctx, parented to the trace
// context in headers, if any. Its attributes are built only if it records.
func (t *tracing) startSpan(ctx context.Context, headers map[string]string, s spanOf) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	ctx = t.extract(ctx, headers)
	kind := t.kindOf(s)
	ctx, span := t.tracer.Start(ctx, kind.name, t.start...)
	if !span.IsRecording() {
		return ctx, span
	}
	attrs := make([]attribute.KeyValue, 0, len(kind.attrs)+5)
	attrs = append(append(attrs, kind.attrs...),
		semconv.MessagingMessageID(s.messageID), attrEventName.String(s.name), attrEventVersion.Int(s.version))
	if s.key != "" {
		attrs = append(attrs, attrEventKey.String(s.key))
	}
	span.SetAttributes(append(attrs, attrAttempt.Int(s.attempt))...)
	return ctx, span
}

// spanKind is what the spans of one operation on one topic share: their
// name and the attributes that do not change from message to message.
type spanKind struct {
	name  string
	attrs []attribute.KeyValue
}

// maxSpanKinds bounds the spanKinds a tracing keeps: a consumer's topics
// are its subscriptions', but past this many they are built every time.
const maxSpanKinds = 256

// kindOf returns the spanKind of s, built once per operation and topic.
// An Outbox's or a Consumer's group never changes, so it is not part of
// the key.
func (t *tracing) kindOf(s spanOf) *spanKind {
	key := [2]string{s.op, s.topic}
	if k, ok := t.kinds.Load(key); ok {
		return k.(*spanKind)
	}
	k := &spanKind{name: s.op + " " + s.topic, attrs: make([]attribute.KeyValue, 0, 5)}
	if t.system.Valid() {
		k.attrs = append(k.attrs, t.system)
	}
	k.attrs = append(k.attrs,
		semconv.MessagingDestinationName(s.topic),
		semconv.MessagingOperationTypeKey.String(s.op),
		semconv.MessagingOperationName(s.op))
	if s.group != "" {
		k.attrs = append(k.attrs, semconv.MessagingConsumerGroupName(s.group))
	}
	if t.nkinds.Load() < maxSpanKinds {
		if _, loaded := t.kinds.LoadOrStore(key, k); !loaded {
			t.nkinds.Add(1)
		}
	}
	return k
}

// noSpan is the span of a nil *tracing: it records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// spanError records err on span and sets its status to Error. final marks
// the last attempt: the row is failed after attempts attempts.
func spanError(span trace.Span, err error, final bool, attempts int) {
	if !span.IsRecording() {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, firstLine(err.Error()))
	if final {
		spanFailed(span, attempts)
	}
}

// spanFailed adds the event that ends a row for good.
func spanFailed(span trace.Span, attempts int) {
	noun := "attempts"
	if attempts == 1 {
		noun = "attempt"
	}
	span.AddEvent(fmt.Sprintf("failed after %d %s", attempts, noun), trace.WithAttributes(attrAttempts.Int(attempts)))
}

// spanOutcome records on span, a consumer span, how its message's run or
// delivery ended, when that is not a plain success: o is the row's
// outcome, herr the handler's error (nil if it did not run), and event
// names a message that no handler ran for ("skipped", "rejected",
// "malformed"), or is empty.
func spanOutcome(span trace.Span, o tables.Outcome, herr error, event string) {
	if !span.IsRecording() {
		return
	}
	switch {
	case herr != nil:
		span.RecordError(herr)
		span.SetStatus(codes.Error, firstLine(herr.Error()))
	case o.Status == tables.StatusFailed:
		span.SetStatus(codes.Error, firstLine(o.LastError))
	}
	if event != "" {
		// Skipped, rejected or malformed: the reason says it all.
		span.AddEvent(event, trace.WithAttributes(attrReason.String(firstLine(o.LastError))))
		return
	}
	switch o.Status {
	case tables.StatusFailed:
		spanFailed(span, o.Attempts)
	case tables.StatusPending:
		span.AddEvent("retry scheduled", trace.WithAttributes(attrRetryIn.String(o.Delay.Round(time.Millisecond).String())))
	}
}

// headerCarrier carries a trace context in message metadata or stored
// headers: traceparent and tracestate under the CloudEvents
// distributed-tracing extension's names (wire.HeaderTraceParent,
// wire.HeaderTraceState), which each broker binding then names its own
// way, and any other field a propagator writes (W3C baggage) under its own
// name. Fields that could not travel as a header on every broker, or whose
// names are reserved, are not written: tracing never makes an event
// undeliverable.
type headerCarrier map[string]string

// carrierName maps a propagator's field name to the header's.
func carrierName(key string) string {
	switch key {
	case "traceparent":
		return wire.HeaderTraceParent
	case "tracestate":
		return wire.HeaderTraceState
	}
	return key
}

func (c headerCarrier) Get(key string) string { return c[carrierName(key)] }

func (c headerCarrier) Set(key, value string) {
	name := carrierName(key)
	if name == key && (wire.CheckName(name) != nil || wire.IsAttributeName(name) || strings.HasPrefix(name, "_")) {
		return // not one of the extension's attributes, and not free
	}
	if wire.CheckValue(value) != nil {
		return
	}
	c[name] = value
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		switch k {
		case wire.HeaderTraceParent:
			k = "traceparent"
		case wire.HeaderTraceState:
			k = "tracestate"
		}
		keys = append(keys, k)
	}
	return keys
}

// withoutTraceContext removes the trace context from h, headers for a
// handler's Metadata: it is in the handler's context instead. It returns
// nil for headers left empty.
func withoutTraceContext(h map[string]string) map[string]string {
	delete(h, wire.HeaderTraceParent)
	delete(h, wire.HeaderTraceState)
	if len(h) == 0 {
		return nil
	}
	return h
}

// statementSpan returns how the runtime's prepared statements on a database
// of dialect d are traced, or nil when tracing is off. They do not pass
// through Bun's query hooks, so bunotel does not see them; instead each
// statement whose context carries a recording span gets a CLIENT span of
// its own under it: the outbox insert under the span that publishes, the
// inbox insert and the handler's mark under the process span. Background
// bookkeeping (claims, marks, cleanup) runs in contexts without a span and
// starts no trace of its own.
func (t *tracing) statementSpan(d sqlstore.Dialect) sqlstore.StatementSpan {
	if t == nil {
		return nil
	}
	system := dbSystem(d.Name)
	client := trace.WithSpanKind(trace.SpanKindClient)
	var spans sync.Map // query -> statementSpanOf; the prepared statements are a fixed few
	return func(ctx context.Context, query string) (context.Context, func(error)) {
		if !trace.SpanFromContext(ctx).IsRecording() {
			return ctx, endStatement
		}
		v, ok := spans.Load(query)
		if !ok {
			op, table := statementTarget(query)
			name := op
			if table != "" {
				name += " " + table
			}
			v, _ = spans.LoadOrStore(query, statementSpanOf{name, []trace.SpanStartOption{client, trace.WithAttributes(
				system, semconv.DBOperationName(op), semconv.DBCollectionName(table), semconv.DBQueryText(query))}})
		}
		of := v.(statementSpanOf)
		ctx, span := t.tracer.Start(ctx, of.name, of.opts...)
		return ctx, func(err error) {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, firstLine(err.Error()))
			}
			span.End()
		}
	}
}

func endStatement(error) {}

// statementSpanOf is the name and the start options of the spans of one
// statement, built once.
type statementSpanOf struct {
	name string
	opts []trace.SpanStartOption
}

// dbSystem is the db.system.name of a dialect. MariaDB is reported as
// mysql: the runtime speaks to both alike and does not tell them apart.
func dbSystem(dialect string) attribute.KeyValue {
	switch dialect {
	case "postgres":
		return semconv.DBSystemNamePostgreSQL
	case "sqlite":
		return semconv.DBSystemNameSQLite
	}
	return semconv.DBSystemNameMySQL
}

// statementTarget returns the operation (the first keyword) of one of the
// runtime's statements and the table it works on: after INTO, UPDATE or the
// first FROM. Either is "" when the statement does not say.
func statementTarget(query string) (op, table string) {
	words := strings.Fields(query)
	if len(words) == 0 {
		return "", ""
	}
	op = strings.ToUpper(words[0])
	after := "FROM"
	switch op {
	case "INSERT":
		after = "INTO"
	case "UPDATE":
		after = "UPDATE"
	}
	for i, w := range words[:len(words)-1] {
		if strings.EqualFold(w, after) {
			return op, strings.Trim(words[i+1], "`\"(),")
		}
	}
	return op, ""
}
