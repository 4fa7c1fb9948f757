package eventgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/uptrace/bun"
	"go.uber.org/goleak"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
	"github.com/eventgen/eventgen/runtime/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Test events, written as the generator would write them.

const (
	topicOrders    = "test.orders"
	topicShipments = "test.shipments"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
	// Status is an enum: "" (absent), "new" or "paid".
	Status string `json:"status,omitempty"`
}

func (orderPlaced) EventName() string { return "OrderPlaced" }
func (orderPlaced) EventVersion() int { return 1 }
func (orderPlaced) Topic() string     { return topicOrders }
func (e orderPlaced) Key() string     { return e.OrderID }
func (e orderPlaced) Validate() error {
	if e.OrderID == "" {
		return errors.New("order_id is required")
	}
	switch e.Status {
	case "", "new", "paid":
		return nil
	}
	return fmt.Errorf("status: unknown value %q", e.Status)
}

type orderShipped struct {
	OrderID string `json:"order_id"`
}

func (orderShipped) EventName() string { return "OrderShipped" }
func (orderShipped) EventVersion() int { return 1 }
func (orderShipped) Topic() string     { return topicShipments }
func (orderShipped) Validate() error   { return nil }

// testTimeout is a safety net for waits on signals, not an assertion.
const testTimeout = 90 * time.Second

// harness is one database, an inbox table, a table for handler effects and a
// persistent GoChannel (so a consumer started later still gets every message).
type harness struct {
	t       *testing.T
	db      *bun.DB
	dbName  string
	table   string
	effects string
	ps      *gochannel.GoChannel
}

func forEachDatabase(t *testing.T, f func(t *testing.T, h *harness)) {
	for _, tdb := range testenv.Databases(t) {
		t.Run(tdb.Name, func(t *testing.T) {
			db := tdb.Open(t)
			h := &harness{t: t, db: db, dbName: tdb.Name,
				table: testenv.TableName(t, "inbox"), effects: testenv.TableName(t, "effects")}
			testenv.DropTables(t, db, h.table, h.effects)
			if _, err := db.ExecContext(context.Background(), "CREATE TABLE "+h.effects+
				" (grp VARCHAR(64) NOT NULL, message_id VARCHAR(255) NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			h.ps = gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
			t.Cleanup(func() { h.ps.Close() })
			f(t, h)
		})
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("EVENTGEN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fastOptions retries at once, so tests wait on work, not on the clock.
func fastOptions() ConsumerOptions {
	return ConsumerOptions{
		LocalRetries:       1,
		LocalRetryInterval: time.Millisecond,
		MaxRetries:         3,
		RetryInterval:      time.Millisecond,
		RetryMinAge:        time.Microsecond,
		PollInterval:       5 * time.Millisecond,
		Concurrency:        4,
	}
}

// consumer returns a migrated consumer for group whose outcomes go to tr.
func (h *harness) consumer(group string, opts ConsumerOptions, tr *tracker) *Consumer {
	h.t.Helper()
	opts.Group = group
	opts.Table = h.table
	opts.Logger = testLogger()
	c, err := NewConsumer(h.db, h.ps, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	c.hooks = &consumerHooks{settled: tr.settled, retryPass: tr.retryPass, cleaned: tr.cleaned}
	if err := c.Migrate(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return c
}

// orders returns a migrated consumer for group with f as its OrderPlaced
// handler, and the tracker of its outcomes.
func (h *harness) orders(group string, opts ConsumerOptions, f func(context.Context, orderPlaced, Metadata) error) (*Consumer, *tracker) {
	h.t.Helper()
	tr := newTracker()
	c := h.consumer(group, opts, tr)
	if err := Handle(c, f); err != nil {
		h.t.Fatal(err)
	}
	return c, tr
}

// run starts c and returns once it has subscribed. stop cancels it and
// returns Run's error; it runs at cleanup too.
func (h *harness) run(c *Consumer) (stop func() error) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := c.Subscribed()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	h.t.Cleanup(func() {
		if err := stop(); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-subscribed:
	case err := <-done:
		h.t.Fatalf("Run returned before subscribing: %v", err)
	}
	return stop
}

func (h *harness) publish(topic string, msgs ...*message.Message) {
	h.t.Helper()
	if err := h.ps.Publish(topic, msgs...); err != nil {
		h.t.Fatal(err)
	}
}

// eventMessage encodes e as the outbox relay does, with message id id.
func eventMessage(t testing.TB, e Event, id string, headers map[string]string) *message.Message {
	t.Helper()
	p, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	env := wire.Envelope{ID: id, Name: e.EventName(), Version: e.EventVersion(), Source: "test-source",
		Time: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), Payload: p, Headers: headers}
	if k, ok := e.(Keyed); ok {
		env.Key = k.Key()
	}
	return wire.Encode(env)
}

// effect is the handlers' transactional write.
func (h *harness) effect(ctx context.Context, group, id string) error {
	_, err := Tx(ctx).ExecContext(ctx, "INSERT INTO "+h.effects+" (grp, message_id) VALUES (?, ?)", group, id)
	return err
}

// effectCounts returns the group's effect rows and distinct message ids.
func (h *harness) effectCounts(group string) (rows, distinct int) {
	h.t.Helper()
	err := h.db.QueryRowContext(context.Background(), "SELECT COUNT(*), COUNT(DISTINCT message_id) FROM "+h.effects+" WHERE grp = ?", group).
		Scan(&rows, &distinct)
	if err != nil {
		h.t.Fatal(err)
	}
	return rows, distinct
}

func (h *harness) row(c *Consumer, id string) tables.InboxRow {
	h.t.Helper()
	r, ok, err := c.inbox.Get(context.Background(), h.db, id)
	if err != nil {
		h.t.Fatal(err)
	}
	if !ok {
		h.t.Fatalf("no inbox row for %s", id)
	}
	return r
}

func (h *harness) statusCounts(group string) map[string]int {
	h.t.Helper()
	rows, err := h.db.QueryContext(context.Background(), "SELECT status, COUNT(*) FROM "+h.table+" WHERE consumer_group = ? GROUP BY status", group)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			h.t.Fatal(err)
		}
		out[s] = n
	}
	return out
}

// tracker records the consumer's outcomes and wakes waiters on each.
type tracker struct {
	mu       sync.Mutex
	outcomes map[string][]string
	passes   int
	cleans   []int
	changed  chan struct{}
}

func newTracker() *tracker {
	return &tracker{outcomes: map[string][]string{}, changed: make(chan struct{}, 1)}
}

func (tr *tracker) notify() {
	select {
	case tr.changed <- struct{}{}:
	default:
	}
}

func (tr *tracker) settled(id, outcome string) {
	tr.mu.Lock()
	tr.outcomes[id] = append(tr.outcomes[id], outcome)
	tr.mu.Unlock()
	tr.notify()
}

func (tr *tracker) retryPass(int) {
	tr.mu.Lock()
	tr.passes++
	tr.mu.Unlock()
	tr.notify()
}

func (tr *tracker) cleaned(n int) {
	tr.mu.Lock()
	tr.cleans = append(tr.cleans, n)
	tr.mu.Unlock()
	tr.notify()
}

// last returns id's latest outcome.
func (tr *tracker) last(id string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	o := tr.outcomes[id]
	if len(o) == 0 {
		return ""
	}
	return o[len(o)-1]
}

func (tr *tracker) all(id string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.outcomes[id]...)
}

// count returns how many messages' latest outcome is outcome.
func (tr *tracker) count(outcome string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, o := range tr.outcomes {
		if o[len(o)-1] == outcome {
			n++
		}
	}
	return n
}

// ever returns how many messages have had outcome at some point. A
// message's outcomes may be reported out of order: its delivery reports
// "pending" (or "held") after that row committed, by which time the
// retrier (or the event before it) may have run it and reported
// "succeeded".
func (tr *tracker) ever(outcome string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, o := range tr.outcomes {
		if slices.Contains(o, outcome) {
			n++
		}
	}
	return n
}

// waitEver waits until id has had outcome.
func (tr *tracker) waitEver(t testing.TB, id, outcome string) {
	t.Helper()
	tr.wait(t, id+" "+outcome, func() bool { return slices.Contains(tr.all(id), outcome) })
}

// wait blocks until cond holds, re-checking on every outcome.
func (tr *tracker) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tr.changed:
		case <-deadline.C:
			// Format under the lock, fail without it: Fatalf runs the
			// cleanups, which wait for a consumer whose hooks take it.
			tr.mu.Lock()
			msg := fmt.Sprintf("gave up waiting for %s; outcomes so far: %v", what, tr.outcomes)
			tr.mu.Unlock()
			t.Fatal(msg)
		}
	}
}

