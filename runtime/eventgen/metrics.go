package eventgen

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/eventgen/eventgen/runtime/internal/tables"
)

// Metric timing that is not worth an option.
const (
	// statsCacheTTL is how long the gauges of an Outbox or a Consumer
	// reuse the last Stats: collections more frequent than this run no
	// statement.
	statsCacheTTL = 5 * time.Second
	// statsTimeout bounds the Stats statement of a collection.
	statsTimeout = 2 * time.Second
	// maxEventAttrs bounds the attribute sets kept per Outbox or
	// Consumer. Event names come from messages, which any producer on a
	// topic may send; past this many, an event is counted as "_OTHER".
	maxEventAttrs = 256
)

// attrStatus is the row status of a gauge's point, or the status of a
// blocked key: failed, or keyWaiting.
const attrStatus = attribute.Key("eventgen.status")

// keyWaiting is the status of blocked keys whose next event has not
// failed: it is being handled, retried, or not received yet.
const keyWaiting = "waiting"

// meterOf returns the meter of an Outbox or a Consumer: mp's, or the
// global MeterProvider's, read now. It returns nil, metrics off, for the
// no-op MeterProvider of package metric/noop.
func meterOf(mp metric.MeterProvider) metric.Meter {
	if _, ok := mp.(metricnoop.MeterProvider); ok {
		return nil
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(instrumentationName,
		metric.WithInstrumentationVersion(moduleVersion()), metric.WithSchemaURL(semconv.SchemaURL))
}

// meterState says whether an Outbox's or a Consumer's metrics measure.
type meterState struct {
	// unsetGlobal is the global MeterProvider when metrics came from it
	// while no SDK was installed, nil otherwise.
	unsetGlobal metric.MeterProvider
}

// noSDK reports that the metrics come from OpenTelemetry's default global
// provider and that no SDK has been installed since: measurements would go
// nowhere. The default provider hands measurements to an SDK installed
// later, so this is checked on every measurement: once one is, the
// instruments made before measure.
func (s *meterState) noSDK() bool {
	return s.unsetGlobal != nil && otel.GetMeterProvider() == s.unsetGlobal
}

// unsetGlobal returns the global MeterProvider if mp is nil (use the
// global) and the global is still OpenTelemetry's default, which
// delegates to nothing until an SDK is installed; nil otherwise. Its type
// is internal to OpenTelemetry, so it is known by its package: should that
// change, metrics are measured as for any provider.
func unsetGlobal(mp metric.MeterProvider) metric.MeterProvider {
	if mp != nil {
		return nil
	}
	g := otel.GetMeterProvider()
	if t := reflect.TypeOf(g); t.Kind() == reflect.Pointer && t.Elem().PkgPath() == otelGlobalPackage {
		return g
	}
	return nil
}

// otelGlobalPackage is the package of OpenTelemetry's default global
// providers.
const otelGlobalPackage = "go.opentelemetry.io/otel/internal/global"

// systemOf returns the messaging.system attribute of a publisher or
// subscriber that says it with a MessagingSystem method, or an invalid
// one.
func systemOf(broker any) attribute.KeyValue {
	if s, ok := broker.(interface{ MessagingSystem() string }); ok {
		if name := s.MessagingSystem(); name != "" {
			return semconv.MessagingSystemKey.String(name)
		}
	}
	return attribute.KeyValue{}
}

// eventAttrs is the attribute set of one event on one topic, as
// measurement options built once.
type eventAttrs struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

// eventKey keys the attribute sets of events.
type eventKey struct{ topic, name string }

// attrCache builds the attribute set of each event once: base (the
// system, the group) with messaging.destination.name and
// eventgen.event.name.
type attrCache struct {
	base []attribute.KeyValue
	sets sync.Map // eventKey -> *eventAttrs
	n    atomic.Int64
}

func (c *attrCache) of(topic, name string) *eventAttrs {
	k := eventKey{topic, name}
	if a, ok := c.sets.Load(k); ok {
		return a.(*eventAttrs)
	}
	if c.n.Load() >= maxEventAttrs {
		k.name = "_OTHER"
		if a, ok := c.sets.Load(k); ok {
			return a.(*eventAttrs)
		}
	}
	opt := metric.WithAttributeSet(attribute.NewSet(c.with(k.topic, k.name)...))
	a, loaded := c.sets.LoadOrStore(k, &eventAttrs{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}})
	if !loaded {
		c.n.Add(1)
	}
	return a.(*eventAttrs)
}

