package eventgen

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// tracingModes are what BenchmarkTracing compares: tracing turned off
// (the no-op provider and a propagator that carries nothing), the global
// no-op providers (what a service without an SDK
// gets), and an SDK that records every span and exports it in batches (to
// an exporter that drops them), with W3C propagation. In the sdk mode the
// events are published inside a recording span, so every row stores a
// trace context and every publish has a parent.
var tracingModes = []string{"off", "noop", "sdk"}

// processCPU returns the CPU time this process has used, user and system,
// in nanoseconds: on PostgreSQL and MySQL the database's own work is not
// in it, on SQLite it is.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// tracedOutbox returns an Outbox on db in the given mode, and the context
// to publish in.
func tracedOutbox(b *testing.B, db *bun.DB, mode string) (*Outbox, context.Context) {
	ctx := context.Background()
	var opts OutboxOptions
	switch mode {
	case "off":
		opts.TracerProvider, opts.Propagator = noop.NewTracerProvider(), propagation.NewCompositeTextMapPropagator()
	case "sdk":
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(tracetest.NewNoopExporter(), sdktrace.WithBlocking()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		opts.TracerProvider, opts.Propagator = tp, testPropagator
		ctx, _ = tp.Tracer("bench").Start(ctx, "request")
	}
	ob := newOutbox(b, db, newPubSub(b), opts)
	if (ob.tracing == nil) != (mode == "off") {
		b.Fatalf("%s: tracing is off: %v", mode, ob.tracing == nil)
	}
	return ob, ctx
}

// BenchmarkTracing measures what tracing costs Publish (one event per
// transaction) and a relay's drain of a backlog, in each of tracingModes.
// Each mode has a database (SQLite) or table of its own. Besides the
// time, each reports the process's CPU time per operation (cpu-ns/op),
// which other load on the machine disturbs less: a relay's drain varies
// in time from run to run by more than tracing costs it. Compare the
// modes over several runs.
func BenchmarkTracing(b *testing.B) {
	for _, d := range testenv.Databases(b) {
		b.Run("publish/"+d.Name, func(b *testing.B) {
			for _, mode := range tracingModes {
				b.Run(mode, func(b *testing.B) {
					db := d.Open(b) // a fresh database file (SQLite) or pool for each
					ob, ctx := tracedOutbox(b, db, mode)
					events := []Event{testEvent{N: 1, Body: strings.Repeat("x", 200)}}
					b.ReportAllocs()
					cpu := processCPU()
					b.ResetTimer()
					publishTxs(ctx, b, ob, db, events)
					b.StopTimer()
					b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
				})
			}
		})
		b.Run("drain/"+d.Name, func(b *testing.B) {
			for _, mode := range tracingModes {
				b.Run(mode, func(b *testing.B) {
					db := d.Open(b)
					ob, ctx := tracedOutbox(b, db, mode)
					fill(ctx, b, ob, db, b.N)
					var (
						mu   sync.Mutex
						n    int
						done = make(chan struct{})
					)
					ob.hooks = &outboxHooks{published: func(ids []int64) {
						mu.Lock()
						defer mu.Unlock()
						n += len(ids)
						if n == b.N {
							close(done)
						}
					}}
					b.ReportAllocs()
					cpu := processCPU()
					b.ResetTimer()
					stop := run(b, ob)
					<-done
					b.StopTimer()
					b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
					stop()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
				})
			}
		})
	}
}

// BenchmarkTracingRelayMessage measures the instrumentation of one relayed
// message alone, in each of tracingModes: the send span from the row's
// stored headers, the trace context written on the message, and the
// span's end. Set against a drain's cost per row, it bounds what tracing
// can take from a drain, without the drain's noise.
func BenchmarkTracingRelayMessage(b *testing.B) {
	for _, mode := range tracingModes {
		b.Run(mode, func(b *testing.B) {
			db := testenv.OpenSQLite(b)
			ob, ctx := tracedOutbox(b, db, mode)
			headers := ob.tracing.headers(ctx)
			row := &tables.OutboxRow{MessageID: "01931f7e-4a3b-7c4d-8e5f-6a7b8c9d0e1f", Name: "TestHappened", Version: 2, Topic: testTopic, Key: "k1"}
			md := map[string]string{wire.HeaderID: row.MessageID, wire.HeaderType: row.Name}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				sctx, span := ob.tracing.startSend(headers, row, 1)
				ob.tracing.inject(sctx, md)
				span.End()
			}
		})
	}
}

// BenchmarkTracingPublishHeaders measures what tracing adds to a Publish
// call alone, in each of tracingModes: the trace context taken from its
// context and encoded with the row's headers.
func BenchmarkTracingPublishHeaders(b *testing.B) {
	for _, mode := range tracingModes {
		b.Run(mode, func(b *testing.B) {
			ob, ctx := tracedOutbox(b, testenv.OpenSQLite(b), mode)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := encodeHeaders(nil, ob.tracing.headers(ctx)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
