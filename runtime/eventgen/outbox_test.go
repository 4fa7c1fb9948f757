package eventgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// testTopic is the topic of every test event.
const testTopic = "eventgen.test"

// testEvent is a keyed event with a payload of any size.
type testEvent struct {
	N       int    `json:"n"`
	Body    string `json:"body,omitempty"`
	Invalid bool   `json:"-"`
}

func (testEvent) EventName() string { return "TestHappened" }
func (testEvent) EventVersion() int { return 2 }
func (testEvent) Topic() string     { return testTopic }
func (e testEvent) Key() string     { return fmt.Sprintf("k%d", e.N%7) }
func (e testEvent) Validate() error {
	if e.Invalid {
		return errors.New("n is required")
	}
	return nil
}

// eventN returns n's payload, for matching received messages to events.
func eventN(t testing.TB, m *message.Message) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(string(m.Payload), `{"n":%d`, &n); err != nil {
		t.Errorf("payload %q: %v", m.Payload, err)
	}
	return n
}

// collector subscribes to testTopic and counts deliveries by message id.
type collector struct {
	t    testing.TB
	mu   sync.Mutex
	seen map[string]int           // deliveries by message id
	byN  map[int]*message.Message // first delivery by event number
	ch   chan struct{}            // signalled after each delivery
}

func collect(t testing.TB, sub message.Subscriber) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, testTopic)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{t: t, seen: map[string]int{}, byN: map[int]*message.Message{}, ch: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			n := eventN(t, m)
			c.mu.Lock()
			c.seen[m.UUID]++
			if c.byN[n] == nil {
				c.byN[n] = m
			}
			c.mu.Unlock()
			m.Ack()
			select {
			case c.ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// counts returns distinct messages and duplicate deliveries.
func (c *collector) counts() (distinct, duplicates int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.seen {
		distinct++
		duplicates += n - 1
	}
	return distinct, duplicates
}

// waitDistinct waits until n distinct messages have arrived.
func (c *collector) waitDistinct(n int) {
	c.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		if got, _ := c.counts(); got >= n {
			return
		}
		select {
		case <-c.ch:
		case <-timeout:
			got, _ := c.counts()
			c.t.Fatalf("timed out waiting for %d messages, got %d", n, got)
		}
	}
}

func (c *collector) message(n int) *message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byN[n]
}

// outboxLogger returns a logger that writes warnings and errors to t's log.
func outboxLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newPubSub returns an in-process broker, closed at t's cleanup.
func newPubSub(t testing.TB) *gochannel.GoChannel {
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, nil)
	t.Cleanup(func() { ps.Close() })
	return ps
}

// newOutbox returns a migrated Outbox on a fresh table of db.
func newOutbox(t testing.TB, db *bun.DB, pub message.Publisher, opts OutboxOptions) *Outbox {
	t.Helper()
	if opts.Table == "" {
		opts.Table = testenv.TableName(t, "outbox")
		testenv.DropTables(t, db, opts.Table)
	}
	if opts.Logger == nil {
		opts.Logger = outboxLogger(t)
	}
	ob, err := NewOutbox(db, pub, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ob
}

// run starts ob's relay and stops it at t's cleanup, checking its result.
func run(t testing.TB, ob *Outbox) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ob.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// publish writes events n..n+count-1 in one transaction.
func publish(t testing.TB, ob *Outbox, db *bun.DB, n, count int, opts ...PublishOption) {
	t.Helper()
	events := make([]Event, count)
	for i := range events {
		events[i] = testEvent{N: n + i}
	}
	err := db.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
		return ob.Publish(ctx, tx, "eventgen-test", events, opts...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// statusCounts returns how many rows have each status.
func statusCounts(t testing.TB, ob *Outbox) map[string]int {
	t.Helper()
	rows, err := ob.db.QueryContext(context.Background(), "SELECT status, COUNT(*) FROM "+ob.opts.Table+" GROUP BY status")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// markedCounter counts rows marked published, through the relay's hook.
type markedCounter struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func countMarked(ob *Outbox) *markedCounter {
	m := &markedCounter{ch: make(chan struct{}, 1)}
	if ob.hooks == nil {
		ob.hooks = &outboxHooks{}
	}
	ob.hooks.published = func(ids []int64) {
		m.mu.Lock()
		m.n += len(ids)
		m.mu.Unlock()
		select {
		case m.ch <- struct{}{}:
		default:
		}
	}
	return m
}

func (m *markedCounter) wait(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		m.mu.Lock()
		got := m.n
		m.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-m.ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %d rows marked published, got %d", n, got)
		}
	}
}

// flakyPublisher is a real broker whose publishes can be made to fail:
// fault injection in front of GoChannel, not a mock.
type flakyPublisher struct {
	message.Publisher
	down     atomic.Bool
	attempts atomic.Int64
	// attempted is signalled after every attempt.
	attempted chan struct{}
	// reject fails events whose number it returns true for.
	reject func(n int) bool
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.attempts.Add(int64(len(msgs)))
	if p.attempted != nil {
		select {
		case p.attempted <- struct{}{}:
		default:
		}
	}
	if p.down.Load() {
		return errors.New("broker unavailable")
	}
	for _, m := range msgs {
		var n int
		fmt.Sscanf(string(m.Payload), `{"n":%d`, &n) //nolint:errcheck // checked by the collector
		if p.reject != nil && p.reject(n) {
			return fmt.Errorf("broker rejected event %d", n)
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

func TestOutboxCommitPublishesRollbackDoesNot(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob := newOutbox(t, db, ps, OutboxOptions{})
			marked := countMarked(ob)
			run(t, ob)
			ctx := context.Background()

			publish(t, ob, db, 1, 2, WithHeader("traceparent", "00-abc-01"))
			errRollback := errors.New("business rule failed")
			err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if err := ob.Publish(ctx, tx, "eventgen-test", []Event{testEvent{N: 3}}); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatalf("rolled-back transaction: %v", err)
			}
			// Without a transaction the row is written at once.
			if err := ob.Publish(ctx, db, "eventgen-test", []Event{testEvent{N: 4}}); err != nil {
				t.Fatal(err)
			}
			got.waitDistinct(3)
			marked.wait(t, 3)
			if c := statusCounts(t, ob); c[tables.StatusPublished] != 3 || len(c) != 1 {
				t.Errorf("statuses = %v, want 3 published and nothing else", c)
			}
			if got.message(3) != nil {
				t.Error("the rolled-back event was published")
			}
			m := got.message(1)
			env, err := wire.Decode(m, math.MaxInt)
			if err != nil {
				t.Fatal(err)
			}
			if env.Name != "TestHappened" || env.Version != 2 || env.Source != "eventgen-test" || env.Key != "k1" ||
				env.ID != m.UUID || env.Headers["traceparent"] != "00-abc-01" || env.Time.IsZero() {
				t.Errorf("envelope = %+v", env)
			}
			if _, dups := got.counts(); dups != 0 {
				t.Errorf("%d duplicate deliveries", dups)
			}
		})
	}
}

func TestOutboxPublishWritesOneStatement(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			// Unprepared, so that the insert passes through Bun's hooks.
			ob := newOutbox(t, db, ps, OutboxOptions{NoPreparedStatements: true})
			hook := &statementCounter{}
			db.AddQueryHook(hook)
			publish(t, ob, db, 0, 10, WithHeader("h", "v"))
			// The events have keys: one upsert numbers them all (and on
			// MySQL, which has no RETURNING, a SELECT reads the numbers).
			n, keys := hook.containing("INSERT INTO "+ob.opts.Table+" ("), hook.containing("INSERT INTO "+tables.KeysTable(ob.opts.Table)+" ")
			want := 4
			if d.Name == "mysql" {
				want = 5
			}
			if n != 1 || keys != 1 || len(hook.queries) != want {
				t.Errorf("%d INSERT statements and %d key upserts for 10 events in %q, want 1 of each (and BEGIN, COMMIT)", n, keys, hook.queries)
			}
			run(t, ob)
			got.waitDistinct(10)
			ids := map[string]bool{}
			for i := range 10 {
				ids[got.message(i).UUID] = true
			}
			if len(ids) != 10 {
				t.Errorf("%d distinct message ids for 10 events", len(ids))
			}
			env, err := wire.Decode(got.message(7), math.MaxInt)
			if err != nil {
				t.Fatal(err)
			}
			if env.Name != "TestHappened" || env.Version != 2 || env.Key != "k0" || env.Headers["h"] != "v" {
				t.Errorf("envelope = %+v", env)
			}
		})
	}
}