// with returns base with the topic and the event name, and extra.
func (c *attrCache) with(topic, name string, extra ...attribute.KeyValue) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, len(c.base)+2+len(extra))
	kv = append(kv, c.base...)
	kv = append(kv, semconv.MessagingDestinationName(topic), attrEventName.String(name))
	return append(kv, extra...)
}

// failedSet returns the attributes of a failed attempt: the event's, with
// error.type. It is built on every failure, which is rare.
func (c *attrCache) failedSet(topic, name string, err error) metric.MeasurementOption {
	if c.n.Load() >= maxEventAttrs {
		if _, ok := c.sets.Load(eventKey{topic, name}); !ok {
			name = "_OTHER"
		}
	}
	return metric.WithAttributeSet(attribute.NewSet(c.with(topic, name, errorType(err))...))
}

// errorType is the error.type of a failed publish or handler run:
// "timeout" for one that ran out of time, "_OTHER" otherwise (the
// conventions' value when there is no better one of low cardinality).
func errorType(err error) attribute.KeyValue {
	if errors.Is(err, context.DeadlineExceeded) {
		return semconv.ErrorTypeKey.String("timeout")
	}
	return semconv.ErrorTypeOther
}

// seconds returns d in seconds, 0 for a negative d (clocks that disagree).
func seconds(d time.Duration) float64 {
	return max(d, 0).Seconds()
}

// backlog is what the gauges show of a Stats: the rows of each of the
// gauges' statuses, in their order, the lag, and the keys of each of the
// key statuses.
type backlog struct {
	rows []int64
	lag  time.Duration
	keys []int64
}

// gauges observe, on collection, what Stats reads: the rows by status
// (<prefix>.messages), the lag (<prefix>.lag) and, for an inbox, the
// blocked keys by status (<prefix>.blocked_keys). They run the statement
// at most once every ttl and reuse the last result in between.
// Observable callbacks run only when a reader collects, so an Outbox or
// Consumer that nobody collects from runs no statement at all.
//
// They hold no reference to their Outbox or Consumer, so that the meter
// provider, which keeps the callback, does not keep it alive: it
// unregisters the callback when closed, or when garbage collected.
type gauges struct {
	read   func(context.Context) (backlog, error)
	rows   metric.Int64ObservableGauge
	lag    metric.Float64ObservableGauge
	sets   []metric.ObserveOption // of rows, by status
	lagSet metric.ObserveOption
	keys   metric.Int64ObservableGauge
	keySet []metric.ObserveOption // of keys, by status; none for an outbox
	log    *slog.Logger
	ttl    time.Duration
	reg    *registration

	mu  sync.Mutex
	at  time.Time // of the last read; zero before the first
	val backlog
	ok  bool
}

// newGauges makes and registers the gauges of owner, an Outbox or a
// Consumer: what names their rows, statuses and keyStatuses name the
// points of rows and of blocked keys (none: no gauge of keys), and read
// reads its Stats.
func newGauges[T any](in *instruments, owner *T, prefix, what string, base []attribute.KeyValue, statuses, keyStatuses []string,
	read func(context.Context) (backlog, error), log *slog.Logger) *gauges {
	g := &gauges{
		read: read,
		rows: in.intGauge(prefix+".messages", "{message}",
			what+" by status ("+strings.Join(statuses, ", ")+")."),
		lag: in.floatGauge(prefix+".lag", "s",
			"How long the message due the longest has waited to be claimed: 0 when none is due."),
		lagSet: metric.WithAttributeSet(attribute.NewSet(base...)),
		log:    log,
		ttl:    statsCacheTTL,
	}
	withStatus := func(st string) metric.ObserveOption {
		kv := append(append([]attribute.KeyValue(nil), base...), attrStatus.String(st))
		return metric.WithAttributeSet(attribute.NewSet(kv...))
	}
	for _, st := range statuses {
		g.sets = append(g.sets, withStatus(st))
	}
	observed := []metric.Observable{g.rows, g.lag}
	if len(keyStatuses) > 0 {
		g.keys = in.intGauge(prefix+".blocked_keys", "{key}",
			"Keys whose events wait for the event before them, by the status of that event ("+strings.Join(keyStatuses, ", ")+").")
		for _, st := range keyStatuses {
			g.keySet = append(g.keySet, withStatus(st))
		}
		observed = append(observed, g.keys)
	}
	reg, err := in.meter.RegisterCallback(g.callback, observed...)
	if err != nil {
		in.errs = append(in.errs, err)
		return g
	}
	g.reg = &registration{reg: reg}
	runtime.AddCleanup(owner, func(r *registration) { _ = r.unregister() }, g.reg)
	return g
}

