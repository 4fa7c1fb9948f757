package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"

	shopevents "github.com/eventgen/eventgen/examples/generated"
)

// forwarderPhase drains the same backlog as the drain phase through
// Watermill's forwarder: messages enveloped into a watermill-sql table on
// the same database, forwarded to the same broker by the forwarder's
// router.
func (e *env) forwarderPhase(ctx context.Context, p *Phase) error {
	n := e.cfg.Rows
	prefix := e.topicPrefix("forwarder")
	if err := e.sink(prefix, shopevents.TopicOrders); err != nil {
		return err
	}
	messages, offsets := e.table("wm_messages"), e.table("wm_offsets")
	schema, offs := watermillSQL(e.db.d.name, messages, offsets)
	db := wsql.BeginnerFromStdSQL(e.db.db.DB)
	sqlPub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, nil)
	if err != nil {
		return fmt.Errorf("watermill-sql publisher: %w", err)
	}
	fwdTopic := "eventbench_" + e.run + "_forward"
	fpub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	t := time.Now()
	for i := 0; i < n; i += fillBatch {
		msgs := make([]*message.Message, min(fillBatch, n-i))
		for j := range msgs {
			msgs[j] = e.events.message(e.events.order())
		}
		if err := fpub.Publish(prefix+shopevents.TopicOrders, msgs...); err != nil {
			return fmt.Errorf("fill forwarder table: %w", err)
		}
	}
	if err := e.analyze(ctx, messages); err != nil {
		return err
	}
	p.note("filled %d rows in %.1f s, %d per statement, then ANALYZEd the table", n, time.Since(t).Seconds(), fillBatch)

	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		ConsumerGroup: e.group("forwarder"), SchemaAdapter: schema, OffsetsAdapter: offs, InitializeSchema: true,
	}, nil)
	if err != nil {
		return fmt.Errorf("watermill-sql subscriber: %w", err)
	}
	prog := newProgress(n)
	out := &publisher{inner: e.broker.Publisher(), observe: func(*message.Message) { prog.add(1) }}
	fwd, err := forwarder.NewForwarder(sub, out, nil, forwarder.Config{ForwarderTopic: fwdTopic, CloseTimeout: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	prog.restart()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	err = prog.wait(ctx, e.cfg.DrainTimeout, "forwarder drain")
	if cerr := fwd.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close forwarder: %w", cerr)
	}
	<-done
	sub.Close()
	rate := 0.0
	if err != nil {
		// A slow forwarder is a result, not a failure: report the rate
		// over what it forwarded.
		c := prog.count.Load()
		if c == 0 || ctx.Err() != nil {
			return err
		}
		rate = float64(c) / e.cfg.DrainTimeout.Seconds()
		p.note("forwarder: %d of %d rows forwarded in %s; the rate is over those", c, n, e.cfg.DrainTimeout)
	} else {
		rate = prog.rate()
	}
	fwdFig := p.add(&Figure{Name: "forwarder.drain", Label: fmt.Sprintf("Watermill forwarder over watermill-sql drains %d rows", n),
		Value: rate, Unit: "rows/s"})
	if e.db.d.name == "sqlite" {
		p.note("watermill-sql has no SQLite adapter: eventbench supplies a minimal one (offsets table, batches of 100, no per-message consumed mark)")
	}
	if e.drainRate > 0 {
		p.add(&Figure{Name: "forwarder.relay-vs-forwarder", Label: "relay drain (drain phase) against the forwarder", Value: e.drainRate, Unit: "rows/s"}).compare(fwdFig)
	}
	return nil
}

// watermillSQL returns watermill-sql's schema and offsets adapters for
// the dialect, with this run's table names.
func watermillSQL(dialect, messages, offsets string) (wsql.SchemaAdapter, wsql.OffsetsAdapter) {
	msgs := func(string) string { return messages }
	offs := func(string) string { return offsets }
	switch dialect {
	case "postgres":
		return wsql.DefaultPostgreSQLSchema{GenerateMessagesTableName: msgs},
			wsql.DefaultPostgreSQLOffsetsAdapter{GenerateMessagesOffsetsTableName: offs}
	case "mysql":
		return wsql.DefaultMySQLSchema{GenerateMessagesTableName: msgs},
			wsql.DefaultMySQLOffsetsAdapter{GenerateMessagesOffsetsTableName: offs}
	}
	return sqliteSchema{messages: messages, offsets: offsets}, sqliteOffsets{offsets: offsets}
}

