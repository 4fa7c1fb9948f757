package eventgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// meterReader is an SDK MeterProvider of the test's own (not the global,
// so tests run in parallel) with a manual reader.
type meterReader struct {
	mp     *sdkmetric.MeterProvider
	reader *sdkmetric.ManualReader
}

func newMeterReader(t testing.TB) *meterReader {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &meterReader{mp: mp, reader: r}
}

// point is one data point of a collection, whatever its kind.
type point struct {
	attrs attribute.Set
	value float64 // a sum's or a gauge's value; a histogram's sum
	count uint64  // a histogram's count
}

// collect collects and returns the points of the instrument name.
func (m *meterReader) collect(t testing.TB, name string) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name != name {
				continue
			}
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out = append(out, point{attrs: p.Attributes, value: float64(p.Value)})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out = append(out, point{attrs: p.Attributes, value: float64(p.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out = append(out, point{attrs: p.Attributes, value: p.Value})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out = append(out, point{attrs: p.Attributes, value: p.Sum, count: p.Count})
				}
			default:
				t.Fatalf("%s: unexpected data %T", name, md.Data)
			}
		}
	}
	return out
}

// sum adds up the values (and counts) of the points of name that have
// every attribute of want; an attribute with an empty value must be
// absent.
func (m *meterReader) sum(t testing.TB, name string, want ...attribute.KeyValue) (value float64, count uint64) {
	t.Helper()
	for _, p := range m.collect(t, name) {
		if matches(p.attrs, want) {
			value += p.value
			count += p.count
		}
	}
	return value, count
}

func matches(s attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		v, ok := s.Value(kv.Key)
		if kv.Value.Emit() == "" {
			if ok {
				return false
			}
			continue
		}
		if !ok || v.Emit() != kv.Value.Emit() {
			return false
		}
	}
	return true
}

// waitSum waits until the sum of name's matching points is want.
func (m *meterReader) waitSum(t testing.TB, name string, want float64, attrs ...attribute.KeyValue) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		got, _ := m.sum(t, name, attrs...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, attrs, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	noError   = attribute.String("error.type", "")
	orderAttr = attribute.String("eventgen.event.name", "OrderPlaced")
)

// TestMetricsCountEvents publishes N events through the outbox to a
// group and checks that the counters and histograms count each of them
// once, by event.
func TestMetricsCountEvents(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		m := newMeterReader(t)
		ob := newOutbox(t, h.db, h.ps, OutboxOptions{MeterProvider: m.mp})
		opts := fastOptions()
		opts.MeterProvider = m.mp
		c, tr := h.orders("billing", opts, func(context.Context, orderPlaced, Metadata) error { return nil })
		h.run(c)
		const n = 7
		events := make([]Event, n)
		for i := range events {
			events[i] = orderPlaced{OrderID: fmt.Sprint("o-", i)}
		}
		err := h.db.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
			return ob.Publish(ctx, tx, "shop", events)
		})
		if err != nil {
			t.Fatal(err)
		}
		run(t, ob)
		tr.wait(t, "handled", func() bool { return tr.count(tables.StatusSucceeded) == n })

		dest := attribute.String("messaging.destination.name", topicOrders)
		m.waitSum(t, "messaging.client.sent.messages", n, orderAttr, dest, noError)
		m.waitSum(t, "eventgen.consumer.handled.messages", n, orderAttr, dest,
			attribute.String("messaging.consumer.group.name", "billing"))
		if consumed, _ := m.sum(t, "messaging.client.consumed.messages", orderAttr, dest); consumed < n {
			t.Errorf("messaging.client.consumed.messages = %v, want at least the %d messages handled", consumed, n)
		}
		for _, name := range []string{"eventgen.outbox.delivery.duration", "messaging.process.duration", "eventgen.consumer.end_to_end.duration"} {
			if _, count := m.sum(t, name, orderAttr, noError); count != n {
				t.Errorf("%s has %d points, want %d", name, count, n)
			}
		}
		if claimed, _ := m.sum(t, "eventgen.outbox.claim.size"); claimed != n {
			t.Errorf("claim sizes add up to %v, want %d", claimed, n)
		}
		for _, name := range []string{"eventgen.outbox.retried.messages", "eventgen.outbox.failed.messages",
			"eventgen.consumer.retried.messages", "eventgen.consumer.failed.messages", "eventgen.consumer.skipped.messages"} {
			if got, _ := m.sum(t, name); got != 0 {
				t.Errorf("%s = %v, want 0", name, got)
			}
		}
	})
}

