package sqlbroker_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport/sqlbroker"
)

// sqlCase is a SQL transport with a database handle of the test's own on
// the same database.
type sqlCase struct {
	name string
	url  string
	db   *sql.DB
}

func sqlCases(t *testing.T) []sqlCase {
	t.Helper()
	dbs := make(map[string]testenv.Database)
	for _, d := range testenv.Databases(t) {
		dbs[d.Name] = d
	}
	var cases []sqlCase
	for _, tc := range testenv.SQLTransports(t) {
		cases = append(cases, sqlCase{name: tc.Name, url: tc.URL, db: dbs[tc.Name].Open(t).DB})
	}
	if len(cases) == 0 {
		t.Skip("no SQL database configured")
	}
	return cases
}

func open(t *testing.T, rawURL string, opts sqlbroker.Options) *sqlbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts.Logger = testenv.Logger(t)
	b, err := sqlbroker.Open(ctx, rawURL, opts)
	if err != nil {
		testenv.Unavailable(t, "sql", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// receive acks n messages from a new subscription to topic in group
// billing and returns their payloads by UUID.
func receive(t *testing.T, b *sqlbroker.Broker, topic string, n int) map[string][]byte {
	t.Helper()
	sub, err := b.Subscriber("billing")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string][]byte)
	for len(got) < n {
		select {
		case m := <-ch:
			got[m.UUID] = m.Payload
			m.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("received %d of %d messages", len(got), n)
		}
	}
	return got
}

// payloads are what a general Watermill publisher may send: not JSON, not
// UTF-8, empty.
var payloads = map[string][]byte{
	"text":   []byte("plain text, not JSON"),
	"binary": {0x00, 0xff, 0xfe, 0x80, 0x01, '"', '\\', 0x00},
	"empty":  {},
	"json":   []byte(`{"n": 1}`),
}

// TestAnyPayload publishes payloads that are not JSON and checks that each
// arrives as sent.
func TestAnyPayload(t *testing.T) {
	for _, c := range sqlCases(t) {
		t.Run(c.name, func(t *testing.T) {
			b := open(t, c.url, sqlbroker.Options{})
			topic := testenv.Topic(t, "payload")
			t.Cleanup(func() { b.DeleteTopic(context.Background(), topic) })
			for id, p := range payloads {
				if err := b.Publisher().Publish(topic, message.NewMessage(id, p)); err != nil {
					t.Fatalf("publish %s payload: %v", id, err)
				}
			}
			for id, p := range receive(t, b, topic, len(payloads)) {
				if !bytes.Equal(p, payloads[id]) {
					t.Errorf("%s payload arrived as %q, want %q", id, p, payloads[id])
				}
			}
		})
	}
}

// TestMigratesJSONPayloadColumn creates a topic's table as watermill-sql's
// default schema does, with a JSON payload column, and a message in it.
// The broker must alter the column on first use, keep the message, and
// then take any payload; a second broker must find nothing to do.
func TestMigratesJSONPayloadColumn(t *testing.T) {
	for _, c := range sqlCases(t) {
		t.Run(c.name, func(t *testing.T) {
			topic := testenv.Topic(t, "migrate")
			var schema wsql.SchemaAdapter = wsql.DefaultPostgreSQLSchema{}
			if c.name == "mysql" {
				schema = wsql.DefaultMySQLSchema{}
			}
			old, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(c.db), wsql.PublisherConfig{
				SchemaAdapter: schema, AutoInitializeSchema: true,
			}, watermill.NopLogger{})
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Publish(topic, message.NewMessage("json", payloads["json"])); err != nil {
				t.Fatalf("publish through the JSON schema: %v", err)
			}
			b := open(t, c.url, sqlbroker.Options{})
			t.Cleanup(func() { b.DeleteTopic(context.Background(), topic) })
			// MariaDB's JSON is LONGTEXT with a JSON check.
			if got := payloadType(t, c, topic); got != "json" && got != "longtext" {
				t.Fatalf("payload column before migration is %s, want json", got)
			}
			for id, p := range payloads {
				if id == "json" {
					continue
				}
				if err := b.Publisher().Publish(topic, message.NewMessage(id, p)); err != nil {
					t.Fatalf("publish %s payload after migration: %v", id, err)
				}
			}
			want := map[string]string{"postgres": "bytea", "mysql": "longblob"}[c.name]
			if got := payloadType(t, c, topic); got != want {
				t.Errorf("payload column after migration is %s, want %s", got, want)
			}
			again := open(t, c.url, sqlbroker.Options{})
			for id, p := range receive(t, again, topic, len(payloads)) {
				if !bytes.Equal(p, payloads[id]) {
					t.Errorf("%s payload arrived as %q, want %q", id, p, payloads[id])
				}
			}
		})
	}
}