func (tr *tracker) waitOutcome(t testing.TB, id, outcome string) {
	t.Helper()
	tr.wait(t, id+" "+outcome, func() bool { return tr.last(id) == outcome })
}

func TestConsumerEveryEventOncePerGroup(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		const n = 200
		groups := []string{"billing", "shipping"}
		trackers := map[string]*tracker{}
		for _, g := range groups {
			tr := newTracker()
			trackers[g] = tr
			c := h.consumer(g, fastOptions(), tr)
			if err := Handle(c, func(ctx context.Context, e orderPlaced, m Metadata) error {
				return h.effect(ctx, m.Group, m.ID)
			}); err != nil {
				t.Fatal(err)
			}
			h.run(c)
		}
		msgs := make([]*message.Message, n)
		for i := range msgs {
			msgs[i] = eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprintf("m-%d", i), nil)
		}
		h.publish(topicOrders, msgs...)
		for _, g := range groups {
			tr := trackers[g]
			tr.wait(t, g+" handled every event", func() bool { return tr.count(tables.StatusSucceeded) == n })
			if rows, distinct := h.effectCounts(g); rows != n || distinct != n {
				t.Errorf("group %s: %d effects for %d messages, want %d once each", g, rows, distinct, n)
			}
			if got := h.statusCounts(g); got[tables.StatusSucceeded] != n || len(got) != 1 {
				t.Errorf("group %s: inbox statuses %v, want %d succeeded", g, got, n)
			}
		}
	})
}

// Two replicas of one group on one inbox. GoChannel has no consumer groups,
// so both receive every message: each must still be applied once, and the
// retries of failed first runs are shared between the two retriers.
func TestConsumerReplicasOfOneGroupApplyEachMessageOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		const n = 300
		handler := func(ctx context.Context, e orderPlaced, m Metadata) error {
			if err := h.effect(ctx, m.Group, m.ID); err != nil {
				return err
			}
			if m.Attempt == 1 && strings.HasSuffix(m.ID, "7") {
				return errors.New("first run fails")
			}
			return nil
		}
		tr := newTracker() // shared: a message's outcomes from both replicas
		var stops []func() error
		for range 2 {
			c := h.consumer("billing", fastOptions(), tr)
			if err := Handle(c, handler); err != nil {
				t.Fatal(err)
			}
			stops = append(stops, h.run(c))
		}
		msgs := make([]*message.Message, n)
		for i := range msgs {
			msgs[i] = eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprint(i), nil)
		}
		h.publish(topicOrders, msgs...)
		successes := func(id string) int {
			k := 0
			for _, o := range tr.all(id) {
				if o == tables.StatusSucceeded {
					k++
				}
			}
			return k
		}
		tr.wait(t, "every message handled", func() bool {
			for i := range n {
				if successes(fmt.Sprint(i)) == 0 {
					return false
				}
			}
			return true
		})
		for _, stop := range stops { // and wait for the other copies in flight
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if k := successes(fmt.Sprint(i)); k != 1 {
				t.Errorf("message %d: %d successful runs, want 1 (outcomes %v)", i, k, tr.all(fmt.Sprint(i)))
			}
		}
		if rows, distinct := h.effectCounts("billing"); rows != n || distinct != n {
			t.Errorf("%d effects (%d distinct) for %d messages", rows, distinct, n)
		}
	})
}

func TestConsumerDuplicateDeliveryHandledOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var calls atomic.Int32
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			calls.Add(1)
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		// Five copies of one message, delivered concurrently, then one more
		// after the first has been handled.
		var copies []*message.Message
		for range 5 {
			copies = append(copies, eventMessage(t, orderPlaced{OrderID: "1"}, "dup", nil))
		}
		h.publish(topicOrders, copies...)
		tr.wait(t, "five deliveries settled", func() bool { return len(tr.all("dup")) == 5 })
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, "dup", nil))
		tr.wait(t, "sixth delivery settled", func() bool { return len(tr.all("dup")) == 6 })

		outcomes := map[string]int{}
		for _, o := range tr.all("dup") {
			outcomes[o]++
		}
		if outcomes[tables.StatusSucceeded] != 1 || outcomes[outcomeDuplicate] != 5 {
			t.Errorf("outcomes %v, want 1 succeeded and 5 duplicates", outcomes)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("handler ran %d times, want 1", n)
		}
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("%d effect rows, want 1", rows)
		}
	})
}

func TestConsumerRetriesUntilSuccessAndRollsBackFailedRuns(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		opts := fastOptions()
		opts.MaxRetries = 5
		var mu sync.Mutex
		var seen []Metadata
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			mu.Lock()
			seen = append(seen, m)
			mu.Unlock()
			if err := h.effect(ctx, m.Group, m.ID); err != nil {
				return err
			}
			if m.Attempt < 3 {
				return fmt.Errorf("transient failure %d", m.Attempt) // the effect above must roll back
			}
			return nil
		})
		h.run(c)
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "o-1"}, "flaky", map[string]string{"trace": "abc"}))
		tr.waitOutcome(t, "flaky", tables.StatusSucceeded)

		if got := tr.all("flaky"); strings.Join(got, ",") != "pending,pending,succeeded" {
			t.Errorf("outcomes %v, want pending,pending,succeeded", got)
		}
		want := Metadata{ID: "flaky", Name: "OrderPlaced", Version: 1, Topic: topicOrders, Key: "o-1", Source: "test-source",
			Time: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), Group: "billing", Headers: map[string]string{"trace": "abc"}}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 3 {
			t.Fatalf("handler ran %d times, want 3", len(seen))
		}
		for i, m := range seen {
			want.Attempt = i + 1
			if !sameMetadata(m, want) {
				t.Errorf("run %d: metadata %+v, want %+v", i+1, m, want)
			}
		}
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("%d effect rows, want 1 (failed runs must roll back)", rows)
		}
		r := h.row(c, "flaky")
		if r.Attempts != 3 || !strings.Contains(r.LastError.String, "transient failure 2") {
			t.Errorf("row attempts %d, last error %q; want 3 and the second failure", r.Attempts, r.LastError.String)
		}
	})
}

func sameMetadata(a, b Metadata) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func TestConsumerPoisonMessagesDoNotBlock(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		const good = 1000
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			if e.OrderID == "poison" {
				return errors.New("always fails")
			}
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)

		noType := message.NewMessage("no-type", []byte(`{"order_id":"x"}`))
		badTime := eventMessage(t, orderPlaced{OrderID: "x"}, "bad-time", nil)
		badTime.Metadata.Set(wire.HeaderTime, "yesterday")
		badJSON := eventMessage(t, orderPlaced{OrderID: "x"}, "bad-json", nil)
		badJSON.Payload = []byte(`{"order_id": 42`)
		wrongType := eventMessage(t, orderPlaced{OrderID: "x"}, "wrong-type", nil)
		wrongType.Payload = []byte(`{"order_id": 42}`)
		badEnum := eventMessage(t, orderPlaced{OrderID: "x", Status: "refunded"}, "bad-enum", nil)
		unknown := eventMessage(t, orderPlaced{OrderID: "x"}, "unknown", nil)
		unknown.Metadata.Set(wire.HeaderType, "OrderCancelled")
		longID := eventMessage(t, orderPlaced{OrderID: "x"}, strings.Repeat("i", 300), nil)
		huge := eventMessage(t, orderPlaced{OrderID: "x"}, "huge", nil)
		huge.Payload = []byte(`{"order_id":"` + strings.Repeat("x", DefaultMaxMessageBytes) + `"}`)
		poison := []*message.Message{
			eventMessage(t, orderPlaced{OrderID: "poison"}, "always-fails", nil),
			noType, badTime, badJSON, wrongType, badEnum, unknown, longID, huge,
		}
		msgs := append([]*message.Message{}, poison...)
		for i := range good {
			msgs = append(msgs, eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprintf("good-%d", i), nil))
		}
		h.publish(topicOrders, msgs...)

		want := map[string]struct{ status, reason string }{
			"always-fails":           {tables.StatusFailed, "gave up after 3 attempts: always fails"},
			"no-type":                {tables.StatusFailed, "header ce_type is missing"},
			"bad-time":               {tables.StatusFailed, `"yesterday" is not an RFC 3339 time`},
			"bad-json":               {tables.StatusFailed, "decode OrderPlaced payload"},
			"wrong-type":             {tables.StatusFailed, "cannot unmarshal number"},
			"bad-enum":               {tables.StatusFailed, `status: unknown value "refunded"`},
			"unknown":                {tables.StatusSkipped, `no handler for event "OrderCancelled"`},
			strings.Repeat("i", 255): {tables.StatusFailed, "message id is over 255 bytes"},
			"huge":                   {tables.StatusFailed, "over MaxMessageBytes (4194304); not stored"},
		}
		tr.wait(t, "every message settled for good", func() bool {
			if tr.count(tables.StatusSucceeded) != good {
				return false
			}
			for id, w := range want {
				if tr.last(id) != w.status {
					return false
				}
			}
			return true
		})
		for id, w := range want {
			r := h.row(c, id)
			if r.Status != w.status || !strings.Contains(r.LastError.String, w.reason) {
				t.Errorf("%.20s: status %s, error %q; want %s with %q", id, r.Status, r.LastError.String, w.status, w.reason)
			}
		}
		if rows, distinct := h.effectCounts("billing"); rows != good || distinct != good {
			t.Errorf("%d effects (%d distinct), want %d", rows, distinct, good)
		}
		failed, err := c.Failed(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(failed) != len(want)-1 {
			t.Errorf("Failed listed %d messages, want %d", len(failed), len(want)-1)
		}
	})
}

