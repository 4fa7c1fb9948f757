package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/dbopen"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// dialect is what the hand-written references need to know about the
// database: its name and its clock in unix microseconds, the same
// expression the runtime uses, so that raw rows are equivalent to its rows.
type dialect struct {
	name string // postgres, mysql or sqlite
	now  string
}

// dialectNamed returns the dialect called postgres, mysql or sqlite.
func dialectNamed(name string) dialect {
	switch name {
	case "postgres":
		return dialect{name, "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT))"}
	case "mysql":
		return dialect{name, "(CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED))"}
	}
	return dialect{"sqlite", "(CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))"}
}

// database is the opened -db.
type database struct {
	db       *bun.DB
	d        dialect
	redacted string
	// tempDir holds the SQLite file when -db was empty.
	tempDir string
}

// openDatabase opens and pings dsn, with internal/dbopen: a postgres://
// URL, a mysql:// URL or MySQL DSN (user:pass@tcp(host:port)/db), or a
// SQLite path (optionally sqlite:). Empty means a new SQLite file in a
// temporary directory.
func openDatabase(ctx context.Context, dsn string) (*database, error) {
	out := &database{}
	if dsn == "" {
		var err error
		if out.tempDir, err = os.MkdirTemp("", "eventbench-"); err != nil {
			return nil, fmt.Errorf("create temporary directory: %w", err)
		}
		dsn = "sqlite:" + filepath.Join(out.tempDir, "bench.db")
	}
	name, err := dbopen.Dialect(dsn)
	if err != nil {
		out.close()
		return nil, err
	}
	out.d, out.redacted = dialectNamed(name), dbopen.Redact(dsn)
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if out.db, err = dbopen.Open(pctx, dsn); err != nil {
		out.close()
		return nil, err
	}
	if name == "sqlite" {
		// One connection: Go's pool then queues writers in memory, where
		// SQLite's busy handler would make them sleep in steps of up to
		// 100 ms.
		out.db.SetMaxOpenConns(1)
	} else {
		out.db.SetMaxIdleConns(64)
	}
	return out, nil
}

func (d *database) close() {
	if d.db != nil {
		d.db.Close()
	}
	if d.tempDir != "" {
		os.RemoveAll(d.tempDir)
	}
}

// newRunID returns a short random id that names this run's tables, topics
// and groups, so that runs never see each other's data.
func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// env is what every phase shares: the database, the broker and the names
// of this run's objects, which it drops at the end.
type env struct {
	cfg    *Config
	db     *database
	broker *transport.Transport
	run    string // run id
	log    *slog.Logger
	events *events
	// drainRate is the relay's drain rate from the drain phase, for the
	// forwarder phase's comparison; 0 if it did not run.
	drainRate float64

	mu     sync.Mutex
	tables []string            // to drop
	topics map[string][]string // broker topic -> groups, to delete
}

// outboxOptions are the runtime's defaults, with the run's table and logger.
func (e *env) outboxOptions(table string) eventgen.OutboxOptions {
	return eventgen.OutboxOptions{Table: table, Logger: e.log}
}

// newOutbox creates an outbox table of this run and returns its Outbox,
// relaying to pub, with outboxOptions changed by each of configure.
func (e *env) newOutbox(ctx context.Context, suffix string, pub message.Publisher, configure ...func(*eventgen.OutboxOptions)) (*eventgen.Outbox, string, error) {
	t := e.table(suffix)
	opts := e.outboxOptions(t)
	for _, c := range configure {
		c(&opts)
	}
	ob, err := eventgen.NewOutbox(e.db.db, pub, opts)
	if err != nil {
		return nil, "", err
	}
	if err := ob.Migrate(ctx); err != nil {
		return nil, "", err
	}
	return ob, t, nil
}

// table returns a new table name of this run, to be dropped at the end.
func (e *env) table(suffix string) string {
	name := "eventbench_" + e.run + "_" + suffix
	e.mu.Lock()
	e.tables = append(e.tables, name)
	e.mu.Unlock()
	return name
}

// topicPrefix returns a prefix for broker topics that isolates one
// measurement's messages. Topics and groups registered with track are
// deleted at the end.
func (e *env) topicPrefix(suffix string) string {
	return "eventbench_" + e.run + "_" + suffix + "."
}

func (e *env) track(topic string, groups ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.topics == nil {
		e.topics = map[string][]string{}
	}
	e.topics[topic] = append(e.topics[topic], groups...)
}

// group returns a consumer group name of this run.
func (e *env) group(suffix string) string { return "eventbench_" + e.run + "_" + suffix }