// TestMetricsRetriesAndFailures checks the consumer's retried and failed
// counters, and that its failed gauge agrees with the failed store.
func TestMetricsRetriesAndFailures(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		m := newMeterReader(t)
		opts := fastOptions() // MaxRetries 3
		opts.MeterProvider = m.mp
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, md Metadata) error {
			if e.OrderID == "doomed" || md.Attempt < 2 {
				return errors.New("card declined")
			}
			return nil
		})
		c.metrics.gauges.ttl = 0 // every collection reads
		h.run(c)
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "doomed"}, "m-doomed", nil),
			eventMessage(t, orderPlaced{OrderID: "ok"}, "m-ok", nil),
			eventMessage(t, orderShipped{OrderID: "x"}, "m-skip", nil))
		tr.waitOutcome(t, "m-doomed", tables.StatusFailed)
		tr.waitOutcome(t, "m-ok", tables.StatusSucceeded)

		m.waitSum(t, "eventgen.consumer.failed.messages", 1, orderAttr)
		m.waitSum(t, "eventgen.consumer.retried.messages", 3, orderAttr) // doomed twice, ok once
		m.waitSum(t, "eventgen.consumer.handled.messages", 1, orderAttr)
		if _, count := m.sum(t, "messaging.process.duration", orderAttr, attribute.String("error.type", "_OTHER")); count != 4 {
			t.Errorf("%d failed handler runs measured, want 4", count)
		}
		failed, err := c.Failed(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := m.sum(t, "eventgen.inbox.messages", attribute.String("eventgen.status", tables.StatusFailed)); got != float64(len(failed)) || got != 1 {
			t.Errorf("the failed gauge is %v; Failed lists %d messages, want 1", got, len(failed))
		}
	})
}

// TestMetricsHeldAndBlockedKeys checks the inbox gauges of held events
// and blocked keys: events of a key that wait for the event before it
// count until it arrives, and a key whose next event failed for good
// counts as blocked on a failed event until it is skipped.
func TestMetricsHeldAndBlockedKeys(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		m := newMeterReader(t)
		opts := fastOptions()
		opts.MeterProvider = m.mp
		c, tr := h.orders("billing", opts, func(_ context.Context, _ orderPlaced, md Metadata) error {
			if md.Key == "doomed" && md.Sequence == 1 {
				return permanent(errors.New("bad data"))
			}
			return nil
		})
		c.metrics.gauges.ttl = 0 // every collection reads
		h.run(c)
		held := attribute.String("eventgen.status", tables.StatusHeld)
		onFailed := attribute.String("eventgen.status", tables.StatusFailed)
		waiting := attribute.String("eventgen.status", "waiting")
		blocked := func(want ...attribute.KeyValue) float64 {
			got, _ := m.sum(t, "eventgen.inbox.blocked_keys", want...)
			return got
		}
		h.publish(topicOrders, orderedMessage(t, "k", 2), orderedMessage(t, "k", 3),
			orderedMessage(t, "doomed", 1), orderedMessage(t, "doomed", 2))
		tr.waitOutcome(t, messageID("k", 2), tables.StatusHeld)
		tr.waitOutcome(t, messageID("k", 3), tables.StatusHeld)
		tr.waitEver(t, messageID("doomed", 1), tables.StatusFailed)
		tr.waitEver(t, messageID("doomed", 2), tables.StatusHeld)
		if got, _ := m.sum(t, "eventgen.inbox.messages", held); got != 3 {
			t.Errorf("the held gauge is %v, want 3", got)
		}
		if w, f := blocked(waiting), blocked(onFailed); w != 1 || f != 1 {
			t.Errorf("blocked keys: %v waiting, %v on a failed event; want 1 and 1", w, f)
		}
		st, err := c.Stats(context.Background())
		if err != nil || st.BlockedKeys != 2 || st.FailedKeys != 1 {
			t.Errorf("Stats = %+v, %v; want 2 blocked keys, 1 of them on a failed event", st, err)
		}

		h.publish(topicOrders, orderedMessage(t, "k", 1))
		tr.waitOutcome(t, messageID("k", 3), tables.StatusSucceeded)
		if got, _ := m.sum(t, "eventgen.inbox.messages", held); got != 1 {
			t.Errorf("the held gauge is %v once k's first event arrived, want 1 (doomed's second)", got)
		}
		if w, f := blocked(waiting), blocked(onFailed); w != 0 || f != 1 {
			t.Errorf("blocked keys: %v waiting, %v on a failed event; want 0 and 1", w, f)
		}
		if _, err := c.SkipNext(context.Background(), "test-source", topicOrders, "doomed"); err != nil {
			t.Fatal(err)
		}
		tr.waitEver(t, messageID("doomed", 2), tables.StatusSucceeded)
		if all := blocked(); all != 0 {
			t.Errorf("%v blocked keys once the failed event was skipped, want 0", all)
		}
	})
}