// callback is the metric.Callback of the gauges.
func (g *gauges) callback(ctx context.Context, o metric.Observer) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.at.IsZero() || time.Since(g.at) >= g.ttl {
		rctx, cancel := context.WithTimeout(ctx, statsTimeout)
		v, err := g.read(rctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			// The reader gave up on the collection (a provider
			// shutting down): nothing to report, and the next
			// collection reads again.
			return nil
		}
		g.at, g.val, g.ok = time.Now(), v, err == nil
		if err != nil {
			// Kept for ttl too: a database in trouble gets no more
			// statements from collections.
			g.log.Warn("eventgen: metrics: read stats for the gauges", slog.Any("error", err))
		}
	}
	if g.ok {
		for i, n := range g.val.rows {
			o.ObserveInt64(g.rows, n, g.sets[i])
		}
		o.ObserveFloat64(g.lag, seconds(g.val.lag), g.lagSet)
		for i, n := range g.val.keys {
			o.ObserveInt64(g.keys, n, g.keySet[i])
		}
	}
	return nil
}

// close unregisters the gauges; a nil *gauges has none.
func (g *gauges) close() error {
	if g == nil {
		return nil
	}
	return g.reg.unregister()
}

// registration is the gauges' callback registration, unregistered once.
type registration struct {
	once sync.Once
	reg  metric.Registration
}

// unregister removes the callback; later calls do nothing.
func (r *registration) unregister() error {
	if r == nil {
		return nil
	}
	var err error
	r.once.Do(func() { err = r.reg.Unregister() })
	return err
}

// instruments collects the errors of creating instruments: the API
// returns a usable instrument with each, so they are logged, not fatal.
type instruments struct {
	meter metric.Meter
	errs  []error
}

func (in *instruments) counter(name, unit, desc string) metric.Int64Counter {
	c, err := in.meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	return c
}

func (in *instruments) histogram(name, unit, desc string, bounds ...float64) metric.Float64Histogram {
	opts := []metric.Float64HistogramOption{metric.WithUnit(unit), metric.WithDescription(desc)}
	if len(bounds) > 0 {
		opts = append(opts, metric.WithExplicitBucketBoundaries(bounds...))
	}
	h, err := in.meter.Float64Histogram(name, opts...)
	in.errs = append(in.errs, err)
	return h
}

func (in *instruments) intGauge(name, unit, desc string) metric.Int64ObservableGauge {
	g, err := in.meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	return g
}

func (in *instruments) floatGauge(name, unit, desc string) metric.Float64ObservableGauge {
	g, err := in.meter.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.errs = append(in.errs, err)
	return g
}

// logErrors logs what went wrong creating instruments, if anything.
func (in *instruments) logErrors(log *slog.Logger) {
	if err := errors.Join(in.errs...); err != nil {
		log.Warn("eventgen: metrics: create instruments", slog.Any("error", err))
	}
}

// latencyBounds are the bucket boundaries, in seconds, of the latencies
// from an event's write to its publish or its handling: from milliseconds
// to the retry delays of an hour.
var latencyBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// outboxMetrics is what an Outbox measures. A nil *outboxMetrics measures
// nothing.
type outboxMetrics struct {
	meterState
	attrs attrCache
	// base is the set of the claim sizes.
	base []metric.RecordOption

	sent      metric.Int64Counter
	retried   metric.Int64Counter
	failed    metric.Int64Counter
	delivery  metric.Float64Histogram
	claimSize metric.Float64Histogram

	gauges *gauges
}