func payloadType(t *testing.T, c sqlCase, topic string) string {
	t.Helper()
	q := "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'payload'"
	if c.name == "mysql" {
		q = "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'payload'"
	}
	var dt string
	if err := c.db.QueryRow(q, "watermill_"+topic).Scan(&dt); err != nil {
		t.Fatalf("payload column type: %v", err)
	}
	return strings.ToLower(dt)
}

// TestPoolIsBounded publishes and consumes from many goroutines on a
// broker bounded to 3 connections, and watches PostgreSQL's own count of
// the broker's connections (by its application_name).
func TestPoolIsBounded(t *testing.T) {
	var c sqlCase
	for _, sc := range sqlCases(t) {
		if sc.name == "postgres" {
			c = sc
		}
	}
	if c.url == "" {
		t.Skip("needs PostgreSQL")
	}
	const bound = 3
	app := "eventgen-pool-" + watermill.NewShortUUID()
	u, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	b := open(t, u.String(), sqlbroker.Options{MaxConns: bound})
	topics := []string{testenv.Topic(t, "pool"), testenv.Topic(t, "pool")}
	for _, topic := range topics {
		t.Cleanup(func() { b.DeleteTopic(context.Background(), topic) })
	}

	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() {
		n := 0
		for {
			var c2 int
			if err := c.db.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&c2); err == nil {
				n = max(n, c2)
			}
			select {
			case <-stop:
				most <- n
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	// Subscriptions stay open until the count is taken: closing one
	// cancels its query, and pgx then drops the connection, whose server
	// process may outlive it for a moment beside its replacement.
	var subs sync.WaitGroup
	received := make(chan struct{}, 100)
	for _, topic := range topics {
		for range 3 {
			sub, err := b.Subscriber("billing")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sub.Close() })
			ch, err := sub.Subscribe(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			subs.Add(1)
			go func() {
				defer subs.Done()
				for m := range ch {
					m.Ack()
					received <- struct{}{}
				}
			}()
		}
	}
	var pubs sync.WaitGroup
	const publishers, each = 16, 5
	for i := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for j := range each {
				if err := b.Publisher().Publish(topics[i%2], message.NewMessage(fmt.Sprintf("%d-%d", i, j), []byte("x"))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	pubs.Wait()
	for range publishers * each {
		select {
		case <-received:
		case <-time.After(30 * time.Second):
			t.Fatal("not every message was received within 30s")
		}
	}
	close(stop)
	if n := <-most; n > bound {
		t.Errorf("the broker held %d connections at once, over its bound of %d", n, bound)
	} else {
		t.Logf("at most %d connections at once (bound %d)", n, bound)
	}
}

// TestNegativeMaxConns checks that an invalid bound is an error from Open.
func TestNegativeMaxConns(t *testing.T) {
	_, err := sqlbroker.Open(context.Background(), "postgres://127.0.0.1:1/x", sqlbroker.Options{MaxConns: -1})
	if err == nil || !strings.Contains(err.Error(), "MaxConns") {
		t.Fatalf("Open with MaxConns -1: %v, want an error about MaxConns", err)
	}
}
