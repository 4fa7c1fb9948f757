// Package tables defines the outbox and inbox tables: their schemas, rows
// and inserts, on the leased-row engine of package leased.
package tables

import (
	"database/sql"
	"fmt"
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

// OutboxMigrations are the schema steps of an outbox table.
//
// next_attempt_at is the single claim key: for scheduled and pending rows it
// is when the row becomes due, for processing rows it equals lease_until (the
// lease's expiry, after which another relay may take the row over), and it is
// NULL for published and failed rows. So "claimable" is one range on one
// index on every database, however much history the table keeps.
var OutboxMigrations = []sqlstore.Migration{{
	Version: 1,
	Statements: func(d sqlstore.Dialect, table string) []string {
		t := d.Types
		claim := sqlstore.IndexName(table, "claim")
		expiry := sqlstore.IndexName(table, "expiry")
		cols := []string{
			"id " + t.ID,
			"message_id VARCHAR(64) NOT NULL",
			"name " + t.String + " NOT NULL",
			"version " + t.Int + " NOT NULL",
			"topic " + t.String + " NOT NULL",
			"msg_key " + t.String + " NOT NULL DEFAULT ''",
			"source " + t.String + " NOT NULL",
			"payload " + t.Payload + " NOT NULL",
			"headers " + t.Text,
			"status VARCHAR(16) NOT NULL",
			"attempts " + t.Int + " NOT NULL DEFAULT 0",
			"created_at " + t.BigInt + " NOT NULL",
			"next_attempt_at " + t.BigInt,
			"lock_owner VARCHAR(128)",
			"lease_until " + t.BigInt,
			"published_at " + t.BigInt,
			"expires_at " + t.BigInt,
			"last_error " + t.Text,
			"UNIQUE (message_id)",
		}
		if d.Name == "mysql" {
			// DDL is not transactional on MySQL: one statement per step.
			// Terminal rows have NULL next_attempt_at and expires_at is NULL
			// until a row is terminal, so both range scans skip the rest.
			cols = append(cols,
				"INDEX "+claim+" (next_attempt_at)",
				"INDEX "+expiry+" (expires_at)")
			return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
				table, strings.Join(cols, ",\n  "))}
		}
		return []string{
			fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n)", table, strings.Join(cols, ",\n  ")),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (next_attempt_at) WHERE status IN ('%s', '%s', '%s')",
				claim, table, StatusScheduled, StatusPending, StatusProcessing),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (expires_at) WHERE expires_at IS NOT NULL", expiry, table),
			// Failed and RequeueFailed; MySQL scans for them instead of
			// paying for a status index on every update.
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (id) WHERE status = '%s'", sqlstore.IndexName(table, "failed"), table, StatusFailed),
		}
	},
}}

// OutboxInsertColumns are the columns Publish writes, in the order of
// [OutboxInsertSQL]'s placeholders (9 per row).
const outboxInsertColumns = "message_id, name, version, topic, msg_key, source, payload, headers, status, created_at, next_attempt_at"

// OutboxInsertSQL returns a multi-row INSERT of rows rows into table. Each
// row takes 10 arguments: message_id, name, version, topic, msg_key,
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
		b.WriteString(") SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, n.t, n.t + column10 FROM (VALUES ")
		for i := 0; i < rows; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
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
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ")
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
	Source    string
	Payload   []byte
	Headers   sql.NullString // JSON object
	Attempts  int
	CreatedAt int64 // unix microseconds, database clock
	LastError sql.NullString
}

const outboxColumns = "id, message_id, name, version, topic, msg_key, source, payload, headers, attempts, created_at, last_error"

func scanOutboxRow(rows *sql.Rows, r *OutboxRow) error {
	return rows.Scan(&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Source, &r.Payload, &r.Headers, &r.Attempts, &r.CreatedAt, &r.LastError)
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