// newOutboxMetrics returns o's metrics, nil when mp is the no-op
// provider. Call it once o's store is set: the gauges read o.Stats.
func newOutboxMetrics(o *Outbox, mp metric.MeterProvider) *outboxMetrics {
	meter := meterOf(mp)
	if meter == nil {
		return nil
	}
	in := &instruments{meter: meter}
	m := &outboxMetrics{
		meterState: meterState{unsetGlobal: unsetGlobal(mp)},
		sent: in.counter("messaging.client.sent.messages", "{message}",
			"Publish attempts of the outbox relay; error.type is set on those that failed."),
		retried: in.counter("eventgen.outbox.retried.messages", "{message}",
			"Failed publishes that the relay will try again."),
		failed: in.counter("eventgen.outbox.failed.messages", "{message}",
			"Events the relay gave up on: their publishes used up MaxRetries, or they can never be published."),
		delivery: in.histogram("eventgen.outbox.delivery.duration", "s",
			"Time from an event's write to the outbox (created_at, on the database's clock) to the broker's acknowledgement.", latencyBounds...),
		claimSize: in.histogram("eventgen.outbox.claim.size", "{message}",
			"Events the relay claimed at once.", 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
	}
	if sys := systemOf(o.pub); sys.Valid() {
		m.attrs.base = []attribute.KeyValue{sys}
	}
	m.base = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(m.attrs.base...))}
	store, db := o.store, o.db
	m.gauges = newGauges(in, o, "eventgen.outbox", "Events in the outbox table", m.attrs.base,
		[]string{tables.StatusScheduled, tables.StatusPending, tables.StatusProcessing, tables.StatusFailed}, nil,
		func(ctx context.Context) (backlog, error) {
			st, err := outboxStats(ctx, store, db)
			return backlog{rows: []int64{st.Scheduled, st.Pending, st.Processing, st.Failed}, lag: st.OldestPending}, err
		}, o.opts.Logger)
	in.logErrors(o.opts.Logger)
	return m
}

// off reports that m measures nothing: metrics are off, or no SDK is
// installed.
func (m *outboxMetrics) off() bool { return m == nil || m.noSDK() }

// claimed records the size of a claimed batch.
func (m *outboxMetrics) claimed(n int) {
	if !m.off() {
		m.claimSize.Record(context.Background(), float64(n), m.base...)
	}
}

// published records a publish of row that the broker acknowledged.
func (m *outboxMetrics) published(row *tables.OutboxRow) {
	if m.off() {
		return
	}
	ctx := context.Background()
	a := m.attrs.of(row.Topic, row.Name)
	m.sent.Add(ctx, 1, a.add...)
	if m.delivery.Enabled(ctx) {
		m.delivery.Record(ctx, seconds(time.Since(time.UnixMicro(row.CreatedAt))), a.rec...)
	}
}

// sendFailed records a failed publish attempt of row.
func (m *outboxMetrics) sendFailed(row *tables.OutboxRow, err error) {
	if m.off() {
		return
	}
	ctx := context.Background()
	if m.sent.Enabled(ctx) {
		m.sent.Add(ctx, 1, m.attrs.failedSet(row.Topic, row.Name, err))
	}
}

// ended records how a failed publish of row ended: retried (pending) or
// failed.
func (m *outboxMetrics) ended(row *tables.OutboxRow, status string) {
	if m.off() {
		return
	}
	c := m.retried
	if status == tables.StatusFailed {
		c = m.failed
	}
	c.Add(context.Background(), 1, m.attrs.of(row.Topic, row.Name).add...)
}

// close unregisters the gauges.
func (m *outboxMetrics) close() error {
	if m == nil {
		return nil
	}
	return m.gauges.close()
}

// consumerMetrics is what a Consumer measures. A nil *consumerMetrics
// measures nothing.
type consumerMetrics struct {
	meterState
	attrs attrCache

	consumed metric.Int64Counter
	handled  metric.Int64Counter
	retried  metric.Int64Counter
	skipped  metric.Int64Counter
	failed   metric.Int64Counter
	process  metric.Float64Histogram
	endToEnd metric.Float64Histogram
	gauges   *gauges
}

