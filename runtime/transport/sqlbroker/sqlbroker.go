// Package sqlbroker is the SQL transport: PostgreSQL or MySQL/MariaDB used
// as a message broker through watermill-sql, on a *sql.DB of its own.
//
// URLs: postgres://user:password@host:5432/db?sslmode=disable (or
// postgresql://), and mysql://user:password@host:3306/db?param=value (the
// query parameters are go-sql-driver/mysql's).
//
// Topology: watermill-sql's default schema, except that the payload column
// holds bytes (BYTEA on PostgreSQL, LONGBLOB on MySQL) instead of JSON, so
// any payload can be published. A topic is the table watermill_<topic>
// (quoted, so dots are fine) and its consumer offsets the table
// watermill_offsets_<topic>, both created on first use. A topic table
// created with a JSON payload column (by an earlier version of eventgen,
// or by watermill-sql's default schema) is altered to the byte column on
// the Broker's first use of the topic; its payloads keep their text. Topics are
// limited to 45 characters on PostgreSQL and 46 on MySQL, so that
// watermill_offsets_<topic> fits the database's identifier limit (63 and 64
// bytes): a longer one is an error rather than a silently truncated table
// name. A consumer group is a row in the offsets table, starting at the
// beginning of the table, so a new group reads the whole history.
//
// The subscribers of one group (its replicas) take turns rather than
// share: a subscriber reads a batch of messages (up to 100 on PostgreSQL)
// while holding
// the group's offsets row locked (SELECT ... FOR UPDATE), and the others
// wait for the lock. No message goes to two of them.
//
// On MySQL, watermill-sql reads under SERIALIZABLE isolation so that no
// message is skipped, which locks the end of the topic's table: while a
// subscriber holds a batch (of up to 10 messages there) unacked, publishes
// to that topic wait. Publish and consume from different goroutines, and
// keep handlers short.
//
// The Broker's pool opens at most Options.MaxConns connections (16 by
// default). A subscription holds one while it has a batch unacked, and a
// publish takes one for its INSERT; what finds the pool busy waits for a
// connection.
//
// Publish returns once the INSERT has committed. Ack advances the group's
// offset (with the rest of the batch, in the same transaction). Nack
// redelivers the message to the same subscriber after a short pause. A
// message not acked within 30 s, or when its subscriber stops, is
// redelivered with the rest of the batch.
package sqlbroker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const pkg = "sqlbroker"

const (
	// pollInterval is how long a subscriber waits between queries that found
	// nothing.
	pollInterval = 100 * time.Millisecond
	// resendInterval is the pause before a nacked message is redelivered.
	resendInterval = 100 * time.Millisecond
	// identifierLimit is the longest table name each database keeps whole.
	postgresIdentifierLimit = 63
	mysqlIdentifierLimit    = 64
	offsetsTablePrefix      = "watermill_offsets_"
	// mysqlBatch is how many messages a MySQL subscriber reads per
	// transaction; the transaction's locks delay publishes to the topic
	// until the batch is acked, so it is kept small.
	mysqlBatch = 10
	// migrateTimeout bounds checking and migrating a topic's table.
	migrateTimeout = time.Minute
)

// DefaultMaxConns is the default bound of a Broker's connection pool.
const DefaultMaxConns = 16

// Options configure a Broker. The zero value is ready to use.
type Options struct {
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// MaxConns bounds the connections the Broker opens to the database
	// (DefaultMaxConns when 0; negative is an error). As many are kept
	// idle, so that a busy broker does not reconnect.
	MaxConns int
}

// Broker is a database used as a message broker.
type Broker struct {
	ep       *support.Endpoint
	log      watermill.LoggerAdapter
	db       *sql.DB
	schema   wsql.SchemaAdapter
	offsets  wsql.OffsetsAdapter
	maxTopic int
	tables   func(topic string) []string // quoted message and offsets tables
	pub      *support.Publisher
	closers  support.Closers

	// migratePayload alters the payload column of topic's table from JSON
	// to bytes, if the table exists with a JSON column.
	migratePayload func(ctx context.Context, topic string) error
	migrated       sync.Map // topics whose payload column is checked
}