// TestMetricsGlobalSDKInstalledLater: an Outbox whose metrics come from
// OpenTelemetry's global provider, made before any SDK is installed,
// measures nothing while none is, and measures once one is. It sets the
// global provider, so it runs in a test process of its own.
func TestMetricsGlobalSDKInstalledLater(t *testing.T) {
	if os.Getenv("EVENTGEN_TEST_GLOBAL_OTEL") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMetricsGlobalSDKInstalledLater$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "EVENTGEN_TEST_GLOBAL_OTEL=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestMetricsGlobalSDKInstalledLater") {
			t.Fatalf("the test process failed: %v\n%s", err, out)
		}
		return
	}
	db := testenv.OpenSQLite(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{})
	if !ob.metrics.off() {
		t.Fatal("with no SDK installed, the Outbox's metrics measure: is OpenTelemetry's default global provider still recognised?")
	}
	stop := run(t, ob)
	publish(t, ob, db, 0, 2)
	waitStatus(t, ob, tables.StatusPublished, 2)

	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	defer mp.Shutdown(context.Background())
	otel.SetMeterProvider(mp)
	if ob.metrics.off() {
		t.Fatal("the Outbox's metrics are off once an SDK is installed")
	}
	publish(t, ob, db, 2, 3)
	waitStatus(t, ob, tables.StatusPublished, 5)
	stop()
	m := &meterReader{mp: mp, reader: r}
	if got, _ := m.sum(t, "messaging.client.sent.messages", noError); got != 3 {
		t.Errorf("messaging.client.sent.messages = %v, want the 3 events published after the SDK was installed", got)
	}
}

// waitStatus waits until ob's table has n rows of status.
func waitStatus(t testing.TB, ob *Outbox, status string, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for statusCounts(t, ob)[status] != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows %s, want %d", statusCounts(t, ob)[status], status, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMetricsLag checks the outbox's gauges: the lag grows while no
// relay runs and is 0 once the relay drained the table.
func TestMetricsLag(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			m := newMeterReader(t)
			ob := newOutbox(t, db, newPubSub(t), OutboxOptions{MeterProvider: m.mp, PollInterval: 10 * time.Millisecond})
			ob.metrics.gauges.ttl = 0
			publish(t, ob, db, 0, 5)
			time.Sleep(20 * time.Millisecond) // SQLite's clock counts milliseconds
			pending := attribute.String("eventgen.status", tables.StatusPending)
			if got, _ := m.sum(t, "eventgen.outbox.messages", pending); got != 5 {
				t.Errorf("pending gauge = %v, want 5", got)
			}
			first, _ := m.sum(t, "eventgen.outbox.lag")
			time.Sleep(100 * time.Millisecond)
			second, _ := m.sum(t, "eventgen.outbox.lag")
			if first <= 0 || second < first+0.09 {
				t.Errorf("lag %vs, then %vs 100ms later; want it above 0 and growing", first, second)
			}

			run(t, ob)
			m.waitSum(t, "eventgen.outbox.messages", 0, pending)
			if lag, _ := m.sum(t, "eventgen.outbox.lag"); lag != 0 {
				t.Errorf("lag after the drain = %vs, want 0", lag)
			}
			m.waitSum(t, "messaging.client.sent.messages", 5, attribute.String("eventgen.event.name", "TestHappened"), noError)
		})
	}
}