func TestConsumerReexecuteFailed(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var fixed atomic.Bool
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			if !fixed.Load() {
				return errors.New("bug")
			}
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		h.publish(topicOrders,
			eventMessage(t, orderPlaced{OrderID: "1"}, "a", nil),
			eventMessage(t, orderPlaced{OrderID: "2"}, "b", nil),
			eventMessage(t, orderPlaced{OrderID: "3"}, "c", nil))
		for _, id := range []string{"a", "b", "c"} {
			tr.waitOutcome(t, id, tables.StatusFailed)
		}
		failed, err := c.Failed(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(failed) != 3 {
			t.Fatalf("Failed listed %d messages, want 3", len(failed))
		}
		for _, f := range failed {
			if f.ID != "a" {
				continue
			}
			if f.Attempt != 3 || !strings.Contains(f.Error, "bug") || f.FailedAt.IsZero() ||
				string(f.Payload) != `{"order_id":"1"}` || f.Key != "1" || f.Group != "billing" {
				t.Errorf("Failed: %+v", f)
			}
		}

		fixed.Store(true)
		n, err := c.Reexecute(context.Background(), "a", "not-there")
		if err != nil || n != 1 {
			t.Fatalf("Reexecute = %d, %v; want 1", n, err)
		}
		tr.waitOutcome(t, "a", tables.StatusSucceeded)
		n, err = c.ReexecuteFailed(context.Background())
		if err != nil || n != 2 {
			t.Fatalf("ReexecuteFailed = %d, %v; want 2", n, err)
		}
		tr.waitOutcome(t, "b", tables.StatusSucceeded)
		tr.waitOutcome(t, "c", tables.StatusSucceeded)
		if rows, distinct := h.effectCounts("billing"); rows != 3 || distinct != 3 {
			t.Errorf("%d effects (%d distinct), want 3", rows, distinct)
		}
		if r := h.row(c, "a"); r.Attempts != 1 {
			t.Errorf("re-executed row has %d attempts, want 1 (a fresh budget)", r.Attempts)
		}
	})
}

func TestConsumerRecoversPanics(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			if e.OrderID == "always" || m.Attempt == 1 {
				panic("boom " + e.OrderID)
			}
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		h.publish(topicOrders,
			eventMessage(t, orderPlaced{OrderID: "once"}, "once", nil),
			eventMessage(t, orderPlaced{OrderID: "always"}, "always", nil))
		tr.waitOutcome(t, "once", tables.StatusSucceeded)
		tr.waitOutcome(t, "always", tables.StatusFailed)
		if r := h.row(c, "once"); !strings.Contains(r.LastError.String, "handler panicked: boom once") {
			t.Errorf("recovered row's last error %q, want the first panic", r.LastError.String)
		}
		r := h.row(c, "always")
		if !strings.Contains(r.LastError.String, "handler panicked: boom always") || !strings.Contains(r.LastError.String, "consumer_test.go") {
			t.Errorf("failed row's last error %q, want the panic with its stack", r.LastError.String)
		}
	})
}

func TestConsumerGracefulShutdown(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var release atomic.Bool
		started := make(chan string, 10)
		handler := func(ctx context.Context, e orderPlaced, m Metadata) error {
			if err := h.effect(ctx, m.Group, m.ID); err != nil {
				return err
			}
			if !release.Load() {
				started <- m.ID
				<-ctx.Done() // a slow handler, caught by the shutdown
				return ctx.Err()
			}
			return nil
		}
		c, tr := h.orders("billing", fastOptions(), handler)
		stop := h.run(c)
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, "slow", nil))
		<-started
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got := tr.all("slow"); len(got) != 1 || got[0] != outcomeAbandoned {
			t.Errorf("outcomes %v, want the delivery abandoned", got)
		}
		if _, ok, _ := c.inbox.Get(context.Background(), h.db, "slow"); ok {
			t.Error("abandoned message has an inbox row, want its transaction rolled back")
		}
		if rows, _ := h.effectCounts("billing"); rows != 0 {
			t.Errorf("%d effects after shutdown, want 0", rows)
		}

		// A new consumer (a restart) gets the unacknowledged message again.
		release.Store(true)
		c2, tr2 := h.orders("billing", fastOptions(), handler)
		h.run(c2)
		tr2.waitOutcome(t, "slow", tables.StatusSucceeded)
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("%d effects after restart, want 1", rows)
		}
	})
}

func TestConsumerShutdownReleasesRetriedRow(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var release atomic.Bool
		started := make(chan struct{}, 10)
		handler := func(ctx context.Context, e orderPlaced, m Metadata) error {
			switch {
			case release.Load():
				return h.effect(ctx, m.Group, m.ID)
			case m.Attempt == 1:
				return errors.New("first run fails")
			}
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		c, tr := h.orders("billing", fastOptions(), handler)
		stop := h.run(c)
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, "r", nil))
		<-started
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := tr.last("r"); got != outcomeReleased {
			t.Errorf("interrupted retry ended %q, want %q", got, outcomeReleased)
		}
		if r := h.row(c, "r"); r.Status != tables.StatusPending || r.Attempts != 1 {
			t.Errorf("row %s with %d attempts after shutdown, want pending with 1 (the interrupted run uncounted)", r.Status, r.Attempts)
		}
		release.Store(true)
		c2, tr2 := h.orders("billing", fastOptions(), handler)
		h.run(c2)
		tr2.waitOutcome(t, "r", tables.StatusSucceeded)
		if r := h.row(c2, "r"); r.Attempts != 2 {
			t.Errorf("row has %d attempts, want 2", r.Attempts)
		}
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("%d effects, want 1", rows)
		}
	})
}

// A replica that crashed left one row pending (recorded after a failure,
// never retried) and one processing with its lease run out: another
// consumer's retrier finishes both.
func TestConsumerTakesOverCrashedReplicaRows(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var attempts sync.Map
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			attempts.Store(m.ID, m.Attempt)
			return h.effect(ctx, m.Group, m.ID)
		})
		ctx := context.Background()
		for _, id := range []string{"leased", "pending"} {
			msg := eventMessage(t, orderPlaced{OrderID: id}, id, nil)
			env, err := wire.Decode(msg, math.MaxInt)
			if err != nil {
				t.Fatal(err)
			}
			row, _, _ := storable(env, topicOrders, msg, DefaultMaxMessageBytes)
			if _, err := c.inbox.Insert(ctx, h.db, row, tables.Outcome{Status: tables.StatusPending, Attempts: 1, LastError: "crash"}); err != nil {
				t.Fatal(err)
			}
			if id == "leased" { // taken by the replica that then crashes, lease already run out
				if rows, err := c.inbox.Claim(ctx, h.db, leased.Claim{Owner: "crashed-replica", Limit: 1}); err != nil || len(rows) != 1 {
					t.Fatalf("claim as the crashed replica: %v, %v", rows, err)
				}
			}
		}
		h.run(c)
		tr.waitOutcome(t, "pending", tables.StatusSucceeded)
		tr.waitOutcome(t, "leased", tables.StatusSucceeded)
		for id, want := range map[string]int{"pending": 2, "leased": 3} {
			if got, _ := attempts.Load(id); got != want {
				t.Errorf("%s ran as attempt %v, want %d", id, got, want)
			}
		}
		if rows, distinct := h.effectCounts("billing"); rows != 2 || distinct != 2 {
			t.Errorf("%d effects, want 2", rows)
		}
	})
}