// sqliteSchema is a watermill-sql schema adapter for SQLite, which
// watermill-sql does not ship: the MySQL adapter's design (an
// autoincrement offset, an offsets table per topic) in SQLite's dialect.
// SQLite has one writer at a time, so the read of the offset needs no lock.
type sqliteSchema struct{ messages, offsets string }

const sqliteBatch = 100 // watermill-sql's default SubscribeBatchSize

func (s sqliteSchema) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{Query: "CREATE TABLE IF NOT EXISTS " + s.messages + ` (
		"offset" INTEGER PRIMARY KEY AUTOINCREMENT,
		uuid TEXT NOT NULL,
		created_at INTEGER NOT NULL DEFAULT (unixepoch()),
		payload BLOB,
		metadata TEXT)`}}, nil
}

func (s sqliteSchema) InsertQuery(params wsql.InsertQueryParams) (wsql.Query, error) {
	args := make([]any, 0, 3*len(params.Msgs))
	for _, m := range params.Msgs {
		md, err := json.Marshal(m.Metadata)
		if err != nil {
			return wsql.Query{}, fmt.Errorf("encode metadata of %s: %w", m.UUID, err)
		}
		args = append(args, m.UUID, []byte(m.Payload), string(md))
	}
	q := "INSERT INTO " + s.messages + " (uuid, payload, metadata) VALUES " + strings.TrimSuffix(strings.Repeat("(?,?,?),", len(params.Msgs)), ",")
	return wsql.Query{Query: q, Args: args}, nil
}

func (s sqliteSchema) SelectQuery(params wsql.SelectQueryParams) (wsql.Query, error) {
	next, err := params.OffsetsAdapter.NextOffsetQuery(wsql.NextOffsetQueryParams{Topic: params.Topic, ConsumerGroup: params.ConsumerGroup})
	if err != nil {
		return wsql.Query{}, err
	}
	q := fmt.Sprintf(`SELECT "offset", uuid, payload, metadata FROM %s WHERE "offset" > (%s) ORDER BY "offset" LIMIT %d`, s.messages, next.Query, sqliteBatch)
	return wsql.Query{Query: q, Args: next.Args}, nil
}

func (s sqliteSchema) UnmarshalMessage(params wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		r  wsql.Row
		md sql.NullString
	)
	if err := params.Row.Scan(&r.Offset, &r.UUID, &r.Payload, &md); err != nil {
		return wsql.Row{}, fmt.Errorf("scan message row: %w", err)
	}
	msg := message.NewMessage(string(r.UUID), r.Payload)
	if md.Valid {
		if err := json.Unmarshal([]byte(md.String), &msg.Metadata); err != nil {
			return wsql.Row{}, fmt.Errorf("decode metadata: %w", err)
		}
	}
	r.Msg = msg
	return r, nil
}

func (s sqliteSchema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelDefault }

// sqliteOffsets stores each consumer group's last acked offset.
type sqliteOffsets struct{ offsets string }

func (a sqliteOffsets) SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{Query: "CREATE TABLE IF NOT EXISTS " + a.offsets +
		" (consumer_group TEXT NOT NULL PRIMARY KEY, offset_acked INTEGER NOT NULL)"}}, nil
}

func (a sqliteOffsets) AckMessageQuery(params wsql.AckMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: "INSERT INTO " + a.offsets + " (consumer_group, offset_acked) VALUES (?, ?) " +
			"ON CONFLICT (consumer_group) DO UPDATE SET offset_acked = excluded.offset_acked",
		Args: []any{params.ConsumerGroup, params.LastRow.Offset},
	}, nil
}

func (a sqliteOffsets) NextOffsetQuery(params wsql.NextOffsetQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: "SELECT COALESCE((SELECT offset_acked FROM " + a.offsets + " WHERE consumer_group = ?), 0)",
		Args:  []any{params.ConsumerGroup},
	}, nil
}

func (a sqliteOffsets) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

func (a sqliteOffsets) BeforeSubscribingQueries(wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}
