package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// testEvent is an event of the fixture's outbox.
type testEvent struct {
	OrderID string `json:"order_id"`
	Note    string `json:"note"`
}

func (testEvent) EventName() string { return "OrderPlaced" }
func (testEvent) EventVersion() int { return 1 }
func (testEvent) Topic() string     { return "shop.orders" }
func (testEvent) Validate() error   { return nil }
func (e testEvent) Key() string     { return e.OrderID }

// xss is a payload, key part and error that must render as text.
const xss = `<script>alert("xss")</script>"><img src=x onerror=alert(1)>`

// fixture is an outbox and a consumer group on one database, with rows.
type fixture struct {
	db       *bun.DB
	outbox   *eventgen.Outbox
	consumer *eventgen.Consumer
	group    string
	// ids of outbox rows by role.
	failed, pending, scheduled, published, evil int64
	// inboxFailed and inboxEvil are inbox row ids.
	inboxFailed, inboxEvil int64
}

// newFixture migrates an outbox and an inbox in db and writes: 1 failed,
// 1 pending, 1 scheduled, 1 failed event whose payload, key and error
// hold HTML injection, and published events (3 in the last hour); in the
// inbox, 1 failed message, 1 failed with injection, and succeeded ones.
func newFixture(t testing.TB, db *bun.DB, published int) *fixture {
	t.Helper()
	ctx := context.Background()
	outTable, inTable := testenv.TableName(t, "console_out"), testenv.TableName(t, "console_in")
	testenv.DropTables(t, db, outTable, inTable)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ob, err := eventgen.NewOutbox(db, nil, eventgen.OutboxOptions{Table: outTable, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: "billing", Table: inTable, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cons.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, outbox: ob, consumer: cons, group: "billing"}
	publish := func(e testEvent, opts ...eventgen.PublishOption) int64 {
		t.Helper()
		if err := ob.Publish(ctx, db, "test", []eventgen.Event{e}, opts...); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+outTable).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i := range published {
		id := publish(testEvent{OrderID: fmt.Sprintf("order-%d", i), Note: "fine"})
		f.published = id
		// The last three were published in the last hour; the others a
		// day ago, outside the chart.
		ago := int64(25 * time.Hour / time.Microsecond)
		if i >= published-3 {
			ago = int64(time.Duration(i%3+1) * time.Minute / time.Microsecond)
		}
		exec(fmt.Sprintf("UPDATE %s SET status = 'published', published_at = created_at - ?, expires_at = created_at + ?, next_attempt_at = NULL WHERE id = ?", outTable),
			ago, int64(24*time.Hour/time.Microsecond), id)
	}
	fail := func(id int64, lastErr string) {
		exec(fmt.Sprintf("UPDATE %s SET status = 'failed', attempts = 10, next_attempt_at = NULL, expires_at = created_at + ?, last_error = ? WHERE id = ?", outTable),
			int64(15*24*time.Hour/time.Microsecond), lastErr, id)
	}
	f.failed = publish(testEvent{OrderID: "order-failed", Note: "broker said no"})
	fail(f.failed, "publish: broker unavailable\ngoroutine 1 [running]:\nmain.main()")
	f.pending = publish(testEvent{OrderID: "order-pending"})
	f.scheduled = publish(testEvent{OrderID: "order-scheduled"}, eventgen.WithDelay(time.Hour))
	f.evil = publish(testEvent{OrderID: "order-evil", Note: xss}, eventgen.WithHeader("x-note", xss))
	fail(f.evil, "boom: "+xss)

	insert := func(msgID, status, payload, lastErr string) int64 {
		t.Helper()
		exec(fmt.Sprintf(`INSERT INTO %s (consumer_group, message_id, name, version, topic, msg_key, source, event_time, payload, headers,
			status, attempts, last_error, created_at, next_attempt_at, handled_at, expires_at)
			VALUES (?, ?, 'OrderPlaced', 1, 'shop.orders', ?, 'test', 0, ?, '{"x-note":"`+strings.ReplaceAll(xss, `"`, `\"`)+`"}', ?, 3, ?, 1, NULL, 1, 9000000000000000)`, inTable),
			"billing", msgID, msgID, []byte(payload), status, lastErr)
		var id int64
		if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+inTable).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	insert("m-ok-1", "succeeded", `{"ok":true}`, "")
	f.inboxFailed = insert("m-failed", "failed", `{"order_id":"x"}`, "handler: out of stock")
	f.inboxEvil = insert("m-evil", "failed", `{"note":`+jsonString(xss)+`}`, "panic: "+xss)
	return f
}

// blockedKey is a key of the fixture's group blocked on a failed event:
// event 1 applied, event 2 failed (kept), events 3 and 4 held behind it.
type blockedKey struct {
	key string
	// next is the row id of event 2, held those of events 3 and 4.
	next int64
	held []int64
}

// addBlockedKey writes a blocked key to the fixture's group, as the
// consumer leaves one whose event 2 failed for good; or, for a key that
// starts with "missing", one whose event 2 never arrived.
func (f *fixture) addBlockedKey(t testing.TB, key string) blockedKey {
	t.Helper()
	ctx := context.Background()
	table := f.consumer.Table()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := f.db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(fmt.Sprintf("INSERT INTO %s (consumer_group, stream, source, topic, msg_key, seq, message_id, updated_at) VALUES (?, ?, 'test', 'shop.orders', ?, 1, ?, 1)",
		tables.KeysTable(table)), f.group, tables.StreamID("test", "shop.orders", key), key, key+"-1")
	b := blockedKey{key: key}
	for i, status := range []string{"succeeded", "failed", "held", "held"} {
		seq := int64(i + 1)
		if status == "failed" && strings.HasPrefix(key, "missing") {
			continue // the group never received event 2
		}
		var expires, handled any
		lastErr, attempts := "", 0 // a held row has not run
		switch status {
		case "succeeded":
			expires, handled, attempts = int64(9000000000000000), int64(1), 1
		case "failed":
			handled, lastErr, attempts = int64(1), "handler: stock service said "+xss, 3
		}
		exec(fmt.Sprintf(`INSERT INTO %s (consumer_group, message_id, name, version, topic, msg_key, seq, source, event_time, payload, headers,
			status, attempts, last_error, created_at, next_attempt_at, handled_at, expires_at)
			VALUES (?, ?, 'OrderPlaced', 1, 'shop.orders', ?, ?, 'test', 0, ?, '{}', ?, ?, ?, ?, NULL, ?, ?)`, table),
			f.group, fmt.Sprintf("%s-%d", key, seq), key, seq, []byte(`{"order_id":"x"}`), status, attempts, lastErr, time.Now().UnixMicro()+seq, handled, expires)
		var id int64
		if err := f.db.QueryRowContext(ctx, "SELECT id FROM "+table+" WHERE message_id = ?", fmt.Sprintf("%s-%d", key, seq)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		switch {
		case seq == 2:
			b.next = id
		case seq > 2:
			b.held = append(b.held, id)
		}
	}
	return b
}

// inboxStatus returns the status of inbox row id, or "" if it is gone.
func (f *fixture) inboxStatus(t testing.TB, id int64) string {
	t.Helper()
	return rowStatus(t, f.consumer.Row, id)
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer(`"`, `\"`, `<`, `\u003c`).Replace(s) + `"`
}

// status returns the status of outbox row id, or "" if it is gone.
func (f *fixture) status(t testing.TB, id int64) string {
	t.Helper()
	return rowStatus(t, f.outbox.Row, id)
}

// rowStatus returns the status of the row id that row reads, or "" if it
// is gone.
func rowStatus(t testing.TB, row func(context.Context, int64) (eventgen.StoredRow, bool, error), id int64) string {
	t.Helper()
	r, ok, err := row(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return r.Status
}

// auditLog collects the console's log records.
type auditLog struct {
	mu      sync.Mutex
	records []map[string]any
}

func (a *auditLog) Enabled(context.Context, slog.Level) bool { return true }
func (a *auditLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(at slog.Attr) bool {
		m[at.Key] = at.Value.Any()
		return true
	})
	a.mu.Lock()
	a.records = append(a.records, m)
	a.mu.Unlock()
	return nil
}
func (a *auditLog) WithAttrs([]slog.Attr) slog.Handler { return a }
func (a *auditLog) WithGroup(string) slog.Handler      { return a }

// actions returns the audit records of actions.
func (a *auditLog) actions() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]any
	for _, r := range a.records {
		if r["msg"] == "console: action" {
			out = append(out, r)
		}
	}
	return out
}

const testToken = "test-token-0123456789abcdef"

// newConsole builds the console of f with token auth under /ops.
func newConsole(t testing.TB, f *fixture, mod func(*Options)) (*Console, *auditLog) {
	t.Helper()
	auth, err := TokenAuth(testToken)
	if err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	opts := Options{Authorize: auth, Prefix: "/ops", Logger: slog.New(audit), PageSize: 2}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(f.outbox, []*eventgen.Consumer{f.consumer}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, audit
}

// serve starts the console on a mux under /ops, on 127.0.0.1.
func serve(t testing.TB, c *Console) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/ops/", c)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}