// newConsumerMetrics returns c's metrics, nil when mp is the no-op
// provider. Call it once c's inbox is set: the gauges read c.Stats.
func newConsumerMetrics(c *Consumer, mp metric.MeterProvider) *consumerMetrics {
	meter := meterOf(mp)
	if meter == nil {
		return nil
	}
	in := &instruments{meter: meter}
	m := &consumerMetrics{
		meterState: meterState{unsetGlobal: unsetGlobal(mp)},
		consumed: in.counter("messaging.client.consumed.messages", "{message}",
			"Messages the broker delivered to the group, redeliveries included."),
		handled: in.counter("eventgen.consumer.handled.messages", "{message}",
			"Messages whose handler succeeded and whose transaction committed, on delivery or on a retry."),
		retried: in.counter("eventgen.consumer.retried.messages", "{message}",
			"Handler runs that failed and will be retried."),
		skipped: in.counter("eventgen.consumer.skipped.messages", "{message}",
			"Messages of events the group has no handler for."),
		failed: in.counter("eventgen.consumer.failed.messages", "{message}",
			"Messages that failed for good: their handler used up MaxRetries or failed permanently, or they were malformed or on the wrong topic."),
		process: in.histogram("messaging.process.duration", "s",
			"Duration of a handler run, in the inbox transaction; error.type is set on runs that failed.",
			0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
		endToEnd: in.histogram("eventgen.consumer.end_to_end.duration", "s",
			"Time from an event's time (the CloudEvents time: its write to the outbox) to the commit of its handler's transaction.", latencyBounds...),
	}
	m.attrs.base = []attribute.KeyValue{semconv.MessagingConsumerGroupName(c.opts.Group)}
	if sys := systemOf(c.sub); sys.Valid() {
		m.attrs.base = append(m.attrs.base, sys)
	}
	inbox, db := c.inbox, c.db
	m.gauges = newGauges(in, c, "eventgen.inbox", "The group's messages in the inbox table", m.attrs.base,
		[]string{tables.StatusHeld, tables.StatusPending, tables.StatusProcessing, tables.StatusFailed},
		[]string{tables.StatusFailed, keyWaiting},
		func(ctx context.Context) (backlog, error) {
			st, err := consumerStats(ctx, inbox, db)
			return backlog{rows: []int64{st.Held, st.Pending, st.Processing, st.Failed}, lag: st.OldestPending,
				keys: []int64{st.FailedKeys, st.BlockedKeys - st.FailedKeys}}, err
		}, c.log)
	in.logErrors(c.log)
	return m
}

// off reports that m measures nothing: metrics are off, or no SDK is
// installed.
func (m *consumerMetrics) off() bool { return m == nil || m.noSDK() }

// delivered counts a message the broker delivered, once its metadata is
// read.
func (m *consumerMetrics) delivered(row *tables.InboxRow) {
	if m.off() {
		return
	}
	m.consumed.Add(context.Background(), 1, m.attrs.of(row.Topic, row.Name).add...)
}

// ran records the duration of a handler run of row that began at began,
// and, for a run that failed, its error.
func (m *consumerMetrics) ran(row *tables.InboxRow, began time.Time, err error) {
	if m.off() {
		return
	}
	ctx := context.Background()
	d := time.Since(began).Seconds()
	if err == nil {
		m.process.Record(ctx, d, m.attrs.of(row.Topic, row.Name).rec...)
		return
	}
	if m.process.Enabled(ctx) {
		m.process.Record(ctx, d, m.attrs.failedSet(row.Topic, row.Name, err))
	}
}

// outcome records how a message's delivery or retry run ended, once it
// is stored: a row status.
func (m *consumerMetrics) outcome(row *tables.InboxRow, status string) {
	if m.off() {
		return
	}
	ctx := context.Background()
	var c metric.Int64Counter
	switch status {
	case tables.StatusSucceeded:
		c = m.handled
		if row.EventTime != 0 && m.endToEnd.Enabled(ctx) {
			m.endToEnd.Record(ctx, seconds(time.Since(time.UnixMicro(row.EventTime))), m.attrs.of(row.Topic, row.Name).rec...)
		}
	case tables.StatusPending:
		c = m.retried
	case tables.StatusSkipped:
		c = m.skipped
	case tables.StatusFailed:
		c = m.failed
	default:
		return
	}
	c.Add(ctx, 1, m.attrs.of(row.Topic, row.Name).add...)
}

// close unregisters the gauges.
func (m *consumerMetrics) close() error {
	if m == nil {
		return nil
	}
	return m.gauges.close()
}
