//go:build unix

package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// capture is a slog destination that keeps everything and signals each
// record at warning level or above.
type capture struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	warn chan struct{}
}

func newCapture() *capture { return &capture{warn: make(chan struct{}, 1)} }

func (c *capture) logger() *slog.Logger {
	return slog.New(&captureHandler{c: c, h: slog.NewJSONHandler(&c.buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

type captureHandler struct {
	c *capture
	h slog.Handler
}

func (h *captureHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }
func (h *captureHandler) Handle(ctx context.Context, r slog.Record) error {
	h.c.mu.Lock()
	err := h.h.Handle(ctx, r)
	h.c.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		select {
		case h.c.warn <- struct{}{}:
		default:
		}
	}
	return err
}
func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureHandler{c: h.c, h: h.h.WithAttrs(as)}
}
func (h *captureHandler) WithGroup(g string) slog.Handler {
	return &captureHandler{c: h.c, h: h.h.WithGroup(g)}
}

// malformed injects bad messages straight into the broker, then good
// events through the outbox: the bad ones end failed or skipped with a
// reason, the good ones behind them are all handled, nothing crashes, and
// no payload reaches the logs.
func malformed(t *testing.T, e *env, sz sizes) string {
	ctx := context.Background()
	logs := newCapture()
	n := e.inProcessNode(t, chaos.NodeConfig{Relays: 1, Logger: logs.logger()})
	marker := "PAYLOADMARKER" + randHex(6)
	good, _ := json.Marshal(chaos.Order(chaos.KindGood))
	withNote := strings.Replace(string(good), `"labels"`, `"note":"`+marker+`","labels"`, 1)
	type bad struct {
		name    string
		payload string
		headers map[string]string // "" deletes a header
		want    string            // status: failed, skipped, or failed|skipped
	}
	cases := []bad{
		{"bad-json", `{"order_id": "` + marker, nil, "failed"},
		{"wrong-types", `{"order_id": 123, "customer_id": true, "note": "` + marker + `"}`, nil, "failed"},
		{"invalid-enum", strings.Replace(withNote, `"pending"`, `"bogus"`, 1), nil, "failed"},
		{"missing-ce_type", withNote, map[string]string{"ce_type": ""}, "failed"},
		{"unknown-name", withNote, map[string]string{"ce_type": "NoSuchEvent"}, "skipped"},
		{"bad-version", withNote, map[string]string{"ce_eventversion": "abc"}, "failed"},
		{"bad-time", withNote, map[string]string{"ce_time": "yesterday"}, "failed"},
		{"huge-header", withNote, map[string]string{"x-big": strings.Repeat("h", 5000) + marker}, "failed"},
		{"not-utf8-type", withNote, map[string]string{"ce_type": "Order\xff\xfePlaced"}, "failed|skipped"},
		{"empty-payload", "", nil, "failed"},
		{"huge-payload", `{"order_id":"` + strings.Repeat("x", 512<<10) + marker + `"}`, nil, "failed"},
	}
	ids := map[string]bad{}
	pub := n.Transport.Publisher()
	for _, c := range cases {
		id := uuid.NewString()
		m := message.NewMessage(id, []byte(c.payload))
		for k, v := range map[string]string{"ce_id": id, "ce_type": shopevents.OrderPlaced{}.EventName(), "ce_source": "chaos",
			"ce_specversion": "1.0", "ce_time": time.Now().UTC().Format(time.RFC3339Nano), "ce_eventversion": "1",
			"content-type": "application/json"} {
			m.Metadata.Set(k, v)
		}
		for k, v := range c.headers {
			if v == "" {
				delete(m.Metadata, k)
			} else {
				m.Metadata.Set(k, v)
			}
		}
		if err := pub.Publish(e.ns+shopevents.TopicOrders, m); err != nil {
			t.Errorf("publish %s: %v", c.name, err)
			continue
		}
		ids[id] = c
	}
	for range sz.malformedGoodAfter {
		if _, err := chaos.PublishOne(ctx, n.DB, n.Outbox, e.tables, chaos.KindGood, false); err != nil {
			t.Fatal(err)
		}
	}
	r, ok, err := chaos.WaitConverged(ctx, e.db, e.tables, e.groups, e.rawDir, sz.converge)
	if err != nil || !ok {
		t.Fatalf("good events behind malformed ones not all handled: %+v, %v", r, err)
	}
	counts := map[string]int{}
	waitFor(t, sz.converge, "malformed messages settled", func() (bool, error) {
		clear(counts)
		rows, err := e.db.QueryContext(ctx, "SELECT consumer_group, message_id, status, last_error FROM "+e.tables.Inbox)
		if err != nil {
			return false, err
		}
		defer rows.Close()
		settled := 0
		for rows.Next() {
			var g, id, status string
			var reason *string
			if err := rows.Scan(&g, &id, &status, &reason); err != nil {
				return false, err
			}
			c, ok := ids[id]
			if !ok {
				continue
			}
			if !strings.Contains(c.want, status) {
				return false, fmt.Errorf("%s in %s: status %s, want %s", c.name, g, status, c.want)
			}
			if reason == nil || *reason == "" {
				return false, fmt.Errorf("%s in %s: %s without a reason", c.name, g, status)
			}
			counts[status]++
			settled++
		}
		return settled == len(ids)*len(e.groups), rows.Err()
	})
	if err := n.Stop(); err != nil {
		t.Errorf("relay or consumer ended with an error: %v", err)
	}
	if out := logs.String(); strings.Contains(out, marker) {
		i := strings.Index(out, marker)
		t.Errorf("a payload reached the logs: ...%s...", out[max(0, i-300):i])
	}
	if r, err = chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir); err != nil || !r.OK() {
		t.Errorf("check: %+v, %v", r, err)
	}
	return r.Line("malformed", e.b.name, fmt.Sprintf("injected=%d failed=%d skipped=%d logged_payloads=0",
		len(ids), counts["failed"], counts["skipped"]))
}

// brokerOutage makes every publish fail for a while, as a broker that is
// down, while producers go on: business transactions keep committing,
// publish attempts stay bounded by backoff, and delivery resumes.
func brokerOutage(t *testing.T, e *env, sz sizes) string {
	ctx := context.Background()
	n := e.inProcessNode(t, chaos.NodeConfig{Relays: 1, TuneOutbox: func(o *eventgen.OutboxOptions) {
		o.RetryInterval, o.MaxRetries = sz.outageRetryInterval, 30
	}})
	p := n.Publishers[0]
	span := sz.outage + 2*time.Second
	events := int(sz.outageRate * span.Seconds())
	type out struct {
		st  chaos.ProducerStats
		err error
	}
	done := make(chan out, 1)
	go func() {
		st, err := chaos.RunProducer(ctx, n.DB, n.Outbox, e.tables, chaos.ProducerOptions{Events: events, Workers: 4, Rate: sz.outageRate})
		done <- out{st, err}
	}()
	time.Sleep(time.Second)
	p.SetDown(true)
	before := p.Attempts()
	time.Sleep(sz.outage)
	p.SetDown(false)
	during := p.Attempts() - before
	res := <-done
	if res.err != nil || res.st.Errors != 0 {
		t.Errorf("producer during the outage: %+v, %v", res.st, res.err)
	}
	r, ok, err := chaos.WaitConverged(ctx, e.db, e.tables, e.groups, e.rawDir, sz.converge)
	if err != nil || !ok {
		t.Errorf("delivery did not resume: %+v, %v", r, err)
	}
	if err := n.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if r, err = chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir); err != nil || !r.OK() {
		t.Errorf("check: %+v, %v", r, err)
	}
	perID := p.OutageAttempts()
	most := 0
	for _, k := range perID {
		most = max(most, k)
	}
	if most > sz.outageMaxAttemptsPerEvent {
		t.Errorf("an event was tried %d times during a %s outage, over %d: no backoff", most, sz.outage, sz.outageMaxAttemptsPerEvent)
	}
	return r.Line("broker-outage", e.b.name, fmt.Sprintf("outage=%s attempts_during=%d attempts_per_s=%.1f max_attempts_per_event=%d events_tried=%d producer_errors=%d",
		sz.outage, during, float64(during)/sz.outage.Seconds(), most, len(perID), res.st.Errors))
}