func TestConsumerLenientDecodingAndSkips(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		got := make(chan Metadata, 10)
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			got <- m
			return nil
		})
		if err := Handle(c, func(ctx context.Context, e orderShipped, m Metadata) error { return nil }); err != nil {
			t.Fatal(err)
		}
		h.run(c)
		newer := eventMessage(t, orderPlaced{OrderID: "7"}, "v2", nil)
		newer.Payload = []byte(`{"order_id":"7","added_in_v2":{"x":1}}`)
		newer.Metadata.Set(wire.HeaderEventVersion, "2")
		h.publish(topicOrders, newer)
		tr.waitOutcome(t, "v2", tables.StatusSucceeded)
		if m := <-got; m.Version != 2 {
			t.Errorf("Metadata.Version = %d, want 2", m.Version)
		}
		h.publish(topicShipments, eventMessage(t, orderShipped{OrderID: "7"}, "shipped", nil))
		tr.waitOutcome(t, "shipped", tables.StatusSucceeded)
	})
}

// TestConsumerMaxMessageBytes checks that a message over MaxMessageBytes is
// recorded as failed without its payload and runs no handler, while one
// within it is handled, and that the option is bounded.
func TestConsumerMaxMessageBytes(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		opts := fastOptions()
		opts.MaxMessageBytes = 100
		var runs atomic.Int32
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			runs.Add(1)
			return nil
		})
		h.run(c)
		big := eventMessage(t, orderPlaced{OrderID: strings.Repeat("x", 101)}, "big", nil)
		small := eventMessage(t, orderPlaced{OrderID: "1"}, "small", nil)
		h.publish(topicOrders, big, small)
		tr.waitOutcome(t, "big", tables.StatusFailed)
		tr.waitOutcome(t, "small", tables.StatusSucceeded)
		if n := runs.Load(); n != 1 {
			t.Errorf("the handler ran %d times, want 1 (not for the oversized message)", n)
		}
		row := h.row(c, "big")
		if len(row.Payload) != 0 || !strings.Contains(row.LastError.String, "over MaxMessageBytes (100); not stored") {
			t.Errorf("oversized row: %d payload bytes, error %q; want none and the reason", len(row.Payload), row.LastError.String)
		}
	})
	for _, bad := range []int{-1, 64<<20 + 1} {
		if _, err := NewConsumer(testenv.OpenSQLite(t), nil, ConsumerOptions{Group: "g", MaxMessageBytes: bad}); err == nil || !strings.Contains(err.Error(), "MaxMessageBytes") {
			t.Errorf("MaxMessageBytes %d: %v, want an error naming it", bad, err)
		}
	}
}

// TestConsumerRunsHandlersOnlyForTheirTopic sends an event on a topic the
// group reads but the spec does not bind it to, with the id of a real
// message that comes later on the right topic: the forged one runs no
// handler (not even when re-executed), and the real one is not taken for
// its duplicate.
func TestConsumerRunsHandlersOnlyForTheirTopic(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var runs atomic.Int32
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			runs.Add(1)
			return h.effect(ctx, m.Group, m.ID+"@"+m.Topic)
		})
		if err := Handle(c, func(ctx context.Context, e orderShipped, m Metadata) error { return nil }); err != nil {
			t.Fatal(err)
		}
		h.run(c)
		h.publish(topicShipments, eventMessage(t, orderPlaced{OrderID: "1"}, "m1", nil))
		tr.waitOutcome(t, "m1", tables.StatusFailed)
		if n := runs.Load(); n != 0 {
			t.Fatalf("the handler ran %d times for a message on the wrong topic", n)
		}
		failed, err := c.Failed(context.Background(), 10)
		if err != nil || len(failed) != 1 || !strings.Contains(failed[0].Error, `belongs on topic "test.orders" but arrived on "test.shipments"`) {
			t.Fatalf("Failed = %+v, %v; want the rejected message with its reason", failed, err)
		}

		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, "m1", nil))
		tr.waitOutcome(t, "m1", tables.StatusSucceeded)
		if n := runs.Load(); n != 1 {
			t.Fatalf("the handler ran %d times for the real message, want 1", n)
		}

		if n, err := c.Reexecute(context.Background(), "m1"); err != nil || n != 1 {
			t.Fatalf("Reexecute = %d, %v; want the rejected message", n, err)
		}
		tr.wait(t, "the re-executed message failed again", func() bool {
			return slices.Index(tr.all("m1"), tables.StatusSucceeded) < len(tr.all("m1"))-1 && tr.last("m1") == tables.StatusFailed
		})
		if n := runs.Load(); n != 1 {
			t.Errorf("the handler ran %d times in all, want 1: a re-executed rejected message ran it", n)
		}
		if rows, distinct := h.effectCounts("billing"); rows != 1 || distinct != 1 {
			t.Errorf("effects: %d rows, %d distinct; want 1", rows, distinct)
		}
	})
}

// TestConsumerHandlesStructuredMode sends an event as a CloudEvents
// producer in structured mode does: the attributes and the data in one JSON
// body. The handler runs once with the event's data and attributes.
func TestConsumerHandlesStructuredMode(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		got := make(chan Metadata, 2)
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			if e.OrderID != "7" || e.Status != "paid" {
				return fmt.Errorf("decoded %+v", e)
			}
			got <- m
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		m := message.NewMessage("", []byte(`{"specversion":"1.0","id":"s-1","type":"OrderPlaced","source":"/elsewhere",
			"partitionkey":"order-7","datacontenttype":"application/json","data":{"order_id":"7","status":"paid"}}`))
		m.Metadata.Set("content-type", "application/cloudevents+json")
		h.publish(topicOrders, m)
		tr.waitOutcome(t, "s-1", tables.StatusSucceeded)
		md := <-got
		if md.ID != "s-1" || md.Key != "order-7" || md.Source != "/elsewhere" || md.Version != 1 {
			t.Errorf("Metadata = %+v", md)
		}
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("effects: %d rows, want 1", rows)
		}
	})
}