// TestMetricsGaugesQueryOnlyOnCollection checks that the gauges run no
// statement until a reader collects, one per collection within the
// cache's time, and none once the Outbox is closed.
func TestMetricsGaugesQueryOnlyOnCollection(t *testing.T) {
	db := testenv.OpenSQLite(t)
	m := newMeterReader(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{MeterProvider: m.mp, NoPreparedStatements: true})
	c, err := NewConsumer(db, nil, ConsumerOptions{Group: "g", Table: testenv.TableName(t, "inbox"),
		MeterProvider: m.mp, NoPreparedStatements: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	hook := &statementCounter{}
	db.AddQueryHook(hook)
	time.Sleep(20 * time.Millisecond)
	if n := hook.count("SELECT") + hook.count("WITH"); n != 0 {
		t.Fatalf("%d statements before any collection: %q", n, hook.queries)
	}
	m.collect(t, "eventgen.outbox.messages")
	m.collect(t, "eventgen.outbox.messages")
	afterTwo := len(hook.snapshot())
	if afterTwo != 2 {
		t.Errorf("%d statements for two collections within %s, want 2 (one per table): %q", afterTwo, statsCacheTTL, hook.snapshot())
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ob.metrics.gauges.ttl, c.metrics.gauges.ttl = 0, 0 // would read again, if still registered
	if got := m.collect(t, "eventgen.outbox.messages"); len(got) != 0 {
		t.Errorf("the outbox gauge reports %v after Close", got)
	}
	if got := m.collect(t, "eventgen.inbox.messages"); len(got) != 0 {
		t.Errorf("the inbox gauge reports %v after Close", got)
	}
	if n := len(hook.snapshot()); n != afterTwo {
		t.Errorf("%d statements after Close, want none", n-afterTwo)
	}
}

// snapshot returns the statements counted so far.
func (h *statementCounter) snapshot() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.queries...)
}

// BenchmarkMetricsPerMessage measures what metrics add to a relayed and
// handled message: the outbox's sent counter and delivery histogram, and
// the consumer's handler duration, handled counter and end-to-end
// histogram. Modes: the global provider with no SDK installed, and an SDK
// provider with a reader.
func BenchmarkMetricsPerMessage(b *testing.B) {
	db := testenv.OpenSQLite(b)
	for _, mode := range []string{"noop", "sdk"} {
		b.Run(mode, func(b *testing.B) {
			var oo OutboxOptions
			co := ConsumerOptions{Group: "g", Logger: testLogger()}
			if mode == "sdk" {
				oo.MeterProvider = newMeterReader(b).mp
				co.MeterProvider = oo.MeterProvider
			}
			ob := newOutbox(b, db, newPubSub(b), oo)
			c, err := NewConsumer(db, nil, co)
			if err != nil {
				b.Fatal(err)
			}
			out := &tables.OutboxRow{Topic: topicOrders, Name: "OrderPlaced", CreatedAt: time.Now().UnixMicro()}
			in := &tables.InboxRow{Topic: topicOrders, Name: "OrderPlaced", EventTime: out.CreatedAt}
			b.ReportAllocs()
			for b.Loop() {
				ob.metrics.published(out)
				c.metrics.ran(in, time.Now(), nil)
				c.metrics.outcome(in, tables.StatusSucceeded)
			}
		})
	}
}

// TestMetricsErrorType checks error.type: "timeout" for a publish or a run
// that ran out of time, the relay's abandoned publishes included.
func TestMetricsErrorType(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New("broker said no"), "_OTHER"},
		{fmt.Errorf("publish: %w", context.DeadlineExceeded), "timeout"},
		{timedOut{errors.New("the publisher did not return within 10s")}, "timeout"},
	} {
		if got := errorType(c.err).Value.AsString(); got != c.want {
			t.Errorf("errorType(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// discardObserver is a metric.Observer that keeps nothing.
type discardObserver struct{ metric.Observer }

func (discardObserver) ObserveInt64(metric.Int64Observable, int64, ...metric.ObserveOption)       {}
func (discardObserver) ObserveFloat64(metric.Float64Observable, float64, ...metric.ObserveOption) {}

// TestMetricsGaugesIgnoreACanceledCollection: a collection the reader
// gave up on (a provider shutting down) logs nothing and keeps nothing, so
// the next collection reads again.
func TestMetricsGaugesIgnoreACanceledCollection(t *testing.T) {
	var reads int
	var logs strings.Builder
	g := &gauges{
		read: func(ctx context.Context) (backlog, error) {
			reads++
			if err := ctx.Err(); err != nil {
				return backlog{}, fmt.Errorf("outbox: stats: %w", err)
			}
			return backlog{rows: []int64{3}}, nil
		},
		sets: []metric.ObserveOption{nil},
		log:  slog.New(slog.NewTextHandler(&logs, nil)),
		ttl:  time.Hour,
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.callback(canceled, discardObserver{}); err != nil {
		t.Fatal(err)
	}
	if reads != 1 || logs.Len() != 0 || g.ok || !g.at.IsZero() {
		t.Fatalf("after a canceled collection: %d reads, ok %v, at %v, logged %q; want 1 read, nothing kept or logged", reads, g.ok, g.at, logs.String())
	}
	for range 2 {
		if err := g.callback(context.Background(), discardObserver{}); err != nil {
			t.Fatal(err)
		}
	}
	if reads != 2 || !g.ok || g.val.rows[0] != 3 {
		t.Errorf("after two live collections: %d reads, ok %v, %v; want one more read, its result kept", reads, g.ok, g.val)
	}
}
