package bench

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// tracingMode is one way the tracing phase runs the outbox.
type tracingMode struct {
	name, label string
	// configure sets the outbox's tracing and metrics options; nil
	// keeps the defaults, OpenTelemetry's global providers, which
	// eventbench never sets: no SDK.
	configure func(*eventgen.OutboxOptions)
	// request is the span events are published in, nil for none: for
	// the SDK a recording span, so that every row stores a trace context.
	request trace.Span
	// publishTarget and drainTarget are the least ratios to tracing off
	// that the issue asks for; 0 for tracing off itself.
	publishTarget, drainTarget float64
}

// in returns ctx inside m's request span, if it has one.
func (m tracingMode) in(ctx context.Context) context.Context {
	if m.request == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, m.request)
}

// tracingModes returns the modes the tracing phase compares, and a
// function that shuts the SDK's providers down.
func tracingModes(ctx context.Context) ([]tracingMode, func()) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(discardSpans{}, sdktrace.WithBlocking()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(discardMetrics{}, sdkmetric.WithInterval(metricsInterval))))
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	_, request := tp.Tracer("eventbench").Start(ctx, "request")
	modes := []tracingMode{
		{"off", "tracing and metrics off (no-op providers, no propagation)", func(o *eventgen.OutboxOptions) {
			o.TracerProvider, o.Propagator = noop.NewTracerProvider(), propagation.NewCompositeTextMapPropagator()
			o.MeterProvider = metricnoop.NewMeterProvider()
		}, nil, 0, 0},
		{"noop", "global no-op providers (no SDK installed)", nil, nil, 0.98, 0.98},
		{"sdk", "SDK recording every span and every metric, W3C propagation, inside a request span", func(o *eventgen.OutboxOptions) {
			o.TracerProvider, o.Propagator, o.MeterProvider = tp, prop, mp
		}, request, 0.85, 0.80},
	}
	return modes, func() {
		request.End()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
		_ = mp.Shutdown(sctx)
	}
}

// metricsInterval is how often the SDK's reader collects: more often than
// a service would, so that the outbox's gauges run their statement (at
// most every 5 seconds) during every measurement.
const metricsInterval = time.Second

// discardMetrics is a metric exporter that drops what it is given: the
// SDK still aggregates every measurement and collects every interval.
type discardMetrics struct{}

func (discardMetrics) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (discardMetrics) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (discardMetrics) Export(context.Context, *metricdata.ResourceMetrics) error { return nil }
func (discardMetrics) ForceFlush(context.Context) error                          { return nil }
func (discardMetrics) Shutdown(context.Context) error                            { return nil }

// discardSpans is a span exporter that drops what it is given: the SDK
// still records, samples, batches and hands over every span.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

// tracingPhase measures what OpenTelemetry tracing and metrics cost the
// outbox: the generated PublishOrderCancelled (one client) and the relay's
// drain of a backlog, with both off, through the global no-op providers,
// and with SDKs that record every span and every measurement (a metric
// reader installed), each against both off.
//
// What the no-op providers cost is about 1% of a relayed row, well below
// what other load on a machine does to one measurement, so both
// comparisons take turns many times: the publish variants run interleaved
// in three times cfg.Rounds rounds, and the drains in as many rounds, each
// draining cfg.RelayRows/rounds rows per mode in a rotating order, whose
// median rate is the mode's figure.
func (e *env) tracingPhase(ctx context.Context, p *Phase) error {
	modes, shutdown := tracingModes(ctx)
	defer shutdown()
	if err := e.tracingPublish(ctx, p, modes); err != nil {
		return err
	}
	if err := e.tracingDrain(ctx, p, modes); err != nil {
		return err
	}
	p.note("the SDK exports to an exporter that drops the spans, through its batch span processor, blocking when the queue is full so that no span is dropped; its metrics go to a periodic reader that collects every %s into an exporter that drops them", metricsInterval)
	return nil
}

func (e *env) tracingPublish(ctx context.Context, p *Phase, modes []tracingMode) error {
	orders, err := e.createOrders(ctx, "tracing_orders")
	if err != nil {
		return err
	}
	pubs := make([]*shopevents.Publisher, len(modes))
	tables := make([]string, len(modes))
	for i, m := range modes {
		ob, t, err := e.newOutbox(ctx, "tracing_publish_"+m.name, &publisher{inner: e.broker.Publisher(), prefix: e.topicPrefix("tracing_publish")}, optional(m.configure)...)
		if err != nil {
			return err
		}
		pubs[i], tables[i] = shopevents.NewPublisher(ob), t
	}
	rounds := 3 * e.cfg.Rounds
	res, err := interleaved(ctx, len(modes), rounds, 1, e.cfg.Warmup, e.cfg.Duration, func(v int) (slice, error) {
		if err := e.truncate(ctx, orders, tables[v]); err != nil {
			return slice{}, err
		}
		pub, m := pubs[v], modes[v]
		run := func(ctx context.Context, tx bun.Tx) error {
			o := e.events.order()
			if err := insertOrder(ctx, tx, orders, &o); err != nil {
				return err
			}
			return pub.PublishOrderCancelled(ctx, tx, o)
		}
		return slice{op: func(ctx context.Context) error { return e.db.db.RunInTx(m.in(ctx), nil, run) }}, nil
	})
	if err != nil {
		return err
	}
	figs := make([]*Figure, len(modes))
	for i, m := range modes {
		figs[i] = &Figure{Name: "tracing.publish." + m.name, Label: fmt.Sprintf("business row + PublishOrderCancelled, 1 client, median of %d rounds, %s", rounds, m.label),
			Value: median(res[i].rounds), Unit: "tx/s", P50Ms: ms(res[i].lat.quantile(0.5)), P99Ms: ms(res[i].lat.quantile(0.99))}
	}
	againstOff(p, modes, figs, func(m tracingMode) float64 { return m.publishTarget })
	for i, m := range modes {
		p.note("publish rounds of %s: %s tx/s", m.name, spread(res[i].rounds))
	}
	p.note("publish variants run interleaved in %d rounds of %s each, after a %s warm-up per slice; each figure is the median round, so that a checkpoint of the database that falls in one round does not decide the comparison", rounds, e.cfg.Duration/time.Duration(rounds), e.cfg.Warmup)
	return nil
}