func TestConsumerConcurrencyBound(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		opts := fastOptions()
		opts.Concurrency = 3
		var running, peak atomic.Int32
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if m.Attempt == 1 && strings.HasSuffix(m.ID, "0") {
				return errors.New("retry me") // retries share the bound
			}
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		var msgs []*message.Message
		for i := range 60 {
			msgs = append(msgs, eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprint(i), nil))
		}
		h.publish(topicOrders, msgs...)
		tr.wait(t, "all handled", func() bool { return tr.ever(tables.StatusSucceeded) == 60 })
		if p := peak.Load(); p > 3 {
			t.Errorf("%d handlers ran at once, want at most 3", p)
		}
	})
}

// TestConsumerHandlesOneTopicConcurrently checks that Concurrency applies
// within one topic on a subscriber whose subscriptions compete (package
// transport's), and that every message is still handled once.
func TestConsumerHandlesOneTopicConcurrently(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		const n, concurrency = 12, 4
		tr, err := transport.Open(context.Background(), "", transport.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		sub, err := tr.Subscriber("billing")
		if err != nil {
			t.Fatal(err)
		}
		opts := fastOptions()
		opts.Group, opts.Table, opts.Logger, opts.Concurrency = "billing", h.table, testLogger(), concurrency
		c, err := NewConsumer(h.db, sub, opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.subscriptionsPerTopic(1); got != concurrency {
			t.Fatalf("subscriptionsPerTopic(1) = %d, want %d", got, concurrency)
		}
		tr2 := newTracker()
		c.hooks = &consumerHooks{settled: tr2.settled, retryPass: tr2.retryPass, cleaned: tr2.cleaned}
		if err := c.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Each handler waits until Concurrency of them run, or for hold.
		// SQLite runs one writer at a time, so there they never overlap.
		want, hold := concurrency, 2*time.Second
		if h.dbName == "sqlite" {
			want, hold = 1, 20*time.Millisecond
		}
		var running, peak atomic.Int32
		all := make(chan struct{})
		var allOnce sync.Once
		err = Handle(c, func(ctx context.Context, e orderPlaced, m Metadata) error {
			now := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			if now >= concurrency {
				allOnce.Do(func() { close(all) })
			}
			select {
			case <-all:
			case <-time.After(hold):
			}
			return h.effect(ctx, m.Group, m.ID)
		})
		if err != nil {
			t.Fatal(err)
		}
		h.run(c)
		var msgs []*message.Message
		for i := range n {
			msgs = append(msgs, eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprint(i), nil))
		}
		if err := tr.Publisher().Publish(topicOrders, msgs...); err != nil {
			t.Fatal(err)
		}
		tr2.wait(t, "all handled", func() bool { return tr2.count(tables.StatusSucceeded) == n })
		if p := peak.Load(); p != int32(want) {
			t.Errorf("at most %d handlers of one topic ran at once, want %d", p, want)
		}
		if rows, distinct := h.effectCounts("billing"); rows != n || distinct != n {
			t.Errorf("effects: %d rows for %d messages, want %d each", rows, distinct, n)
		}
	})
}

// TestConsumerSubscriptionsPerTopic checks that a subscriber
// that does not report competing subscriptions (a plain GoChannel gives
// each subscription a copy) is subscribed once per topic, and that the
// others share Concurrency between topics.
func TestConsumerSubscriptionsPerTopic(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	tr, err := transport.Open(context.Background(), "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sub, err := tr.Subscriber("g")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sub         message.Subscriber
		concurrency int
		topics      int
		want        int
	}{
		{ps, 8, 1, 1},
		{ps, 1, 3, 1},
		{sub, 8, 1, 8},
		{sub, 8, 3, 3},
		{sub, 1, 3, 1},
		{sub, 100, 1, maxSubscriptionsPerTopic},
	} {
		c, err := NewConsumer(db, tc.sub, ConsumerOptions{Group: "g", Concurrency: tc.concurrency})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.subscriptionsPerTopic(tc.topics); got != tc.want {
			t.Errorf("%T, Concurrency %d, %d topics: %d subscriptions per topic, want %d",
				tc.sub, tc.concurrency, tc.topics, got, tc.want)
		}
	}
}

func TestConsumerClean(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		opts := fastOptions()
		opts.SucceededRetention = time.Microsecond
		opts.DeleteBatch = 2
		opts.LocalRetryInterval = time.Hour // keep the pending row pending
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			switch e.OrderID {
			case "fail":
				return permanent(errors.New("no"))
			case "retry":
				return errors.New("later")
			}
			return nil
		})
		h.run(c)
		tr.wait(t, "the first cleanup pass", func() bool { tr.mu.Lock(); defer tr.mu.Unlock(); return len(tr.cleans) > 0 })

		var msgs []*message.Message
		for i := range 5 {
			msgs = append(msgs, eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprint(i), nil))
		}
		unknown := eventMessage(t, orderPlaced{OrderID: "x"}, "unknown", nil)
		unknown.Metadata.Set(wire.HeaderType, "Other")
		msgs = append(msgs, unknown,
			eventMessage(t, orderPlaced{OrderID: "fail"}, "fail", nil),
			eventMessage(t, orderPlaced{OrderID: "retry"}, "retry", nil))
		h.publish(topicOrders, msgs...)
		tr.wait(t, "all settled", func() bool {
			return tr.count(tables.StatusSucceeded) == 5 && tr.last("unknown") == tables.StatusSkipped &&
				tr.last("fail") == tables.StatusFailed && tr.last("retry") == tables.StatusPending
		})
		// Expiry is judged by the database clock, whose resolution may be
		// coarser than the retention (SQLite's is a millisecond), so the
		// newest rows can need a later pass.
		deleted := 0
		for deadline := time.Now().Add(testTimeout); deleted < 6 && time.Now().Before(deadline); {
			n, err := c.Clean(context.Background())
			if err != nil {
				t.Fatalf("Clean: %v", err)
			}
			if deleted += n; deleted < 6 {
				time.Sleep(time.Millisecond)
			}
		}
		if deleted != 6 {
			t.Fatalf("Clean deleted %d rows, want 6 (5 succeeded, 1 skipped)", deleted)
		}
		want := map[string]int{tables.StatusFailed: 1, tables.StatusPending: 1}
		if got := h.statusCounts("billing"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("after Clean: %v, want %v", got, want)
		}
	})
}