// TestOutboxPublishIsPrepared checks that Publish comes to run one prepared
// statement per batch size, kept out of Bun's hooks, even on a pool of one
// connection that the caller's transaction holds; and that it goes through
// Bun for what it cannot prepare: a batch over maxPreparedBatch, a bun.Conn
// and a transaction of another *bun.DB.
func TestOutboxPublishIsPrepared(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			db.SetMaxOpenConns(1)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob := newOutbox(t, db, ps, OutboxOptions{})
			hook := &statementCounter{}
			db.AddQueryHook(hook)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			insert := "INSERT INTO " + ob.opts.Table + " ("
			next := 0
			events := func(n int) []Event {
				evs := make([]Event, n)
				for i := range evs {
					evs[i] = testEvent{N: next}
					next++
				}
				return evs
			}

			// Publish prepares in the background, so the first calls may
			// go through Bun; within a few calls they must not.
			var viaBun int
			for attempt := 0; ; attempt++ {
				before := hook.containing(insert)
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					for _, n := range []int{1, 2} {
						if err := ob.Publish(ctx, tx, "eventgen-test", events(n)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				viaBun = hook.containing(insert) - before
				if viaBun == 0 || attempt == 100 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if viaBun != 0 {
				t.Fatalf("after 100 transactions, %d of 2 inserts still went through Bun", viaBun)
			}

			before := hook.containing(insert)
			err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				stats := preparedExecutions(t, ctx, tx, d.Name, ob.opts.Table)
				for _, n := range []int{1, 2, 1} {
					if err := ob.Publish(ctx, tx, "eventgen-test", events(n)); err != nil {
						return err
					}
				}
				after := preparedExecutions(t, ctx, tx, d.Name, ob.opts.Table)
				switch {
				case d.Name == "postgres" && (after.prepared != 2 || after.executed-stats.executed != 3):
					t.Errorf("postgres: %d insert statements prepared in the session with %d executions, after %+v; want 2 and 3 executions more",
						after.prepared, after.executed, stats)
				case d.Name == "mysql" && (after.prepared != stats.prepared || after.executed-stats.executed != 6):
					// The session counts the key upserts too.
					t.Errorf("mysql: prepares %d -> %d, executions %d -> %d; want no new prepare and 6 executions (3 inserts, 3 key upserts)",
						stats.prepared, after.prepared, stats.executed, after.executed)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := hook.containing(insert) - before; n != 0 {
				t.Errorf("%d inserts went through Bun, want none", n)
			}
			// The pool itself, outside a transaction.
			before = hook.containing(insert)
			if err := ob.Publish(ctx, db, "eventgen-test", events(1)); err != nil {
				t.Fatal(err)
			}
			if n := hook.containing(insert) - before; n != 0 {
				t.Errorf("publishing on the pool: %d inserts through Bun, want none", n)
			}

			// Too many events to prepare: one statement through Bun.
			before = hook.containing(insert)
			if err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return ob.Publish(ctx, tx, "eventgen-test", events(maxPreparedBatch+1))
			}); err != nil {
				t.Fatal(err)
			}

			// A connection taken from the pool.
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = ob.Publish(ctx, conn, "eventgen-test", events(1))
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			if n := hook.containing(insert) - before; n != 2 {
				t.Errorf("%d inserts through Bun, want 2 (the large batch and the bun.Conn)", n)
			}

			// A transaction of another handle on the same database.
			other := openAgain(t, d, db)
			otherHook := &statementCounter{}
			other.AddQueryHook(otherHook)
			if err := other.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return ob.Publish(ctx, tx, "eventgen-test", events(1))
			}); err != nil {
				t.Fatal(err)
			}
			if n := otherHook.containing(insert); n != 1 {
				t.Errorf("another database's transaction: %d inserts through its Bun hooks, want 1", n)
			}

			run(t, ob)
			got.waitDistinct(next)
			for _, n := range []int{0, 2, next - 2, next - 1} {
				env, err := wire.Decode(got.message(n), math.MaxInt)
				if err != nil {
					t.Fatal(err)
				}
				if env.Name != "TestHappened" || env.Version != 2 || env.Key != fmt.Sprintf("k%d", n%7) || env.Source != "eventgen-test" {
					t.Errorf("event %d: envelope = %+v", n, env)
				}
			}
		})
	}
}

// openAgain returns another handle on db's database.
func openAgain(t *testing.T, d testenv.Database, db *bun.DB) *bun.DB {
	t.Helper()
	if d.Name != "sqlite" {
		return d.Open(t)
	}
	var path string
	if err := db.QueryRowContext(context.Background(), "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&path); err != nil {
		t.Fatal(err)
	}
	other, err := testenv.OpenSQLitePath(path)
	if err != nil {
		t.Fatal(err)
	}
	testservices.CloseOnCleanup(t, other)
	return other
}

// statementStats counts the prepared statements of tx's session where the
// database can tell: on PostgreSQL those of the outbox table's INSERT and
// their executions (pg_prepared_statements), on MySQL all prepares and
// executions of prepared statements. SQLite cannot tell.
type statementStats struct {
	prepared, executed int
}

