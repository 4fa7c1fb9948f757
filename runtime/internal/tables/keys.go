package tables

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Per-key ordering.
//
// The events of one stream (a source, a topic and a key) are numbered 1, 2,
// 3... in the order their transactions commit. The outbox's key table holds
// each stream's last number: Publish takes the next ones with an upsert in
// the caller's transaction, whose row lock makes transactions that publish
// on the same stream take turns, so numbers follow commit order and a
// rollback leaves no gap.
//
// Each consumer group's key table holds, per stream, the last number the
// group applied (or skipped). An event runs only when it is the next one;
// an event that comes early is stored as held, and the event before it
// wakes it once applied.

// StatusHeld marks an inbox row that waits for the event before it in its
// stream. It has no next attempt and no expiry: only the event before it
// (or an operator's skip) releases it.
const StatusHeld = "held"

// StreamID names the stream of source, topic and key in the key tables: a
// hash, so that the primary key stays short on every database whatever the
// three values' lengths.
func StreamID(source, topic, key string) string {
	h := sha256.New()
	for _, s := range []string{source, topic, key} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// KeysTable is the key table beside table.
func KeysTable(table string) string { return table + "_keys" }

// outboxOrderingMigrations add per-key sequences to an outbox: the seq
// column, then the key table.
var outboxOrderingMigrations = []sqlstore.Migration{{
	Version: 4,
	Statements: func(d sqlstore.Dialect, table string) []string {
		return []string{addSeqColumn(d, table)}
	},
}, {
	Version: 5,
	Statements: func(d sqlstore.Dialect, table string) []string {
		t := d.Types
		return []string{createTable(d, KeysTable(table), []string{
			"stream VARCHAR(64) NOT NULL PRIMARY KEY",
			"source " + t.String + " NOT NULL",
			"topic " + t.String + " NOT NULL",
			"msg_key " + t.String + " NOT NULL",
			"seq " + t.BigInt + " NOT NULL",
		})}
	},
}}

// inboxOrderingMigrations add per-key ordering to an inbox: the seq column,
// an index that finds a stream's held rows, and the key table.
var inboxOrderingMigrations = []sqlstore.Migration{{
	Version: 3,
	Statements: func(d sqlstore.Dialect, table string) []string {
		return []string{addSeqColumn(d, table)}
	},
}, {
	Version: 4,
	Statements: func(d sqlstore.Dialect, table string) []string {
		name := sqlstore.IndexName(table, "held")
		if d.Name == "mysql" {
			return []string{fmt.Sprintf("ALTER TABLE %s ADD INDEX %s (consumer_group, msg_key, seq)", table, name)}
		}
		return []string{fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, msg_key, seq) WHERE status = '%s'", name, table, StatusHeld)}
	},
}, {
	Version: 5,
	Statements: func(d sqlstore.Dialect, table string) []string {
		t := d.Types
		return []string{createTable(d, KeysTable(table), []string{
			"consumer_group " + t.String + " NOT NULL",
			"stream VARCHAR(64) NOT NULL",
			"source " + t.String + " NOT NULL",
			"topic " + t.String + " NOT NULL",
			"msg_key " + t.String + " NOT NULL",
			// seq is the last sequence applied or skipped; message_id
			// is the message that set it.
			"seq " + t.BigInt + " NOT NULL",
			"message_id " + t.String + " NOT NULL",
			"updated_at " + t.BigInt + " NOT NULL",
			"PRIMARY KEY (consumer_group, stream)",
		})}
	},
}}

func addSeqColumn(d sqlstore.Dialect, table string) string {
	return fmt.Sprintf("ALTER TABLE %s ADD COLUMN seq %s NOT NULL DEFAULT 0", table, d.Types.BigInt)
}

func createTable(d sqlstore.Dialect, table string, cols []string) string {
	s := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n)", table, strings.Join(cols, ",\n  "))
	if d.Name == "mysql" {
		s += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
	}
	return s
}

// StreamCount is a stream and how many events a Publish call adds to it.
type StreamCount struct {
	ID                 string // StreamID of the three below
	Source, Topic, Key string
	Count              int
}

// OutboxKeys numbers the events of an outbox's streams.
type OutboxKeys struct {
	d        sqlstore.Dialect
	table    string
	prepared *sqlstore.Prepared
}

// NewOutboxKeys returns the key table of the outbox table (validated).
// prepared may be nil.
func NewOutboxKeys(d sqlstore.Dialect, table string, prepared *sqlstore.Prepared) *OutboxKeys {
	return &OutboxKeys{d: d, table: KeysTable(table), prepared: prepared}
}

// maxPreparedStreams bounds the streams of one upsert run as a prepared
// statement: each count of streams is a statement of its own.
const maxPreparedStreams = 4

// Take reserves the next Count numbers of each stream in db, which must be
// the transaction that writes the events, and returns the last number
// reserved per stream id: a stream's events take last-Count+1 to last. The
// streams are locked in id order, so that two transactions never wait for
// each other's streams in a cycle.
func (k *OutboxKeys) Take(ctx context.Context, db bun.IDB, streams []StreamCount) (map[string]int64, error) {
	slices.SortFunc(streams, func(a, b StreamCount) int { return strings.Compare(a.ID, b.ID) })
	args := make([]any, 0, 5*len(streams))
	for _, s := range streams {
		args = append(args, s.ID, s.Source, s.Topic, s.Key, s.Count)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s ", k.table)
	if k.d.Name != "mysql" {
		b.WriteString("AS k ")
	}
	b.WriteString("(stream, source, topic, msg_key, seq) VALUES ")
	for i := range streams {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?)")
	}
	p := k.prepared
	if len(streams) > maxPreparedStreams {
		p = nil
	}
	last := make(map[string]int64, len(streams))
	if k.d.Name == "mysql" {
		// No RETURNING: read the numbers back. The rows are this
		// transaction's, locked, so the read sees what it wrote.
		b.WriteString(" ON DUPLICATE KEY UPDATE seq = seq + VALUES(seq)")
		if _, err := sqlstore.ExecPrepared(ctx, p, db, b.String(), args...); err != nil {
			return nil, err
		}
		ids := make([]string, len(streams))
		for i, s := range streams {
			ids[i] = s.ID
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT stream, seq FROM %s WHERE stream IN (?)", k.table), bun.In(ids))
		if err != nil {
			return nil, err
		}
		return last, scanLast(rows, last, len(streams))
	}
	b.WriteString(" ON CONFLICT (stream) DO UPDATE SET seq = k.seq + excluded.seq RETURNING stream, seq")
	rows, err := sqlstore.QueryPrepared(ctx, p, db, b.String(), args...)
	if err != nil {
		return nil, err
	}
	return last, scanLast(rows, last, len(streams))
}

func scanLast(rows interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}, last map[string]int64, want int) error {
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return err
		}
		last[id] = seq
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(last) != want {
		return fmt.Errorf("key table returned %d of %d streams", len(last), want)
	}
	return nil
}