// cleanup drops this run's tables and broker topics, and forgets its tables
// in eventgen's migrations table.
func (e *env) cleanup() []error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.tables {
		// Migrate makes the key table of per-key ordering beside each
		// outbox and inbox.
		for _, t := range []string{t, t + "_keys"} {
			if _, err := e.db.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
				errs = append(errs, fmt.Errorf("drop table %s: %w", t, err))
			}
		}
	}
	if len(e.tables) > 0 {
		// Ignore the error: the table exists only if a phase migrated.
		_, _ = e.db.db.NewDelete().Table("eventgen_migrations").Where("table_name IN (?)", bun.In(e.tables)).Exec(ctx)
	}
	for topic, groups := range e.topics {
		if err := e.broker.DeleteTopic(ctx, topic, groups...); err != nil {
			errs = append(errs, fmt.Errorf("delete topic %s: %w", topic, err))
		}
	}
	e.tables, e.topics = nil, nil
	return errs
}

// truncate empties tables between measurements, so that each starts from
// the same table size.
func (e *env) truncate(ctx context.Context, tables ...string) error {
	for _, t := range tables {
		q := "TRUNCATE TABLE " + t
		if e.db.d.name == "sqlite" {
			q = "DELETE FROM " + t
		}
		if _, err := e.db.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("empty %s: %w", t, err)
		}
	}
	return nil
}

// analyze updates the planner's statistics of tables after a bulk fill, as
// autovacuum (or a DBA) would before long: on a table without them
// PostgreSQL plans "the next 100 due rows" as a sort of every due row.
func (e *env) analyze(ctx context.Context, tables ...string) error {
	for _, t := range tables {
		q := "ANALYZE " + t
		if e.db.d.name == "mysql" {
			q = "ANALYZE TABLE " + t
		}
		if _, err := e.db.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	return nil
}

// createOrders creates a business table: what a service writes in the
// transaction that also publishes an event.
func (e *env) createOrders(ctx context.Context, suffix string) (string, error) {
	t := e.table(suffix)
	id := map[string]string{
		"postgres": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
		"mysql":    "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
		"sqlite":   "INTEGER PRIMARY KEY AUTOINCREMENT",
	}[e.db.d.name]
	q := fmt.Sprintf("CREATE TABLE %s (id %s, order_id VARCHAR(36) NOT NULL, status VARCHAR(16) NOT NULL, "+
		"refund BIGINT NOT NULL, currency VARCHAR(3) NOT NULL, updated_at BIGINT NOT NULL)", t, id)
	if _, err := e.db.db.ExecContext(ctx, q); err != nil {
		return "", fmt.Errorf("create %s: %w", t, err)
	}
	return t, nil
}

// insertOrder writes the business row of a cancelled order in db.
func insertOrder(ctx context.Context, db bun.IDB, table string, o *event) error {
	_, err := db.ExecContext(ctx, "INSERT INTO "+table+" (order_id, status, refund, currency, updated_at) VALUES (?, ?, ?, ?, ?)",
		o.OrderID.String(), "cancelled", o.Refund.Amount, o.Refund.Currency, o.CancelledAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("insert business row: %w", err)
	}
	return nil
}

// publisher wraps the broker's publisher for one measurement: it moves
// topics under a prefix (so that runs and measurements never share a
// topic) and reports each message the broker accepted to observe.
type publisher struct {
	inner   message.Publisher
	prefix  string
	observe func(*message.Message)
}

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(p.prefix+topic, msgs...); err != nil {
		return err
	}
	if p.observe != nil {
		for _, m := range msgs {
			p.observe(m)
		}
	}
	return nil
}

// Close does nothing: the transport owns the publisher.
func (p *publisher) Close() error { return nil }

// subscriber moves topics under a prefix, as publisher does.
type subscriber struct {
	inner  message.Subscriber
	prefix string
	group  string
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.inner.Subscribe(ctx, s.prefix+topic)
}

func (s *subscriber) Close() error { return s.inner.Close() }

// CompetingSubscriptions reports what the broker's subscriber reports, so
// that the consumer under test handles one topic concurrently as it would
// on the broker itself.
func (s *subscriber) CompetingSubscriptions() bool {
	cs, ok := s.inner.(interface{ CompetingSubscriptions() bool })
	return ok && cs.CompetingSubscriptions()
}

// newSubscriber returns a subscriber of group under prefix, and creates
// the group on topic so that it receives what is published from now on.
func (e *env) newSubscriber(prefix, group, topic string) (*subscriber, error) {
	sub, err := e.broker.Subscriber(group)
	if err != nil {
		return nil, fmt.Errorf("subscriber %s: %w", group, err)
	}
	e.track(prefix+topic, group)
	if err := sub.SubscribeInitialize(prefix + topic); err != nil {
		sub.Close()
		return nil, fmt.Errorf("create group %s on %s: %w", group, prefix+topic, err)
	}
	return &subscriber{inner: sub, prefix: prefix, group: group}, nil
}

// sink makes the broker keep what is published to topic, as it would for a
// consumer group in production: without a group an AMQP fanout exchange
// drops messages without writing them. The in-process broker is left
// without one, since its groups hold unconsumed messages in memory.
func (e *env) sink(prefix, topic string) error {
	if s := e.broker.Scheme(); s == "mem" || s == "gochannel" {
		return nil
	}
	sub, err := e.newSubscriber(prefix, e.group("sink"), topic)
	if err != nil {
		return err
	}
	return sub.Close()
}