func preparedExecutions(t *testing.T, ctx context.Context, tx bun.Tx, dialect, table string) statementStats {
	t.Helper()
	var st statementStats
	switch dialect {
	case "postgres":
		err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0)
FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO ' || ? || ' %'`, table).Scan(&st.prepared, &st.executed)
		if err != nil {
			t.Fatal(err)
		}
	case "mysql":
		status := func(name string) int {
			var k string
			var v int
			if err := tx.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE ?", name).Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
		st.prepared, st.executed = status("Com_stmt_prepare"), status("Com_stmt_execute")
	}
	return st
}

// statementCounter counts statements by their first word.
type statementCounter struct {
	mu      sync.Mutex
	n       map[string]int
	queries []string
}

func (h *statementCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (h *statementCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	verb, _, _ := strings.Cut(strings.TrimSpace(e.Query), " ")
	h.n[strings.ToUpper(verb)]++
	h.queries = append(h.queries, e.Query)
}

// containing counts the statements that contain every one of ss.
func (h *statementCounter) containing(ss ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, q := range h.queries {
		if !slices.ContainsFunc(ss, func(s string) bool { return !strings.Contains(q, s) }) {
			n++
		}
	}
	return n
}

func (h *statementCounter) count(verb string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[verb]
}

func TestOutboxPublishRejectsBadInput(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{})
	ctx := context.Background()
	long := strings.Repeat("x", 256)
	for _, tc := range []struct {
		name   string
		source string
		events []Event
		opts   []PublishOption
		want   string
	}{
		{"invalid event", "s", []Event{testEvent{N: 1}, testEvent{Invalid: true}}, nil, "event 1: TestHappened: invalid: n is required"},
		{"nil event", "s", []Event{nil}, nil, "event 0: event is nil"},
		{"empty source", "", []Event{testEvent{}}, nil, "source is empty"},
		{"long source", long, []Event{testEvent{}}, nil, "source is 256 bytes"},
		{"reserved header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("CE_type", "x")}, `header "CE_type" is reserved`},
		{"content type header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("Content-Type", "x")}, "reserved"},
		{"broker header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("_watermill", "x")}, "reserved for brokers"},
		{"empty header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("", "x")}, `header name "" is empty`},
		{"huge header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("h", strings.Repeat("v", wire.MaxHeaderValue+1))}, "over the limit"},
		{"64 KiB header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("h", strings.Repeat("v", 64<<10))}, "over the limit"},
		// Values every broker could not carry unchanged: refused before
		// anything is committed, never a row that fails on every publish.
		{"key with a line break", "s", []Event{keyedEvent{key: "a\nb"}}, nil, `key "a\nb" holds the control character U+000A`},
		{"key with a NUL", "s", []Event{keyedEvent{key: "a\x00b"}}, nil, "U+0000"},
		{"key with a trailing tab", "s", []Event{keyedEvent{key: "k\t"}}, nil, "U+0009"},
		{"key not UTF-8", "s", []Event{keyedEvent{key: "k\xff"}}, nil, "not valid UTF-8"},
		{"source with CR", "s\r", []Event{testEvent{}}, nil, `source "s\r"`},
		{"header value with a line break", "s", []Event{testEvent{}}, []PublishOption{WithHeader("h", "a\r\nInjected: 1")}, `header "h": value holds the control character U+000D`},
		{"header value not UTF-8", "s", []Event{testEvent{}}, []PublishOption{WithHeader("h", "\xc3\x28")}, "not valid UTF-8"},
		{"header name with a colon", "s", []Event{testEvent{}}, []PublishOption{WithHeader("a:b", "x")}, `header name "a:b" holds ':'`},
		{"header name with a space", "s", []Event{testEvent{}}, []PublishOption{WithHeader("a b", "x")}, `holds ' '`},
		{"ce- header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("ce-id", "x")}, "reserved"},
		{"AMQP binding header", "s", []Event{testEvent{}}, []PublishOption{WithHeader("CloudEvents_id", "x")}, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ob.Publish(ctx, db, tc.source, tc.events, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Publish error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if c := statusCounts(t, ob); len(c) != 0 {
		t.Errorf("rows written by failed publishes: %v", c)
	}
	if err := ob.Publish(ctx, db, "s", nil); err != nil {
		t.Errorf("Publish of no events: %v", err)
	}
	// What every broker carries is accepted as it is.
	ok := []PublishOption{WithHeader("x-percent", "100%25 %s %%"), WithHeader("x-unicode", "Grüße, 東京 ✓")}
	if err := ob.Publish(ctx, db, "svc/orders", []Event{keyedEvent{key: "K-1 with inner spaces %0A"}}, ok...); err != nil {
		t.Errorf("Publish of carriable values: %v", err)
	}
}

// keyedEvent is an event with a given key.
type keyedEvent struct {
	testEvent
	key string
}

func (e keyedEvent) Key() string { return e.key }

func TestOutboxBrokerDownThenUp(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			pub := &flakyPublisher{Publisher: ps}
			pub.down.Store(true)
			ob := newOutbox(t, db, pub, OutboxOptions{
				LocalRetries: 2, LocalRetryInterval: 5 * time.Millisecond,
				RetryInterval: 20 * time.Millisecond, RetryMinAge: 20 * time.Millisecond,
				MaxRetries: 1000, PollInterval: 10 * time.Millisecond,
			})
			var rounds atomic.Int64
			roundEnded := make(chan struct{}, 1)
			ob.hooks = &outboxHooks{ended: func(int64, string) {
				rounds.Add(1)
				select {
				case roundEnded <- struct{}{}:
				default:
				}
			}}
			marked := countMarked(ob)
			run(t, ob)
			const events = 50
			for i := 0; i < events; i += 10 {
				publish(t, ob, db, i, 10)
			}
			// Each row fails its first round and goes back to the table.
			for rounds.Load() < events {
				<-roundEnded
			}
			// Hold the outage for a while: attempts must stay bounded.
			outage := 500 * time.Millisecond
			time.Sleep(outage) // the fault's duration, not an assertion
			attempts := pub.attempts.Load()
			// A row gets at most 3 attempts per round, and a round ends no
			// sooner than RetryMinAge after the last: about 25 rounds per row
			// in the outage at most. A hot loop makes tens of thousands.
			if limit := int64(events * 3 * 30); attempts > limit {
				t.Errorf("%d publish attempts during the outage, want at most %d (hot loop?)", attempts, limit)
			}
			t.Logf("%d publish attempts, %d failed rounds during a %s outage for %d events", attempts, rounds.Load(), outage, events)
			pub.down.Store(false)
			got.waitDistinct(events)
			marked.wait(t, events)
			if c := statusCounts(t, ob); c[tables.StatusPublished] != events {
				t.Errorf("statuses = %v, want %d published", c, events)
			}
			var minAttempts int
			if err := db.QueryRowContext(context.Background(), "SELECT MIN(attempts) FROM "+ob.opts.Table).Scan(&minAttempts); err != nil {
				t.Fatal(err)
			}
			if minAttempts < 3 {
				t.Errorf("min attempts = %d, want every row's failed attempts counted (>= 3)", minAttempts)
			}
		})
	}
}

func TestOutboxRetriesThenFailedThenRequeue(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			var poisoned atomic.Bool
			poisoned.Store(true)
			const poison = 25
			pub := &flakyPublisher{Publisher: ps, reject: func(n int) bool { return n == poison && poisoned.Load() }}
			// A backlog of three batches: on PostgreSQL and MySQL the
			// poison message's first round is in a locked batch.
			ob := newOutbox(t, db, pub, OutboxOptions{
				LocalRetries: 1, LocalRetryInterval: time.Millisecond,
				RetryInterval: time.Millisecond, RetryMinAge: time.Millisecond,
				MaxRetries: 4, PollInterval: 5 * time.Millisecond, BatchSize: 10,
			})
			ended := make(chan string, 16)
			ob.hooks = &outboxHooks{ended: func(_ int64, status string) { ended <- status }}
			publish(t, ob, db, 0, 30)
			run(t, ob)
			// Rounds: 2 attempts (1 + 1 local), then 1 per persistent retry.
			for _, want := range []string{tables.StatusPending, tables.StatusPending, tables.StatusFailed} {
				if status := <-ended; status != want {
					t.Fatalf("round ended %s, want %s", status, want)
				}
			}
			got.waitDistinct(29) // the poison message does not stall the others
			if got.message(poison) != nil {
				t.Fatal("the rejected event was delivered")
			}
			failed, err := ob.Failed(context.Background(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(failed) != 1 || failed[0].Attempts != 4 || failed[0].LastError != "publish to eventgen.test: broker rejected event 25" ||
				failed[0].Name != "TestHappened" || failed[0].Key != "k4" || failed[0].CreatedAt.IsZero() {
				t.Fatalf("Failed = %+v", failed)
			}
			if n := pub.attempts.Load(); n != 30+3 {
				t.Errorf("%d publish attempts, want 30 first tries and 3 retries", n)
			}

			poisoned.Store(false)
			n, err := ob.Requeue(context.Background(), failed[0].ID, failed[0].ID+1000)
			if err != nil || n != 1 {
				t.Fatalf("Requeue = %d, %v; want 1", n, err)
			}
			got.waitDistinct(30)
			if n, err := ob.RequeueFailed(context.Background()); err != nil || n != 0 {
				t.Errorf("RequeueFailed with nothing failed = %d, %v", n, err)
			}
		})
	}
}

func TestOutboxRequeueFailedInBatches(t *testing.T) {
	db := testenv.OpenSQLite(t)
	// Bun's hooks count the statements: not prepared.
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{DeleteBatch: 3, NoPreparedStatements: true})
	publish(t, ob, db, 0, 8)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "UPDATE "+ob.opts.Table+" SET status = 'failed', next_attempt_at = NULL, attempts = 10, expires_at = 1 WHERE id <= 7"); err != nil {
		t.Fatal(err)
	}
	hook := &statementCounter{}
	db.AddQueryHook(hook)
	n, err := ob.RequeueFailed(ctx)
	if err != nil || n != 7 {
		t.Fatalf("RequeueFailed = %d, %v; want 7", n, err)
	}
	if u := hook.count("UPDATE"); u != 3 {
		t.Errorf("%d UPDATE statements for 7 rows in batches of 3, want 3", u)
	}
	var bad int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+ob.opts.Table+" WHERE status <> 'pending' OR attempts <> 0 OR expires_at IS NOT NULL OR next_attempt_at IS NULL").Scan(&bad); err != nil || bad != 0 {
		t.Errorf("%d rows not reset to pending (%v)", bad, err)
	}
}

func TestOutboxDelayedDelivery(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob := newOutbox(t, db, ps, OutboxOptions{PollInterval: 20 * time.Millisecond})
			marked := countMarked(ob)
			run(t, ob)
			const delay = 300 * time.Millisecond
			publish(t, ob, db, 1, 1, WithDelay(delay))
			publish(t, ob, db, 2, 1, WithDeliverAt(time.Now().Add(delay)))
			publish(t, ob, db, 3, 1)
			got.waitDistinct(3)
			marked.wait(t, 3)
			rows, err := db.QueryContext(context.Background(), "SELECT id, published_at - created_at FROM "+ob.opts.Table+" ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var lags []time.Duration
			for rows.Next() {
				var id, us int64
				if err := rows.Scan(&id, &us); err != nil {
					t.Fatal(err)
				}
				lags = append(lags, time.Duration(us)*time.Microsecond)
			}
			// WithDeliverAt converts with the application's clock: allow
			// for the time between the call and the insert.
			if len(lags) != 3 || lags[0] < delay || lags[1] < delay-50*time.Millisecond {
				t.Errorf("commit-to-publish lags %v, want the first two >= %s", lags, delay)
			}
		})
	}
}

func TestOutboxScheduledStatus(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{})
	publish(t, ob, db, 1, 2, WithDelay(time.Hour))
	publish(t, ob, db, 3, 1, WithDelay(-time.Hour))
	if c := statusCounts(t, ob); c[tables.StatusScheduled] != 2 || c[tables.StatusPending] != 1 {
		t.Errorf("statuses = %v, want 2 scheduled and 1 pending", c)
	}
	rows, err := ob.store.Claim(context.Background(), db, leased.Claim{Owner: "me", Limit: 10, MaxBytes: 1 << 20, Lease: time.Minute})
	if err != nil || len(rows) != 1 || rows[0].ID != 3 {
		t.Errorf("claim with two rows scheduled in an hour got %+v, %v; want row 3 only", rows, err)
	}
}

