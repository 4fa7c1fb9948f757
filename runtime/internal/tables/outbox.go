// Package tables defines the outbox and inbox tables: their schemas, rows
// and inserts, on the leased-row engine of package leased.
package tables

import (
	"database/sql"
	"strings"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Outbox row statuses. A row moves scheduled -> pending -> processing ->
// published, or back to pending after a failed round, or to failed after the
// last attempt. Only scheduled, pending and processing rows have a
// next_attempt_at; published and failed rows have NULL there, which keeps
// them out of the claim index (partial where the database has partial
// indexes, skipped by the range scan where it has not).
const (
	StatusScheduled  = "scheduled"
	StatusPending    = leased.StatusPending
	StatusProcessing = leased.StatusProcessing
	StatusPublished  = "published"
	StatusFailed     = leased.StatusFailed
)

// OutboxMigrations are the schema steps of an outbox table: its own
// columns, and the engine's (see leased.Spec.Schema).
//
// Versions 4 and 5 add per-key sequences (see keys.go).
//
// Versions 2 and 3 index the failed rows on MySQL, where version 1 has no
// index of them, so that counting them (leased.Table.Stats) reads only
// them: a virtual column that marks them, then an index on it (see
// leased.Spec.FailedIndexSteps). They change nothing on PostgreSQL and
// SQLite, whose version 1 has a partial index of failed rows.
var OutboxMigrations = append([]sqlstore.Migration{{
	Version: 1,
	Statements: func(d sqlstore.Dialect, table string) []string {
		t := d.Types
		return OutboxSpec(d, table).Schema([]string{
			"message_id VARCHAR(64) NOT NULL",
			"name " + t.String + " NOT NULL",
			"version " + t.Int + " NOT NULL",
			"topic " + t.String + " NOT NULL",
			"msg_key " + t.String + " NOT NULL DEFAULT ''",
			"source " + t.String + " NOT NULL",
			"payload " + t.Payload + " NOT NULL",
			"headers " + t.Text,
		}, "UNIQUE (message_id)")
	},
}, {
	Version: 2,
	Statements: func(d sqlstore.Dialect, table string) []string {
		column, _ := OutboxSpec(d, table).FailedIndexSteps()
		return column
	},
}, {
	Version: 3,
	Statements: func(d sqlstore.Dialect, table string) []string {
		_, index := OutboxSpec(d, table).FailedIndexSteps()
		return index
	},
}}, outboxOrderingMigrations...)

// OutboxInsertColumns are the columns Publish writes, in the order of
// [OutboxInsertSQL]'s placeholders.
const outboxInsertColumns = "message_id, name, version, topic, msg_key, seq, source, payload, headers, status, created_at, next_attempt_at"

// OutboxInsertSQL returns a multi-row INSERT of rows rows into table. Each
// row takes 11 arguments: message_id, name, version, topic, msg_key, seq,
// source, payload, headers, status, and its delay in microseconds; the
// database clock supplies created_at and next_attempt_at.
func OutboxInsertSQL(d sqlstore.Dialect, table string, rows int) string {
	var b strings.Builder
	b.Grow(120 + len(table) + rows*(40+2*len(d.Now)))
	if d.Name == "sqlite" && rows > 1 {
		// Rows of bound values only, and the clock read once: SQLite
		// compiles VALUES rows with expressions as a compound SELECT,
		// which costs more than the insert itself. One row is a plain
		// INSERT ... VALUES, which is cheaper still.
		b.WriteString("WITH n(t) AS (SELECT ")
		b.WriteString(d.Now)
		b.WriteString(") INSERT INTO ")
		b.WriteString(table)
		b.WriteString(" (")
		b.WriteString(outboxInsertColumns)
		b.WriteString(") SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, column10, n.t, n.t + column11 FROM (VALUES ")
		for i := 0; i < rows; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
		}
		b.WriteString("), n")
		return b.String()
	}
	b.WriteString("INSERT INTO ")
	b.WriteString(table)
	b.WriteString(" (")
	b.WriteString(outboxInsertColumns)
	b.WriteString(") VALUES ")
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ")
		b.WriteString(d.Now)
		b.WriteString(", ")
		b.WriteString(d.Now)
		b.WriteString(" + ?)")
	}
	return b.String()
}

// OutboxRow is a claimed row: what the relay needs to publish it.
type OutboxRow struct {
	ID        int64
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Seq       int64 // position in its stream (source, topic, key); 0 without a key
	Source    string
	Payload   []byte
	Headers   sql.NullString // JSON object
	Attempts  int
	CreatedAt int64 // unix microseconds, database clock
	LastError sql.NullString
}

const outboxColumns = "id, message_id, name, version, topic, msg_key, seq, source, payload, headers, attempts, created_at, last_error"

func scanOutboxRow(rows *sql.Rows, r *OutboxRow) error {
	return rows.Scan(&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Seq, &r.Source, &r.Payload, &r.Headers, &r.Attempts, &r.CreatedAt, &r.LastError)
}

// Outbox is the leased-row engine on one outbox table. A row is an event to
// publish: scheduled or pending until due, done when published. The relay
// counts attempts when it settles a row, so a claim does not.
type Outbox = leased.Table[OutboxRow]

// NewOutbox returns the outbox table named table (validated) of a database
// of dialect d. prepared may be nil.
func NewOutbox(d sqlstore.Dialect, table string, prepared *sqlstore.Prepared) *Outbox {
	return leased.New(OutboxSpec(d, table), "", scanOutboxRow, prepared)
}

// OutboxSpec describes an outbox table to the engine.
func OutboxSpec(d sqlstore.Dialect, table string) leased.Spec {
	return leased.Spec{
		Dialect: d,
		Table:   table,
		Columns: outboxColumns,
		Waiting: []string{StatusScheduled},
		Done:    StatusPublished,
		DoneAt:  "published_at",
		SizeOf:  "payload",
	}
}