// Open opens the database at rawURL and pings it.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	ep, err := support.Parse(pkg, rawURL)
	if err != nil {
		return nil, err
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("sqlbroker: MaxConns is %d; want 0 (the default, %d) or more", opts.MaxConns, DefaultMaxConns)
	}
	maxConns := opts.MaxConns
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	b := &Broker{ep: ep, log: support.Watermill(ep.Logger(opts.Logger))}
	switch ep.URL.Scheme {
	case "postgres", "postgresql":
		cfg, err := pgx.ParseConfig(rawURL)
		if err != nil {
			return nil, ep.Errorf("sqlbroker: parse URL %s: %w", ep.Redacted, err)
		}
		b.db = stdlib.OpenDB(*cfg)
		schema := wsql.DefaultPostgreSQLSchema{GeneratePayloadType: func(string) string { return "BYTEA" }}
		offsets := wsql.DefaultPostgreSQLOffsetsAdapter{}
		b.schema, b.offsets = schema, offsets
		b.tables = func(t string) []string { return []string{schema.MessagesTable(t), offsets.MessagesOffsetsTable(t)} }
		b.maxTopic = postgresIdentifierLimit - len(offsetsTablePrefix)
		b.migratePayload = func(ctx context.Context, topic string) error {
			_, err := b.db.ExecContext(ctx, postgresPayloadMigration(schema.MessagesTable(topic)))
			return err
		}
	case "mysql":
		cfg, err := mysqlConfig(ep)
		if err != nil {
			return nil, ep.Errorf("sqlbroker: parse URL %s: %w", ep.Redacted, err)
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, ep.Errorf("sqlbroker: %s: %w", ep.Redacted, err)
		}
		b.db = sql.OpenDB(conn)
		schema := wsql.DefaultMySQLSchema{SubscribeBatchSize: mysqlBatch, GeneratePayloadType: func(string) string { return "LONGBLOB" }}
		offsets := mysqlOffsets{}
		b.schema, b.offsets = schema, offsets
		b.tables = func(t string) []string { return []string{schema.MessagesTable(t), offsets.MessagesOffsetsTable(t)} }
		b.maxTopic = mysqlIdentifierLimit - len(offsetsTablePrefix)
		b.migratePayload = func(ctx context.Context, topic string) error {
			return mysqlPayloadMigration(ctx, b.db, "watermill_"+topic, schema.MessagesTable(topic))
		}
	default:
		return nil, fmt.Errorf("sqlbroker: URL scheme %q is not postgres, postgresql or mysql", ep.URL.Scheme)
	}
	b.db.SetMaxOpenConns(maxConns)
	b.db.SetMaxIdleConns(maxConns)
	if err := b.db.PingContext(ctx); err != nil {
		_ = b.db.Close()
		return nil, ep.Errorf("sqlbroker: connect to %s: %w", ep.Redacted, err)
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(b.db), wsql.PublisherConfig{
		SchemaAdapter:        b.schema,
		AutoInitializeSchema: true,
	}, b.log)
	if err != nil {
		_ = b.db.Close()
		return nil, ep.Errorf("sqlbroker: new publisher: %w", err)
	}
	// watermill-sql's Publisher.Close is not registered: it only refuses
	// later publishes, which the wrapper does, and it waits for publishes
	// in progress, which a database that stopped answering would make it
	// do for good (and it reads its closed flag without synchronisation).
	// Closing the database releases everything the publisher holds.
	b.pub = support.NewPublisher(&b.closers, ep, pkg, pub, b.prepare)
	return b, nil
}

// mysqlConfig turns a mysql:// URL into go-sql-driver/mysql's Config.
func mysqlConfig(ep *support.Endpoint) (*mysql.Config, error) {
	u := ep.URL
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "3306")
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	dsn := "tcp(" + host + ")" + path
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	return cfg, nil
}

// mysqlOffsets is watermill-sql's MySQL offsets adapter plus what its
// PostgreSQL one does before subscribing: insert the group's offsets row if
// missing. Without the row, SELECT ... FOR UPDATE takes gap locks, and two
// groups subscribing to a new topic block each other's first ack.
type mysqlOffsets struct {
	wsql.DefaultMySQLOffsetsAdapter
}

func (a mysqlOffsets) BeforeSubscribingQueries(params wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{
		Query: "INSERT IGNORE INTO " + a.MessagesOffsetsTable(params.Topic) + " (consumer_group, offset_acked, offset_consumed) VALUES (?, 0, 0)",
		Args:  []any{params.ConsumerGroup},
	}}, nil
}

// prepare checks topic and, on the Broker's first use of it, migrates its
// table's payload column.
func (b *Broker) prepare(topic string) error {
	if err := b.checkTopic(topic); err != nil {
		return err
	}
	if _, ok := b.migrated.Load(topic); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	if err := b.migratePayload(ctx, topic); err != nil {
		return fmt.Errorf("migrate the payload column of topic %s to bytes: %w", topic, err)
	}
	b.migrated.Store(topic, true)
	return nil
}