func TestOutboxLeaseTakeover(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			crashed := newOutbox(t, db, ps, OutboxOptions{})
			publish(t, crashed, db, 0, 5)
			// The first relay claims with a short lease and "crashes":
			// it never publishes nor releases. The lease must outlast the
			// next claim below on a loaded machine.
			ctx := context.Background()
			held, err := crashed.store.Claim(ctx, db, leased.Claim{Owner: crashed.owner, Limit: 100, MaxBytes: 1 << 20, Lease: time.Second})
			if err != nil || len(held) != 5 {
				t.Fatalf("claim: %d rows, %v", len(held), err)
			}
			survivor, err := NewOutbox(db, ps, OutboxOptions{Table: crashed.opts.Table, PollInterval: 20 * time.Millisecond, Logger: outboxLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			// Right now every row is leased: a claim gets nothing.
			if rows, err := survivor.store.Claim(ctx, db, leased.Claim{Owner: survivor.owner, Limit: 100, MaxBytes: 1 << 20, Lease: time.Minute}); err != nil || len(rows) != 0 {
				t.Fatalf("claim of leased rows got %d rows, %v", len(rows), err)
			}
			marked := countMarked(survivor)
			run(t, survivor)
			got.waitDistinct(5)
			marked.wait(t, 5)
			var owners []string
			rows, err := db.QueryContext(ctx, "SELECT DISTINCT lock_owner FROM "+crashed.opts.Table)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var o string
				if err := rows.Scan(&o); err != nil {
					t.Fatal(err)
				}
				owners = append(owners, o)
			}
			if !slices.Equal(owners, []string{survivor.owner}) {
				t.Errorf("rows published by %v, want the survivor %s", owners, survivor.owner)
			}
			// The crashed relay coming back cannot overwrite the rows.
			ids := []int64{held[0].ID}
			if n, err := crashed.store.Done(ctx, db, crashed.owner, ids, 0, time.Hour); err != nil || n != 0 {
				t.Errorf("stale relay marked %d rows (%v), want 0", n, err)
			}
		})
	}
}