// TestNoSecretsInLogs gives URLs and DSNs with a password to transports and
// runtimes that fail, and checks that the password is in no error and no
// log.
func TestNoSecretsInLogs(t *testing.T) {
	pw := "chaosSecret" + randHex(6)
	urls := map[string]string{
		"amqp":     "amqp://u:" + pw + "@127.0.0.1:1/",
		"nats":     "nats://u:" + pw + "@127.0.0.1:1",
		"redis":    "redis://u:" + pw + "@127.0.0.1:1/0",
		"postgres": "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable",
		"mysql":    "mysql://u:" + pw + "@127.0.0.1:1/db",
		"bad-url":  "amqp://u:" + pw + "@[::1/",
	}
	if a := testservices.Optional(t, "amqp"); a != "" { // the real broker, with a wrong password
		if u, err := url.Parse(a); err == nil {
			u.User = url.UserPassword("guest", pw)
			urls["amqp-wrong-password"] = u.String()
		}
	}
	for name, raw := range urls {
		t.Run("transport-"+name, func(t *testing.T) {
			logs := newCapture()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr, err := transport.Open(ctx, raw, transport.Options{Logger: logs.logger()})
			if err == nil {
				tr.Close()
				t.Fatalf("Open succeeded")
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the password is in the error: %v", err)
			}
			if strings.Contains(logs.String(), pw) {
				t.Errorf("the password is in the logs: %s", logs.String())
			}
			t.Logf("error: %v", err)
		})
	}
	dbs := map[string]string{
		"postgres": "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"mysql":    "u:" + pw + "@tcp(127.0.0.1:1)/db?timeout=2s",
	}
	for name, dsn := range dbs {
		t.Run("runtime-"+name, func(t *testing.T) {
			logs := newCapture()
			log := logs.logger()
			db, err := chaos.OpenDB(name, dsn)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer db.Close()
			tr, err := transport.Open(context.Background(), "", transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			tables := chaos.NewTables(randHex(4))
			ob, err := eventgen.NewOutbox(db, tr.Publisher(), chaos.RelayOptions(tables, log))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := tr.Subscriber("billing")
			if err != nil {
				t.Fatal(err)
			}
			c, err := chaos.NewConsumer(db, chaos.NewSubscriber(sub, "", "billing", nil, nil), tables,
				chaos.ConsumerOptions(tables, "billing", 0, log), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var errs []error
			errs = append(errs, ob.Migrate(ctx), c.Migrate(ctx))
			_, err = chaos.PublishOne(ctx, db, ob, tables, chaos.KindGood, false)
			errs = append(errs, err)
			_, err = ob.Failed(ctx, 10)
			errs = append(errs, err)
			// Run both until each has logged its failure.
			rctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); _ = ob.Run(rctx) }()
			go func() { defer wg.Done(); errs = append(errs, c.Run(rctx)) }()
			for range 2 {
				select {
				case <-logs.warn:
				case <-time.After(15 * time.Second):
					t.Error("no failure logged within 15s")
				}
			}
			cancel()
			wg.Wait()
			for _, err := range errs {
				if err != nil && strings.Contains(err.Error(), pw) {
					t.Errorf("the password is in an error: %v", err)
				}
			}
			if out := logs.String(); strings.Contains(out, pw) {
				t.Errorf("the password is in the logs: %s", out)
			}
		})
	}
}