// postgresPayloadMigration returns a statement that alters table's payload
// column from JSON (or JSONB) to BYTEA, keeping each payload's text, if
// the table exists with such a column, and does nothing otherwise. It
// checks again under an exclusive lock on the table, so that brokers that
// start together alter it once. table is quoted; topics hold no quotes.
func postgresPayloadMigration(table string) string {
	lit := "'" + table + "'"
	isJSON := `(SELECT atttypid FROM pg_attribute WHERE attrelid = to_regclass(` + lit + `) AND attname = 'payload') IN ('json'::regtype, 'jsonb'::regtype)`
	return `DO $$
BEGIN
	IF ` + isJSON + ` THEN
		LOCK TABLE ` + table + ` IN ACCESS EXCLUSIVE MODE;
		IF ` + isJSON + ` THEN
			ALTER TABLE ` + table + ` ALTER COLUMN payload TYPE BYTEA USING convert_to(payload::text, 'UTF8');
		END IF;
	END IF;
END $$`
}

// mysqlPayloadMigration alters the payload column of the table named name
// (quoted: table) to LONGBLOB, if the table exists with another type: JSON
// on MySQL, LONGTEXT with a JSON check on MariaDB, where JSON is an alias.
// Payloads keep their text, as the database prints it. Altering a LONGBLOB
// column to LONGBLOB changes nothing, so brokers that start together may
// both do it.
func mysqlPayloadMigration(ctx context.Context, db *sql.DB, name, table string) error {
	var dataType string
	err := db.QueryRowContext(ctx, "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'payload'", name).Scan(&dataType)
	if errors.Is(err, sql.ErrNoRows) || err == nil && strings.EqualFold(dataType, "longblob") {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, "ALTER TABLE "+table+" MODIFY `payload` LONGBLOB DEFAULT NULL")
	return err
}

// checkTopic refuses topics whose table names the database would truncate.
func (b *Broker) checkTopic(topic string) error {
	if len(topic) > b.maxTopic {
		return fmt.Errorf("topic %q is longer than %d characters, the most the SQL transport supports on this database", topic, b.maxTopic)
	}
	return nil
}

// Publisher returns the broker's publisher. Its Close only stops that
// handle; Broker.Close releases the database.
func (b *Broker) Publisher() message.Publisher { return b.pub }

// Subscriber returns a new subscriber in consumer group.
func (b *Broker) Subscriber(group string) (support.GroupSubscriber, error) {
	if err := b.closers.NewSubscriber(pkg, group); err != nil {
		return nil, err
	}
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(b.db), wsql.SubscriberConfig{
		ConsumerGroup:    group,
		PollInterval:     pollInterval,
		ResendInterval:   resendInterval,
		SchemaAdapter:    b.schema,
		OffsetsAdapter:   b.offsets,
		InitializeSchema: true,
	}, b.log)
	if err != nil {
		return nil, b.ep.Errorf("sqlbroker: new subscriber: %w", err)
	}
	return support.Track(&b.closers, b.ep, pkg, &subscriber{Subscriber: sub}, b.prepare)
}

// subscriber gives each message of watermill-sql's subscriber a context
// of its own, cancelled once the message is acked or nacked or the
// subscription stops: watermill-sql redelivers a nacked message with the
// context it had.
type subscriber struct {
	*wsql.Subscriber
	life support.Lifecycle
}

func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.life.Subscribe(ctx, func() (<-chan *message.Message, error) {
		return s.Subscriber.Subscribe(ctx, topic)
	})
}

func (s *subscriber) Close() error {
	_ = s.life.Close()
	return s.Subscriber.Close()
}

// DeleteTopic drops the topic's message and offsets tables.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, _ ...string) error {
	if err := support.ValidateTopic(topic); err != nil {
		return fmt.Errorf("sqlbroker: delete topic: %w", err)
	}
	if err := b.checkTopic(topic); err != nil {
		return fmt.Errorf("sqlbroker: delete topic: %w", err)
	}
	for _, table := range b.tables(topic) {
		if _, err := b.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
			return b.ep.Errorf("sqlbroker: drop %s: %w", table, err)
		}
	}
	return nil
}

// Close closes every subscriber and the publisher, then the database.
func (b *Broker) Close() error {
	err := b.closers.CloseAll()
	if cerr := b.db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return b.ep.Errorf("sqlbroker: close: %w", err)
	}
	return nil
}