func TestOutboxThreeRelays(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			opts := OutboxOptions{BatchSize: 20, PollInterval: 10 * time.Millisecond, Logger: outboxLogger(t)}
			first := newOutbox(t, db, ps, opts)
			opts.Table = first.opts.Table
			relays := []*Outbox{first}
			for range 2 {
				ob, err := NewOutbox(db, ps, opts)
				if err != nil {
					t.Fatal(err)
				}
				relays = append(relays, ob)
			}
			claims := make([]atomic.Int64, len(relays))
			for i, ob := range relays {
				ob.hooks = &outboxHooks{claimed: func(n int, _ bool) { claims[i].Add(int64(n)) }}
				run(t, ob)
			}
			const producers, perProducer = 6, 100
			var wg sync.WaitGroup
			for p := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ob := relays[p%len(relays)]
					for i := 0; i < perProducer; i += 5 {
						publish(t, ob, db, p*perProducer+i, 5)
					}
				}()
			}
			wg.Wait()
			got.waitDistinct(producers * perProducer)
			distinct, dups := got.counts()
			t.Logf("%d events, %d duplicate deliveries; claimed per relay: %d, %d, %d",
				distinct, dups, claims[0].Load(), claims[1].Load(), claims[2].Load())
			if dups != 0 {
				t.Errorf("%d duplicate deliveries without any crash, want 0", dups)
			}
			for i := range producers * perProducer {
				if got.message(i) == nil {
					t.Fatalf("event %d never delivered", i)
				}
			}
		})
	}
}

func TestOutboxStopHandsBackRows(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			pub := &flakyPublisher{Publisher: newPubSub(t), attempted: make(chan struct{}, 1)}
			pub.down.Store(true)
			// Local retries are due in 5 to 10 s: the rows are held by the
			// relay, waiting, when it stops.
			ob := newOutbox(t, db, pub, OutboxOptions{LocalRetryInterval: 10 * time.Second})
			claimed := make(chan int, 10)
			ob.hooks = &outboxHooks{claimed: func(n int, _ bool) { claimed <- n }}
			publish(t, ob, db, 0, 3)
			stop := run(t, ob)
			<-claimed
			// Wait until every row has failed its first attempt and waits
			// for its (hour-long) local retry.
			for pub.attempts.Load() < 3 {
				<-pub.attempted
			}
			stop()
			c := statusCounts(t, ob)
			if c[tables.StatusPending] != 3 {
				t.Errorf("statuses after stop = %v, want 3 pending (none left processing)", c)
			}
		})
	}
}

func TestOutboxRunTwice(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{})
	started := make(chan struct{})
	var once sync.Once
	ob.hooks = &outboxHooks{cleaned: func(int) { once.Do(func() { close(started) }) }}
	run(t, ob)
	<-started
	if err := ob.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v, want an error", err)
	}
}

func TestOutboxClean(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			// Bun's hooks count the statements: not prepared.
			ob := newOutbox(t, db, newPubSub(t), OutboxOptions{DeleteBatch: 4, NoPreparedStatements: true})
			publish(t, ob, db, 0, 20)
			ctx := context.Background()
			var ids []int64
			rows, err := db.QueryContext(ctx, "SELECT id FROM "+ob.opts.Table+" ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			rows.Close()
			// Expiry in the past or future, on the database's clock.
			set := func(status string, offset time.Duration, from, to int) {
				t.Helper()
				q := fmt.Sprintf("UPDATE %s SET status = ?, next_attempt_at = NULL, expires_at = %s + ? WHERE id >= ? AND id <= ?", ob.opts.Table, ob.dialect.Now)
				if _, err := db.ExecContext(ctx, q, status, offset.Microseconds(), ids[from], ids[to]); err != nil {
					t.Fatal(err)
				}
			}
			set(tables.StatusPublished, -time.Second, 0, 8)
			set(tables.StatusPublished, time.Hour, 9, 11)
			set(tables.StatusFailed, -time.Second, 12, 14)
			set(tables.StatusFailed, time.Hour, 15, 16)
			hook := &statementCounter{}
			db.AddQueryHook(hook)
			n, err := ob.Clean(ctx)
			if err != nil || n != 12 {
				t.Fatalf("Clean = %d, %v; want 12", n, err)
			}
			// 12 rows in batches of 4: three full batches, then one that
			// finds nothing left.
			if got := hook.count("DELETE"); got < 3 || got > 4 {
				t.Errorf("%d DELETE statements, want 3 or 4", got)
			}
			want := map[string]int{tables.StatusPublished: 3, tables.StatusFailed: 2, tables.StatusPending: 3}
			if c := statusCounts(t, ob); !maps.Equal(c, want) {
				t.Errorf("statuses after Clean = %v, want %v", c, want)
			}
			if n, err := ob.Clean(ctx); err != nil || n != 0 {
				t.Errorf("second Clean = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestOutboxConcurrentCleanersDeleteEverything runs three cleaners at once,
// as replicas do. One that loses part of a batch to another must go on, not
// take the short batch for the end: when a cleaner returns, at most the
// batches the others are deleting at that moment are left.
func TestOutboxConcurrentCleanersDeleteEverything(t *testing.T) {
	const rows, cleaners = 3000, 3
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ob := newOutbox(t, db, newPubSub(t), OutboxOptions{DeleteBatch: 50})
			for i := 0; i < rows; i += 500 {
				publish(t, ob, db, i, 500)
			}
			ctx := context.Background()
			q := fmt.Sprintf("UPDATE %s SET status = ?, next_attempt_at = NULL, expires_at = %s - 1000000", ob.opts.Table, ob.dialect.Now)
			if _, err := db.ExecContext(ctx, q, tables.StatusPublished); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			deleted := make([]int, cleaners)
			for i := range cleaners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := ob.Clean(ctx)
					if err != nil {
						t.Errorf("cleaner %d: %v", i, err)
					}
					deleted[i] = n
					var left int
					if err := db.NewSelect().TableExpr(ob.opts.Table).ColumnExpr("count(*)").Scan(ctx, &left); err != nil {
						t.Error(err)
					}
					if most := (cleaners - 1) * ob.opts.DeleteBatch; left > most {
						t.Errorf("cleaner %d returned with %d rows left, more than the %d the others may be deleting", i, left, most)
					}
				}()
			}
			wg.Wait()
			total := 0
			for _, n := range deleted {
				total += n
			}
			if total != rows {
				t.Errorf("cleaners deleted %v = %d rows, want %d", deleted, total, rows)
			}
			if c := statusCounts(t, ob); len(c) != 0 {
				t.Errorf("rows left after the cleaners: %v", c)
			}
		})
	}
}