func TestConsumerOptionsAndRegistration(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer ps.Close()
	_, err := NewConsumer(db, ps, ConsumerOptions{Table: "x; DROP TABLE y", Concurrency: -1, LocalRetries: 5, MaxRetries: 5})
	for _, want := range []string{"Group is required", `invalid table name "x; DROP TABLE y"`, "Concurrency is -1", "LocalRetries (5) must be less than MaxRetries (5)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewConsumer error %v, want it to say %q", err, want)
		}
	}
	if _, err := NewConsumer(nil, ps, ConsumerOptions{Group: "g"}); err == nil {
		t.Error("NewConsumer with a nil db: no error")
	}

	c, err := NewConsumer(db, ps, ConsumerOptions{Group: "g", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no handlers") {
		t.Errorf("Run without handlers: %v", err)
	}
	c, _ = NewConsumer(db, ps, ConsumerOptions{Group: "g", Logger: testLogger()})
	h := func(context.Context, orderPlaced, Metadata) error { return nil }
	if err := Handle(c, h); err != nil {
		t.Fatal(err)
	}
	if err := Handle(c, h); err == nil || !strings.Contains(err.Error(), "already has a handler") {
		t.Errorf("second Handle for OrderPlaced: %v", err)
	}
	if err := Handle(c, func(context.Context, *orderPlaced, Metadata) error { return nil }); err == nil {
		t.Error("Handle with a pointer event type: no error")
	}
	if err := Handle[orderShipped](c, nil); err == nil {
		t.Error("Handle with a nil func: no error")
	}
	if err := Handle(nil, h); err == nil {
		t.Error("Handle with a nil consumer: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := c.Subscribed()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-subscribed
	if err := Handle(c, func(context.Context, orderShipped, Metadata) error { return nil }); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Handle after Run: %v", err)
	}
	if err := c.Run(ctx); err == nil {
		t.Error("second Run: no error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := c.Failed(context.Background(), 0); err == nil {
		t.Error("Failed(0): no error")
	}
}

// storeFailed writes a failed inbox row for message id straight into c's
// table, as a consumer whose handler gave up would have left it.
func storeFailed(t testing.TB, c *Consumer, id string) {
	t.Helper()
	row := tables.InboxRow{MessageID: id, Name: "OrderPlaced", Version: 1, Topic: topicOrders, Payload: []byte(`{"order_id":"o1"}`)}
	if _, err := c.inbox.Insert(context.Background(), c.db, row, c.finished(tables.StatusFailed, 1, "boom")); err != nil {
		t.Fatalf("store failed row %s: %v", id, err)
	}
}

// TestConsumerWithoutSubscriber checks that a Consumer made without a
// subscriber migrates, lists, re-executes and cleans its inbox, and that Run
// refuses at once.
func TestConsumerWithoutSubscriber(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		c, err := NewConsumer(h.db, nil, ConsumerOptions{Group: "ops", Table: h.table, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		storeFailed(t, c, "m1")
		storeFailed(t, c, "m2")
		if failed, err := c.Failed(ctx, 10); err != nil || len(failed) != 2 || failed[0].ID != "m1" || failed[0].Error != "boom" {
			t.Fatalf("Failed = %+v, %v; want m1 and m2", failed, err)
		}
		if n, err := c.Reexecute(ctx, "m1"); n != 1 || err != nil {
			t.Errorf("Reexecute(m1) = %d, %v; want 1", n, err)
		}
		if n, err := c.ReexecuteFailed(ctx); n != 1 || err != nil {
			t.Errorf("ReexecuteFailed = %d, %v; want 1 (m2)", n, err)
		}
		if got := h.statusCounts("ops"); got[tables.StatusPending] != 2 {
			t.Errorf("statuses after re-execution: %v, want 2 pending", got)
		}
		if _, err := c.Clean(ctx); err != nil {
			t.Errorf("Clean: %v", err)
		}
		if err := Handle(c, func(context.Context, orderPlaced, Metadata) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err = c.Run(runCtx)
		if err == nil || !strings.Contains(err.Error(), "Run needs a subscriber") || runCtx.Err() != nil {
			t.Fatalf("Run without a subscriber = %v, want an error at once saying it needs a subscriber", err)
		}
	})
}

// orderConsumer returns a migrated consumer of group g on SQLite, reading
// from sub, whose handler accepts every OrderPlaced.
func orderConsumer(t *testing.T, sub message.Subscriber) *Consumer {
	t.Helper()
	c, err := NewConsumer(testenv.OpenSQLite(t), sub, ConsumerOptions{Group: "g", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := Handle(c, func(context.Context, orderPlaced, Metadata) error { return nil }); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConsumerRunFailsWhenSubscriptionCloses(t *testing.T) {
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	c := orderConsumer(t, ps)
	subscribed := c.Subscribed()
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	<-subscribed
	ps.Close() // the broker goes away under the consumer
	if err := <-done; err == nil || !strings.Contains(err.Error(), "subscription to test.orders closed") {
		t.Errorf("Run = %v, want the closed subscription", err)
	}
}

func TestInboxSchema(t *testing.T) {
	for _, d := range sqlstore.Dialects {
		stmts, err := InboxSchema(d, "")
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(stmts, "\n")
		for _, want := range []string{"CREATE TABLE IF NOT EXISTS eventgen_inbox", "UNIQUE (consumer_group, message_id)", "eventgen_inbox_claim", "eventgen_inbox_expiry"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s schema lacks %q:\n%s", d, want, all)
			}
		}
		if d == "mysql" && strings.Count(all, "CREATE INDEX") != 0 {
			t.Errorf("mysql schema creates indexes outside CREATE TABLE:\n%s", all)
		}
	}
	if _, err := InboxSchema("postgres", "bad-name"); err == nil {
		t.Error("InboxSchema with an invalid table name: no error")
	}
	if _, err := InboxSchema("oracle", ""); err == nil {
		t.Error("InboxSchema with an unknown dialect: no error")
	}
	// The statements create a working table, and Migrate then has nothing to do.
	forEachDatabase(t, func(t *testing.T, h *harness) {
		stmts, err := InboxSchema(h.dbName, h.table)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stmts {
			if _, err := h.db.ExecContext(context.Background(), s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		c := h.consumer("g", fastOptions(), newTracker())
		if err := c.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkConsume measures delivered events per second through the fast
// path into a handler that writes one row: on SQLite, and on PostgreSQL and
// MariaDB when their variables are set.
func BenchmarkConsume(b *testing.B) {
	for _, tdb := range testenv.Databases(b) {
		for _, n := range []int{1, DefaultConcurrency} {
			b.Run(fmt.Sprintf("%s/concurrency=%d", tdb.Name, n), func(b *testing.B) { benchmarkConsume(b, tdb.Open(b), n) })
		}
	}
}

func benchmarkConsume(b *testing.B, db *bun.DB, concurrency int) {
	table, effects := testenv.TableName(b, "inbox"), testenv.TableName(b, "effects")
	testenv.DropTables(b, db, table, effects)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+effects+" (message_id VARCHAR(255) NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	defer ps.Close()
	c, err := NewConsumer(db, ps, ConsumerOptions{Group: "bench", Table: table, Concurrency: concurrency, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	all := make(chan struct{})
	if err := Handle(c, func(ctx context.Context, e orderPlaced, m Metadata) error {
		if _, err := Tx(ctx).ExecContext(ctx, "INSERT INTO "+effects+" (message_id) VALUES (?)", m.ID); err != nil {
			return err
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	n := int64(b.N)
	subscribed := c.Subscribed()
	c.hooks = &consumerHooks{settled: func(string, string) {
		if handled.Add(1) == n {
			close(all)
		}
	}}
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = eventMessage(b, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprintf("bench-%d", i), nil)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	<-subscribed
	b.ResetTimer()
	start := time.Now()
	go ps.Publish(topicOrders, msgs...) //nolint:errcheck // GoChannel only fails once closed
	<-all
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// TestConsumerInboxInsertIsPrepared checks that the inbox insert of handled
// messages comes to run as a prepared statement, out of Bun's hooks, and
// through them with NoPreparedStatements; duplicates are absorbed either way.
func TestConsumerInboxInsertIsPrepared(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		hook := &statementCounter{}
		h.db.AddQueryHook(hook)
		const n = 100
		trackers := map[bool]*tracker{}
		for _, prepared := range []bool{true, false} {
			opts := fastOptions()
			opts.NoPreparedStatements = !prepared
			c, tr := h.orders(fmt.Sprintf("prepared-%t", prepared), opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
				return h.effect(ctx, m.Group, m.ID)
			})
			trackers[prepared] = tr
			h.run(c)
		}
		for i := range n {
			// One at a time, each with a duplicate; both groups get both.
			id := fmt.Sprintf("m-%d", i)
			h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, id, nil), eventMessage(t, orderPlaced{OrderID: "1"}, id, nil))
			for _, tr := range trackers {
				tr.wait(t, "message settled twice", func() bool { return len(tr.all(id)) == 2 })
			}
		}
		for _, prepared := range []bool{true, false} {
			group := fmt.Sprintf("prepared-%t", prepared)
			// Through Bun the group is inlined in the statement.
			viaBun := hook.containing("INTO "+h.table, "'"+group+"'")
			if prepared && viaBun > n/2 {
				t.Errorf("%d of %d inbox inserts went through Bun, want most of them prepared", viaBun, 2*n)
			}
			if !prepared && viaBun != 2*n {
				t.Errorf("NoPreparedStatements: %d inbox inserts through Bun, want %d", viaBun, 2*n)
			}
			if rows, distinct := h.effectCounts(group); rows != n || distinct != n {
				t.Errorf("group %s: %d effects for %d messages, want each once", group, rows, n)
			}
		}
	})
}

// stuckSubscriber is a broker client that stopped answering: its
// subscriptions deliver nothing, and it never closes their channels, not
// even when their context ends.
type stuckSubscriber struct{}

func (stuckSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return make(chan *message.Message), nil
}

func (stuckSubscriber) Close() error { return nil }

// TestConsumerRunReturnsWhileSubscriberHangs stops a consumer whose
// subscriber never closes its channels: Run must return at once instead of
// waiting for the subscriber.
func TestConsumerRunReturnsWhileSubscriberHangs(t *testing.T) {
	c := orderConsumer(t, stuckSubscriber{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Subscribed()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after its context ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context ending")
	}
}

// TestConsumerSlowRetryKeepsItsRow runs a retry whose handler takes three
// leases, with a second replica polling all the while: the row lock taken
// by the lease check holds the row for the whole run, so the other replica
// never claims it, and the handler runs once.
func TestConsumerSlowRetryKeepsItsRow(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		const lease = 200 * time.Millisecond
		var retries atomic.Int64
		handler := func(ctx context.Context, e orderPlaced, m Metadata) error {
			if m.Attempt == 1 {
				return errors.New("first run fails")
			}
			retries.Add(1)
			select {
			case <-time.After(3 * lease): // slow work, past the lease
			case <-ctx.Done():
				return ctx.Err()
			}
			return h.effect(ctx, m.Group, m.ID)
		}
		opts := fastOptions()
		opts.LeaseDuration = lease
		a, _ := h.orders("billing", opts, handler)
		b, _ := h.orders("billing", opts, handler)
		h.run(a)
		h.run(b)
		h.publish(topicOrders, eventMessage(t, orderPlaced{OrderID: "1"}, "slow", nil))
		deadline := time.Now().Add(30 * time.Second)
		for {
			if rows, _ := h.effectCounts("billing"); rows > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the retry never succeeded")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * lease) // time for a second run, were one started
		if n := retries.Load(); n != 1 {
			t.Errorf("the slow retry ran %d times, want once", n)
		}
		if rows, _ := h.effectCounts("billing"); rows != 1 {
			t.Errorf("%d effects, want 1", rows)
		}
	})
}
