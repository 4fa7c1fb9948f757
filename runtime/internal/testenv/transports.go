package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/transport"
)

// TransportCase is one broker a suite runs against.
type TransportCase struct {
	// Name is mem, amqp, nats, redis, postgres or mysql.
	Name string
	// URL opens the broker (it may hold a password: do not log it; use
	// transport.Redact). Empty for mem.
	URL string
	// InProcess is true for mem, whose publisher and subscribers must share
	// one *transport.Transport (and one process).
	InProcess bool
	// ReplicasShare is true where the subscribers of one group consume at
	// the same time (false for SQL, where they take turns on a lock).
	ReplicasShare bool
	// RedeliveryDelay is how long a message left unacked by a stopped
	// subscriber waits before it is delivered again: 0 where that is at
	// once, 30s for Redis, which claims it once it has been idle that long.
	RedeliveryDelay time.Duration
}

// Open opens a fresh Transport for t, closed at t's cleanup. An unreachable
// broker skips t, or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func (c TransportCase) Open(t testing.TB) *transport.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tr, err := transport.Open(ctx, c.URL, transport.Options{Logger: Logger(t)})
	if err != nil {
		Unavailable(t, c.Name, err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close %s transport: %v", c.Name, err)
		}
	})
	return tr
}

// Transports returns the in-process transport and every broker whose
// variable is set: EVENTGEN_TEST_AMQP, EVENTGEN_TEST_NATS and
// EVENTGEN_TEST_REDIS. Under EVENTGEN_TEST_REQUIRE_SERVICES=1 an unset
// variable fails t. The SQL transports are in SQLTransports.
func Transports(t testing.TB) []TransportCase {
	t.Helper()
	cases := []TransportCase{{Name: "mem", InProcess: true, ReplicasShare: true}}
	for _, s := range []struct {
		name       string
		redelivery time.Duration
	}{{"amqp", 0}, {"nats", 0}, {"redis", 30 * time.Second}} {
		u := testservices.Optional(t, s.name)
		if u == "" {
			continue
		}
		cases = append(cases, TransportCase{Name: s.name, URL: u, ReplicasShare: true, RedeliveryDelay: s.redelivery})
	}
	return cases
}

// SQLTransports returns the SQL transports (watermill-sql on the databases
// of EVENTGEN_TEST_POSTGRES and EVENTGEN_TEST_MYSQL). Under
// EVENTGEN_TEST_REQUIRE_SERVICES=1 an unset variable fails t.
func SQLTransports(t testing.TB) []TransportCase {
	t.Helper()
	var cases []TransportCase
	if u := testservices.Optional(t, "postgres"); u != "" {
		cases = append(cases, TransportCase{Name: "postgres", URL: u})
	}
	if dsn := testservices.Optional(t, "mysql"); dsn != "" {
		u, err := MySQLURL(dsn)
		if err != nil {
			t.Fatalf("%s: %v", EnvMySQL, err)
		}
		cases = append(cases, TransportCase{Name: "mysql", URL: u})
	}
	return cases
}

// TransportURL returns the URL of the broker named name (amqp, nats,
// redis, postgres or mysql) from Transports or SQLTransports. An unset
// broker skips t, or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func TransportURL(t testing.TB, name string) string {
	t.Helper()
	for _, c := range append(Transports(t), SQLTransports(t)...) {
		if c.Name == name && c.URL != "" {
			return c.URL
		}
	}
	t.Skipf("no %s broker configured", name)
	return ""
}

// MySQLURL turns a go-sql-driver/mysql DSN (user:pass@tcp(host:port)/db)
// into the mysql:// URL the SQL transport takes. A URL is returned as is.
func MySQLURL(dsn string) (string, error) {
	if strings.HasPrefix(dsn, "mysql://") {
		return dsn, nil
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("parse MySQL DSN: %w", err)
	}
	u := url.URL{Scheme: "mysql", Host: cfg.Addr, Path: "/" + cfg.DBName}
	if cfg.Passwd != "" {
		u.User = url.UserPassword(cfg.User, cfg.Passwd)
	} else if cfg.User != "" {
		u.User = url.User(cfg.User)
	}
	q := url.Values{}
	for k, v := range cfg.Params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Topic returns a topic name unique to this test run: "test.<prefix>.<hex>",
// with dots, so every broker's handling of dotted topics is exercised.
// prefix is cut to 20 characters and reduced to [a-z0-9_-].
func Topic(t testing.TB, prefix string) string {
	t.Helper()
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		if b.Len() == 20 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	return "test." + b.String() + "." + hex.EncodeToString(rnd[:])
}

// DeleteTopicAtCleanup deletes topic and the given groups' queues from tr's
// broker at t's cleanup (before tr closes, if tr was opened earlier in t),
// so shared brokers do not fill up with test topics.
func DeleteTopicAtCleanup(t testing.TB, tr *transport.Transport, topic string, groups ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := tr.DeleteTopic(ctx, topic, groups...); err != nil {
			t.Errorf("delete topic %s: %v", topic, err)
		}
	})
}

// Logger logs warnings and errors through t.Log. Its own cleanup (which
// runs after those registered later, such as closing a transport) stops it:
// records from goroutines still stopping are dropped, since logging to a
// finished test panics.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