func TestOutboxRunCleansPublishedRows(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob := newOutbox(t, db, ps, OutboxOptions{PublishedRetention: time.Microsecond, CleanInterval: 10 * time.Millisecond})
			var deleted atomic.Int64
			cleaned := make(chan struct{}, 1)
			ob.hooks = &outboxHooks{cleaned: func(n int) {
				deleted.Add(int64(n))
				select {
				case cleaned <- struct{}{}:
				default:
				}
			}}
			run(t, ob)
			publish(t, ob, db, 0, 5)
			got.waitDistinct(5)
			for deleted.Load() < 5 {
				<-cleaned
			}
			if c := statusCounts(t, ob); len(c) != 0 {
				t.Errorf("rows left after cleanup: %v", c)
			}
		})
	}
}

func TestNewOutboxRejectsBadOptions(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ps := newPubSub(t)
	if _, err := NewOutbox(nil, ps, OutboxOptions{}); err == nil {
		t.Error("nil db accepted")
	}
	for _, tc := range []struct {
		opts OutboxOptions
		want []string
	}{
		{OutboxOptions{BatchSize: -1, LeaseDuration: -time.Second}, []string{"BatchSize is -1", "LeaseDuration is -1s"}},
		{OutboxOptions{LocalRetries: 5, MaxRetries: 5}, []string{"LocalRetries (5) must be less than MaxRetries (5)"}},
		{OutboxOptions{PublishTimeout: 20 * time.Second}, []string{"PublishTimeout (20s) must be at most half of LeaseDuration (30s)"}},
		{OutboxOptions{PublishTimeout: -time.Second}, []string{"PublishTimeout is -1s"}},
		{OutboxOptions{Table: "outbox; DROP TABLE users"}, []string{"invalid table name"}},
		{OutboxOptions{Table: `outbox" --`}, []string{"invalid table name"}},
		{OutboxOptions{Table: "a.b.c"}, []string{"invalid table name"}},
		{OutboxOptions{Table: "1outbox"}, []string{"invalid table name"}},
		{OutboxOptions{Table: strings.Repeat("t", 49)}, []string{"invalid table name"}},
	} {
		_, err := NewOutbox(db, ps, tc.opts)
		if err == nil {
			t.Errorf("NewOutbox(%+v) accepted", tc.opts)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewOutbox(%+v) = %v, want it to mention %q", tc.opts, err, w)
			}
		}
	}
	ob, err := NewOutbox(db, ps, OutboxOptions{Table: "app.events_outbox"})
	if err != nil || ob.opts.Table != "app.events_outbox" || ob.opts.BatchSize != DefaultBatchSize {
		t.Errorf("schema-qualified table: %v", err)
	}
	for lease, want := range map[time.Duration]time.Duration{0: DefaultPublishTimeout, 6 * time.Second: 2 * time.Second} {
		ob, err := NewOutbox(db, ps, OutboxOptions{LeaseDuration: lease})
		if err != nil || ob.opts.PublishTimeout != want {
			t.Errorf("LeaseDuration %s: PublishTimeout defaults to %s (%v), want %s", lease, ob.opts.PublishTimeout, err, want)
		}
	}
}

// TestNoLocalRetries checks that NoLocalRetries turns the local tier off on
// both sides: a failed publish goes back to the table after one attempt,
// and the consumer's first retry waits the persistent tier's delay.
func TestNoLocalRetries(t *testing.T) {
	db := testenv.OpenSQLite(t)
	ps := newPubSub(t)
	pub := &flakyPublisher{Publisher: ps}
	pub.down.Store(true)
	ob := newOutbox(t, db, pub, OutboxOptions{
		LocalRetries: NoLocalRetries, LocalRetryInterval: time.Millisecond,
		RetryInterval: time.Hour, RetryMinAge: time.Hour, PollInterval: 10 * time.Millisecond,
	})
	ended := make(chan string, 1)
	ob.hooks = &outboxHooks{ended: func(_ int64, status string) { ended <- status }}
	run(t, ob)
	publish(t, ob, db, 0, 1)
	if status := <-ended; status != tables.StatusPending {
		t.Fatalf("the failed row ended its round %s, want pending", status)
	}
	if n := pub.attempts.Load(); n != 1 {
		t.Errorf("%d publish attempts before the row went back to the table, want 1 (no local retries)", n)
	}

	for _, bad := range []int{-2, -100} {
		if _, err := NewOutbox(db, ps, OutboxOptions{LocalRetries: bad}); err == nil || !strings.Contains(err.Error(), "NoLocalRetries") {
			t.Errorf("OutboxOptions.LocalRetries %d: %v, want an error naming NoLocalRetries", bad, err)
		}
		if _, err := NewConsumer(db, ps, ConsumerOptions{Group: "g", LocalRetries: bad}); err == nil || !strings.Contains(err.Error(), "NoLocalRetries") {
			t.Errorf("ConsumerOptions.LocalRetries %d: %v, want an error naming NoLocalRetries", bad, err)
		}
	}
	c, err := NewConsumer(db, ps, ConsumerOptions{Group: "g", LocalRetries: NoLocalRetries, RetryMinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.policy.Delay(1); d < time.Hour {
		t.Errorf("consumer's first retry waits %s without a local tier, want at least RetryMinAge (1h)", d)
	}
	c, err = NewConsumer(db, ps, ConsumerOptions{Group: "g", RetryMinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.policy.Delay(1); d > DefaultLocalRetryInterval {
		t.Errorf("consumer's first retry waits %s by default, want a local retry (at most %s)", d, DefaultLocalRetryInterval)
	}
}

// TestOutboxPublishOnly checks that an Outbox made without a publisher
// writes events, lists and requeues failed rows, and refuses to Run, and that
// a relay on another Outbox of the same table then publishes the events.
func TestOutboxPublishOnly(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ob := newOutbox(t, db, nil, OutboxOptions{})
			publish(t, ob, db, 0, 3)
			ctx := context.Background()
			if _, err := db.ExecContext(ctx, "UPDATE "+ob.opts.Table+" SET status = ?, next_attempt_at = NULL WHERE id = 1", tables.StatusFailed); err != nil {
				t.Fatal(err)
			}
			if failed, err := ob.Failed(ctx, 10); err != nil || len(failed) != 1 {
				t.Fatalf("Failed = %d rows, %v; want 1", len(failed), err)
			}
			if n, err := ob.RequeueFailed(ctx); n != 1 || err != nil {
				t.Fatalf("RequeueFailed = %d, %v; want 1", n, err)
			}
			runCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err := ob.Run(runCtx)
			if err == nil || !strings.Contains(err.Error(), "needs a publisher") || runCtx.Err() != nil {
				t.Fatalf("Run without a publisher = %v, want an error at once saying it needs a publisher", err)
			}
			ps := newPubSub(t)
			got := collect(t, ps)
			relay := newOutbox(t, db, ps, OutboxOptions{Table: ob.opts.Table})
			run(t, relay)
			got.waitDistinct(3)
		})
	}
}

func TestOutboxMigrateIdempotentAndConcurrent(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			table := testenv.TableName(t, "outbox")
			testenv.DropTables(t, db, table)
			ob, err := NewOutbox(db, newPubSub(t), OutboxOptions{Table: table, Logger: outboxLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			errs := make(chan error, 4)
			for range cap(errs) {
				go func() { errs <- ob.Migrate(ctx) }()
			}
			for range cap(errs) {
				if err := <-errs; err != nil {
					t.Errorf("concurrent Migrate: %v", err)
				}
			}
			if err := ob.Migrate(ctx); err != nil {
				t.Errorf("Migrate again: %v", err)
			}
			publish(t, ob, db, 0, 1)
		})
	}
}