// tracedBacklog is a mode's outbox for the drain measurement; prog counts
// the broker's acks of the current round.
type tracedBacklog struct {
	ob    *eventgen.Outbox
	table string
	prog  atomic.Pointer[progress]
	// rates holds each round's rows/s; cpuRates its rows per second of
	// this process's CPU time.
	rates, cpuRates []float64
}

func (e *env) tracingDrain(ctx context.Context, p *Phase, modes []tracingMode) error {
	rounds := 3 * e.cfg.Rounds
	// Each round drains long enough (a quarter of a second at 30,000
	// rows/s) that timer and scheduling noise stay well below the 2% the
	// no-op comparison must resolve: -rows spread over all rounds and
	// modes.
	n := max(e.cfg.Rows/(rounds*len(modes)), 100)
	prefix := e.topicPrefix("tracing_drain")
	if err := e.sink(prefix, shopevents.TopicOrders); err != nil {
		return err
	}
	backlogs := make([]*tracedBacklog, len(modes))
	for i, m := range modes {
		b := &tracedBacklog{}
		pub := &publisher{inner: e.broker.Publisher(), prefix: prefix, observe: func(*message.Message) { b.prog.Load().add(1) }}
		var err error
		if b.ob, b.table, err = e.newOutbox(ctx, "tracing_drain_"+m.name, pub, optional(m.configure)...); err != nil {
			return err
		}
		backlogs[i] = b
	}
	for r := range rounds {
		for k := range modes {
			v := (r + k) % len(modes)
			b, m := backlogs[v], modes[v]
			if err := e.truncate(ctx, b.table); err != nil {
				return err
			}
			if err := e.fill(m.in(ctx), b.ob, b.table, n); err != nil {
				return err
			}
			prog := newProgress(n)
			b.prog.Store(prog)
			cpu := processCPU()
			prog.restart()
			stop := runRelay(ctx, b.ob)
			err := prog.wait(ctx, e.cfg.DrainTimeout, m.name+" drain")
			if err == nil {
				err = e.waitSettled(ctx, b.table, time.Millisecond)
			}
			if err == nil {
				b.rates = append(b.rates, prog.rateSince(1, time.Since(prog.start)))
				b.cpuRates = append(b.cpuRates, float64(n)/(processCPU()-cpu).Seconds())
			}
			stop()
			if err != nil {
				return err
			}
		}
	}
	figs := make([]*Figure, len(modes))
	for i, m := range modes {
		figs[i] = &Figure{Name: "tracing.drain." + m.name, Label: fmt.Sprintf("relay drains %d rows (from 10%% published to all marked), median of %d rounds, %s", n, rounds, m.label),
			Value: median(backlogs[i].rates), Unit: "rows/s"}
	}
	againstOff(p, modes, figs, func(m tracingMode) float64 { return m.drainTarget })
	// The same drains per second of this process's CPU time (eventbench's
	// and the relay's, and SQLite's when it is the database): what
	// tracing adds to the relay's own work, which other load on the
	// machine disturbs less than the drains' duration. No target: the
	// issue's are on throughput.
	var off *Figure
	for i, m := range modes {
		f := p.add(&Figure{Name: "tracing.drain_cpu." + m.name, Label: fmt.Sprintf("the same drains, rows per CPU second of this process, median of %d rounds, %s", rounds, m.label),
			Value: median(backlogs[i].cpuRates), Unit: "rows/cpu-s"})
		if m.drainTarget == 0 {
			off = f
		} else {
			f.compare(off)
		}
	}
	for i, m := range modes {
		p.note("drain rounds of %s: %s rows/s", m.name, spread(backlogs[i].rates))
	}
	p.note("drains take turns: %d rounds, each draining a fresh backlog of %d rows per mode, the modes' order rotating; a round's rate counts from the broker's acknowledgement of the first tenth of its rows until all are marked published (polled every millisecond), leaving out the relay's start, and each figure is the median round", rounds, n)
	return nil
}

// againstOff adds figs, one per mode, to p, each but tracing off's
// compared with tracing off's and held to its target.
func againstOff(p *Phase, modes []tracingMode, figs []*Figure, target func(tracingMode) float64) {
	var off *Figure
	for i, f := range figs {
		p.add(f)
		if t := target(modes[i]); t == 0 {
			off = f
		} else {
			f.compare(off).atLeast(t)
		}
	}
}

// spread describes the rates of rounds: their least, quartiles and
// greatest, rounded.
func spread(rates []float64) string {
	xs := slices.Clone(rates)
	slices.Sort(xs)
	q := func(f float64) float64 { return xs[int(f*float64(len(xs)-1)+0.5)] }
	return fmt.Sprintf("min %.0f, quartiles %.0f / %.0f / %.0f, max %.0f", xs[0], q(0.25), q(0.5), q(0.75), xs[len(xs)-1])
}

// median returns the median of xs (not empty); it sorts xs.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// optional returns configure as the variadic argument of newOutbox.
func optional(configure func(*eventgen.OutboxOptions)) []func(*eventgen.OutboxOptions) {
	if configure == nil {
		return nil
	}
	return []func(*eventgen.OutboxOptions){configure}
}