func TestOutboxSchema(t *testing.T) {
	for _, dialect := range sqlstore.Dialects {
		stmts, err := OutboxSchema(dialect, "")
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(stmts, ";\n")
		for _, want := range []string{"CREATE TABLE IF NOT EXISTS eventgen_outbox (", "eventgen_outbox_claim", "eventgen_outbox_expiry", "message_id", "INSERT INTO eventgen_migrations"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s schema lacks %q:\n%s", dialect, want, all)
			}
		}
	}
	if _, err := OutboxSchema("oracle", ""); err == nil {
		t.Error("unknown dialect accepted")
	}
	if _, err := OutboxSchema("postgres", "x; DROP TABLE y"); err == nil {
		t.Error("table name injection accepted")
	}

	// A database set up from the printed schema needs no migration.
	db := testenv.OpenSQLite(t)
	stmts, err := OutboxSchema("sqlite", "printed_outbox")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{Table: "printed_outbox"})
	publish(t, ob, db, 0, 2)
}

// hangingPublisher blocks every publish until release is closed, like a
// broker connection that stopped answering, then passes it on.
type hangingPublisher struct {
	message.Publisher
	release chan struct{}
}

func (p *hangingPublisher) Publish(topic string, msgs ...*message.Message) error {
	<-p.release
	return p.Publisher.Publish(topic, msgs...)
}

func TestOutboxHungRelayLosesItsRows(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			hung := &hangingPublisher{Publisher: ps, release: make(chan struct{})}
			const lease = 300 * time.Millisecond
			// Two batches of 5: the first leased, the second (a backlog)
			// held by row locks where the database has SKIP LOCKED. Its
			// publishes time out after PublishTimeout (100ms) and its rows
			// go back to the table, due after RetryMinAge; its slots stay
			// taken by the calls that hang, so it publishes nothing more.
			stuck := newOutbox(t, db, hung, OutboxOptions{
				LeaseDuration: lease, BatchSize: 5, MaxInFlight: 10,
				RetryInterval: 10 * time.Millisecond, RetryMinAge: 10 * time.Millisecond,
			})
			claimed := make(chan int, 2)
			stuck.hooks = &outboxHooks{claimed: func(n int, _ bool) { claimed <- n }}
			publish(t, stuck, db, 0, 10)
			stopStuck := run(t, stuck)
			if n := <-claimed + <-claimed; n != 10 {
				t.Fatalf("stuck relay claimed %d rows, want 10", n)
			}
			healthy, err := NewOutbox(db, ps, OutboxOptions{Table: stuck.opts.Table, PollInterval: 20 * time.Millisecond, Logger: outboxLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			marked := countMarked(healthy)
			run(t, healthy)
			// The stuck relay gives its rows back, and the healthy one
			// publishes everything while the other's calls still hang.
			got.waitDistinct(10)
			marked.wait(t, 10)
			close(hung.release)
			stopStuck()
			var byHealthy int
			q := "SELECT COUNT(*) FROM " + stuck.opts.Table + " WHERE status = 'published' AND lock_owner = ?"
			if err := db.QueryRowContext(context.Background(), q, healthy.owner).Scan(&byHealthy); err != nil || byHealthy != 10 {
				t.Errorf("%d rows published by the healthy relay (%v), want 10", byHealthy, err)
			}
			// The stuck relay's publishes went out when it recovered: at
			// least once means these duplicates are allowed, and counted.
			_, dups := got.counts()
			t.Logf("%d duplicate deliveries from the relay that hung past its lease", dups)
		})
	}
}

func TestOutboxDrainsBacklog(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			// Large payloads: BatchBytes, not BatchSize, bounds batches.
			ob := newOutbox(t, db, ps, OutboxOptions{BatchSize: 50, BatchBytes: 20 << 10})
			body := strings.Repeat("b", 1000)
			const events = 300
			for i := 0; i < events; i += 100 {
				batch := make([]Event, 100)
				for j := range batch {
					batch[j] = testEvent{N: i + j, Body: body}
				}
				if err := ob.Publish(context.Background(), db, "eventgen-test", batch); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			var sizes []int
			locked := 0
			ob.hooks = &outboxHooks{claimed: func(n int, l bool) {
				mu.Lock()
				defer mu.Unlock()
				sizes = append(sizes, n)
				if l {
					locked += n
				}
			}}
			marked := countMarked(ob)
			run(t, ob)
			got.waitDistinct(events)
			marked.wait(t, events)
			mu.Lock()
			defer mu.Unlock()
			// 20 KiB holds 19 rows of ~1 KiB (plus one: the last row may
			// cross the bound).
			if m := slices.Max(sizes); m > 20 {
				t.Errorf("claims of %v rows, want at most 20 by BatchBytes", sizes)
			}
			if d.Name != "sqlite" && locked < events/2 {
				t.Errorf("%d of %d rows claimed in locked batches, want most of the backlog", locked, events)
			}
			if _, dups := got.counts(); dups != 0 {
				t.Errorf("%d duplicates", dups)
			}
			if c := statusCounts(t, ob); c[tables.StatusPublished] != events {
				t.Errorf("statuses %v", c)
			}
		})
	}
}

func TestOutboxLateCommitIsPublished(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		if d.Name == "sqlite" {
			continue // one writer: a transaction held open blocks the others
		}
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob := newOutbox(t, db, ps, OutboxOptions{PollInterval: 50 * time.Millisecond})
			run(t, ob)
			ctx := context.Background()
			// The late event is written first, in a transaction that stays
			// open while later events commit and are published, so that
			// claims move past its index entry.
			late, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer late.Rollback() //nolint:errcheck // committed below
			if err := ob.Publish(ctx, late, "eventgen-test", []Event{testEvent{N: 0}}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * hintMargin) // the gap between the two writes, not an assertion
			// Events of other keys: the open transaction holds its key's
			// counter, so an event of that key would wait for it.
			for i, n := 1, 0; n < 20; i++ {
				if (testEvent{N: i}).Key() != (testEvent{N: 0}).Key() {
					publish(t, ob, db, i, 1)
					n++
				}
			}
			got.waitDistinct(20)
			if got.message(0) != nil {
				t.Fatal("an uncommitted event was published")
			}
			if err := late.Commit(); err != nil {
				t.Fatal(err)
			}
			got.waitDistinct(21)
		})
	}
}

// TestRelayBatchesAStreamOfCommits checks that under a stream of commits,
// each waking the relay, the relay does not claim and mark once per commit:
// after a claim or a mark that was not a full batch, the next one waits at
// least minClaimLinger.
func TestRelayBatchesAStreamOfCommits(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			if d.Name == "sqlite" {
				// Writers queue in the pool, in turn, rather than in
				// SQLite's busy handler, where the producers' tight loop
				// would leave the relay a few claims a second.
				db.SetMaxOpenConns(1)
			}
			ps := newPubSub(t)
			got := collect(t, ps)
			// Batches too large to fill: after a full claim the relay may
			// hold the next batch by row locks and mark it on its own.
			ob := newOutbox(t, db, ps, OutboxOptions{BatchSize: 1000})
			var mu sync.Mutex
			var claims, marks []statementAt
			ob.hooks = &outboxHooks{
				claimed: func(n int, _ bool) {
					if n > 0 {
						mu.Lock()
						claims = append(claims, statementAt{time.Now(), n})
						mu.Unlock()
					}
				},
				published: func(ids []int64) {
					mu.Lock()
					marks = append(marks, statementAt{time.Now(), len(ids)})
					mu.Unlock()
				},
			}
			run(t, ob)

			var wg sync.WaitGroup
			var commits atomic.Int64
			start := time.Now()
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(start) < time.Second {
						n := int(commits.Add(1)) - 1
						if err := db.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
							return ob.Publish(ctx, tx, "eventgen-test", []Event{testEvent{N: n}})
						}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			got.waitDistinct(int(commits.Load()))
			// Delivery comes before the mark: wait for the marks too.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				mu.Lock()
				marked := 0
				for _, m := range marks {
					marked += m.rows
				}
				mu.Unlock()
				if marked >= int(commits.Load()) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d rows marked published after 30s", marked, commits.Load())
				}
			}

			mu.Lock()
			defer mu.Unlock()
			t.Logf("%d commits: %d claims, %d mark statements", commits.Load(), len(claims), len(marks))
			check := func(what string, ss []statementAt, forced func(prev, next statementAt) bool) {
				checked := 0
				for i := 1; i < len(ss); i++ {
					if forced(ss[i-1], ss[i]) {
						continue
					}
					checked++
					if gap := ss[i].at.Sub(ss[i-1].at); gap < minClaimLinger {
						t.Errorf("%s %d (%d rows) came %v after the one before (%d rows), want at least %v", what, i, ss[i].rows, gap, ss[i-1].rows, minClaimLinger)
						return
					}
				}
				if checked == 0 {
					t.Errorf("no %s pairs to check", what)
				}
			}
			batch := ob.opts.BatchSize
			// A full claim is followed at once by another.
			check("claim", claims, func(prev, _ statementAt) bool { return prev.rows >= batch })
			// A batch's worth of marks is written at once.
			check("mark", marks, func(_, next statementAt) bool { return next.rows >= batch })
		})
	}
}

// statementAt is when a relay statement ended, and how many rows it took.
type statementAt struct {
	at   time.Time
	rows int
}

// TestStatementTimeLinger checks the relay's wait between statements: the
// minimum while statements run at their usual speed, longer as they slow
// down, at most maxClaimLinger, and back to the minimum when they recover.
func TestStatementTimeLinger(t *testing.T) {
	var st statementTime
	if got := st.linger(); got != minClaimLinger {
		t.Errorf("no samples: linger %v, want %v", got, minClaimLinger)
	}
	for range 50 {
		st.add(time.Millisecond)
	}
	if got := st.linger(); got != minClaimLinger {
		t.Errorf("steady 1ms statements: linger %v, want %v", got, minClaimLinger)
	}
	for range 50 {
		st.add(5 * time.Millisecond)
	}
	if got := st.linger(); got < 4*minClaimLinger || got > 5*minClaimLinger {
		t.Errorf("statements 5x slower: linger %v, want about %v", got, 5*minClaimLinger)
	}
	for range 50 {
		st.add(time.Second)
	}
	if got := st.linger(); got != maxClaimLinger {
		t.Errorf("very slow statements: linger %v, want the cap %v", got, maxClaimLinger)
	}
	for range 100 {
		st.add(time.Millisecond)
	}
	if got := st.linger(); got > minClaimLinger*21/20 {
		t.Errorf("recovered: linger %v, want about %v", got, minClaimLinger)
	}
}

// TestOutboxPublishBeforeMigrate checks that Publish into a table that does
// not exist yet fails with the database's error, not a hang, and that once
// the table is migrated Publish works at once (through Bun until the failed
// preparation is tried again).
func TestOutboxPublishBeforeMigrate(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			table := testenv.TableName(t, "outbox")
			testenv.DropTables(t, db, table)
			ps := newPubSub(t)
			got := collect(t, ps)
			ob, err := NewOutbox(db, ps, OutboxOptions{Table: table, Logger: outboxLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i := range 3 {
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					return ob.Publish(ctx, tx, "eventgen-test", []Event{testEvent{N: i}})
				})
				if err == nil || !strings.Contains(err.Error(), table) {
					t.Fatalf("publish %d before Migrate: %v, want an error naming %s", i, err, table)
				}
			}
			if err := ob.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			publish(t, ob, db, 0, 1)
			publish(t, ob, db, 1, 2)
			run(t, ob)
			got.waitDistinct(3)
		})
	}
}

// TestOutboxPublishesAKeyInSequence: the events of one key, committed one
// after another, carry sequences 1..n, and a relay that publishes one at a
// time calls its publisher in that order, even for rows claimed together.
func TestOutboxPublishesAKeyInSequence(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			pub := &sequenceRecorder{}
			ob := newOutbox(t, db, pub, OutboxOptions{MaxInFlight: 1})
			const n = 40
			for range n {
				// testEvent{N: 7} and its multiples share key k0.
				publish(t, ob, db, 7, 1)
			}
			run(t, ob)
			deadline := time.Now().Add(testTimeout)
			for len(pub.sequences()) < n {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d events published", len(pub.sequences()), n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			got := pub.sequences()
			for i, seq := range got {
				if seq != int64(i+1) {
					t.Fatalf("sequences published %v, want 1..%d in order", got, n)
				}
			}
		})
	}
}

// sequenceRecorder is a publisher that records the sequence of each
// message in the order of the calls.
type sequenceRecorder struct {
	mu  sync.Mutex
	got []int64
}

func (p *sequenceRecorder) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		env, err := wire.Decode(m, math.MaxInt)
		if err != nil {
			return err
		}
		p.got = append(p.got, env.Sequence)
	}
	return nil
}

func (p *sequenceRecorder) Close() error { return nil }

func (p *sequenceRecorder) sequences() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}
