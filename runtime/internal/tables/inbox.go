package tables

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Inbox row statuses besides the shared pending, processing and failed. A
// row is inserted as succeeded by the fast path (in the handler's
// transaction), as pending after a first failed run, as failed when it can
// never succeed, or as skipped when its group has no handler for the event.
// The retrier moves pending rows to processing and then to succeeded,
// pending or failed.
const (
	StatusSucceeded = "succeeded"
	StatusSkipped   = "skipped"
)

// InboxMigrations are the schema steps of an inbox table: its own columns,
// and the engine's (see leased.Spec.Schema). One table may hold several
// consumer groups; every statement is scoped to one group.
//
// Version 2 makes a message unique per group, topic and id, where version 1
// had group and id: a message on one topic then cannot take the place of a
// message with the same id on another (see the consumer's topic check).
// Versions 3 to 5 add per-key ordering (see keys.go).
var InboxMigrations = append([]sqlstore.Migration{
	{Version: 1, Statements: func(d sqlstore.Dialect, table string) []string {
		return inboxSchema(d, table, "UNIQUE (consumer_group, message_id)")
	}},
	{Version: 2, Statements: inboxUniquePerTopic},
}, inboxOrderingMigrations...)

func inboxSchema(d sqlstore.Dialect, table, unique string) []string {
	t := d.Types
	return InboxSpec(d, table).Schema([]string{
		"consumer_group " + t.String + " NOT NULL",
		"message_id " + t.String + " NOT NULL",
		"name " + t.String + " NOT NULL",
		"version " + t.Int + " NOT NULL",
		"topic " + t.String + " NOT NULL",
		"msg_key " + t.String + " NOT NULL DEFAULT ''",
		"source " + t.String + " NOT NULL DEFAULT ''",
		// event_time is the producer's ce_time, for Metadata.Time; it
		// is never compared with the database clock.
		"event_time " + t.BigInt + " NOT NULL DEFAULT 0",
		"payload " + t.Payload + " NOT NULL",
		"headers " + t.Text,
	}, unique)
}

// inboxUniqueColumns is the unique key of an inbox row from version 2 on.
const inboxUniqueColumns = "consumer_group, topic, message_id"

// inboxUniquePerTopic replaces the unique key (consumer_group, message_id)
// of version 1 with (consumer_group, topic, message_id).
func inboxUniquePerTopic(d sqlstore.Dialect, table string) []string {
	unique := sqlstore.IndexName(table, "message")
	switch d.Name {
	case "postgres":
		// Version 1 declared the key inline, so PostgreSQL named it; find
		// it by its columns.
		return []string{
			// One line: tools that split a script at a semicolon that
			// ends a line keep the block whole.
			fmt.Sprintf("DO $$ DECLARE c text; BEGIN "+
				"SELECT con.conname INTO c FROM pg_constraint con WHERE con.conrelid = '%[1]s'::regclass AND con.contype = 'u' AND array_length(con.conkey, 1) = 2; "+
				"IF c IS NOT NULL THEN EXECUTE format('ALTER TABLE %[1]s DROP CONSTRAINT %%I', c); END IF; END $$", table),
			fmt.Sprintf("CREATE UNIQUE INDEX IF NOT EXISTS %s ON %s (%s)", unique, table, inboxUniqueColumns),
		}
	case "mysql":
		// MySQL names an unnamed key after its first column. One
		// statement: DDL is not transactional.
		return []string{fmt.Sprintf("ALTER TABLE %s DROP INDEX consumer_group, ADD UNIQUE INDEX %s (%s)", table, unique, inboxUniqueColumns)}
	default:
		// SQLite cannot drop a key declared in CREATE TABLE: copy the rows
		// into a table with the new key, and put it in the old one's place.
		schema, name := "", table
		if i := strings.IndexByte(table, '.'); i >= 0 {
			schema, name = table[:i+1], table[i+1:]
		}
		next := schema + name + "_v2"
		create := inboxSchema(d, table, "UNIQUE ("+inboxUniqueColumns+")")
		cols := "id, consumer_group, message_id, name, version, topic, msg_key, source, event_time, payload, headers, " +
			"status, attempts, created_at, next_attempt_at, lock_owner, lease_until, handled_at, expires_at, last_error"
		return append([]string{
			strings.Replace(create[0], "CREATE TABLE IF NOT EXISTS "+table+" (", "CREATE TABLE "+next+" (", 1),
			fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", next, cols, cols, table),
			"DROP TABLE " + table,
			fmt.Sprintf("ALTER TABLE %s RENAME TO %s", next, name),
		}, create[1:]...)
	}
}

// InboxRow is a received message as the inbox stores it.
type InboxRow struct {
	ID        int64
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Seq       int64 // position in its stream (source, topic, key); 0 if unordered
	Source    string
	EventTime int64 // producer's time, µs since the epoch; 0 if unknown
	Payload   []byte
	Headers   sql.NullString // JSON object
	Status    string
	Attempts  int
	HandledAt sql.NullInt64 // database clock, µs
	LastError sql.NullString
}

const inboxColumns = "id, message_id, name, version, topic, msg_key, seq, source, event_time, payload, headers, status, attempts, handled_at, last_error"

func scanInboxRow(rows *sql.Rows, r *InboxRow) error {
	return rows.Scan(&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Seq, &r.Source, &r.EventTime,
		&r.Payload, &r.Headers, &r.Status, &r.Attempts, &r.HandledAt, &r.LastError)
}

// InboxSpec describes an inbox table to the engine. A row is a received
// message of one group: pending until its next attempt, done when handled.
// A claim counts the attempt, so that a run that crashes its process still
// uses one up.
func InboxSpec(d sqlstore.Dialect, table string) leased.Spec {
	return leased.Spec{
		Dialect:      d,
		Table:        table,
		Scope:        "consumer_group",
		Columns:      inboxColumns,
		Done:         StatusSucceeded,
		DoneAt:       "handled_at",
		FinishedAt:   "handled_at",
		CountOnClaim: true,
		Parked:       StatusHeld,
	}
}

// Inbox is the inbox of one consumer group on one table: the leased-row
// engine, scoped to the group, and the inbox's own insert and lookups.
type Inbox struct {
	*leased.Table[InboxRow]
	D         sqlstore.Dialect
	TableName string // validated
	Group     string
	// Prepared, if set, runs the insert of every handled message as a
	// prepared statement; see sqlstore.Prepared.
	Prepared *sqlstore.Prepared

	// insert holds the insert of a received message per insertKind.
	insert            [insertKinds]string
	failedByMessageID string
	ordering          orderingSQL
}

// insertKind is how an inserted row is scheduled.
type insertKind int

const (
	insertFinished insertKind = iota // done with; expires after a retention
	insertPending                    // due after a delay
	insertHeld                       // waits for the event before it; see StatusHeld
	insertKept                       // failed and blocking its key: kept until re-executed or skipped
	insertKinds
)

// NewInbox returns the inbox of group on table (validated) of a database of
// dialect d. prepared may be nil.
func NewInbox(d sqlstore.Dialect, table, group string, prepared *sqlstore.Prepared) *Inbox {
	in := &Inbox{
		Table:     leased.New(InboxSpec(d, table), group, scanInboxRow, prepared),
		D:         d,
		TableName: table,
		Group:     group,
		Prepared:  prepared,
	}
	for k := range insertKinds {
		in.insert[k] = in.insertSQL(k)
	}
	in.ordering = newOrderingSQL(d, table)
	in.failedByMessageID = fmt.Sprintf("SELECT id FROM %s WHERE consumer_group = ? AND status = '%s' AND message_id IN (?)", table, StatusFailed)
	return in
}

// Outcome is how a row is inserted: its status (held for a row that waits
// for the event before it), attempts so far, the delay of its next attempt
// (pending) or its retention (finished), and its last error.
type Outcome struct {
	Status    string
	Attempts  int
	Delay     time.Duration
	Retention time.Duration
	LastError string
	// Keep, on a failed outcome, keeps the row until it is re-executed
	// or skipped: it blocks its key (see keys.go), and ordering needs it.
	Keep bool
}

// insertSQL builds the insert of a received message of kind k.
func (in *Inbox) insertSQL(k insertKind) string {
	var verb, conflict string
	switch in.D.Name {
	case "postgres":
		verb, conflict = "INSERT INTO", " ON CONFLICT ("+inboxUniqueColumns+") DO NOTHING"
	case "mysql":
		// IGNORE also downgrades errors such as truncation to warnings:
		// callers check lengths and encodings before inserting.
		verb = "INSERT IGNORE INTO"
	default:
		verb = "INSERT OR IGNORE INTO"
	}
	now := in.D.Now
	// Finished and pending rows take one more argument: a retention or a
	// delay.
	next, handled, expires := "NULL", now, now+" + ?"
	switch k {
	case insertPending:
		next, handled, expires = now+" + ?", "NULL", "NULL"
	case insertHeld:
		handled, expires = "NULL", "NULL"
	case insertKept:
		expires = "NULL"
	}
	return fmt.Sprintf("%s %s (consumer_group, message_id, name, version, topic, msg_key, seq, source, event_time, payload, headers, "+
		"status, attempts, last_error, created_at, next_attempt_at, handled_at, expires_at) "+
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, %s, %s, %s, %s)%s",
		verb, in.TableName, now, next, handled, expires, conflict)
}

// Insert records r unless the group already has a row for its message id,
// and reports whether it did. Run inside the handler's transaction, the row
// and the handler's writes commit together; a concurrent delivery of the same
// message waits for that transaction and then inserts nothing.
func (in *Inbox) Insert(ctx context.Context, db bun.IDB, r InboxRow, o Outcome) (bool, error) {
	var lastErr any
	if o.LastError != "" {
		lastErr = o.LastError
	}
	payload := r.Payload
	if payload == nil {
		payload = []byte{}
	}
	args := []any{in.Group, r.MessageID, r.Name, r.Version, r.Topic, r.Key, r.Seq, r.Source, r.EventTime,
		payload, r.Headers, o.Status, o.Attempts, lastErr}
	var q string
	switch {
	case o.Status == StatusPending:
		q, args = in.insert[insertPending], append(args, micros(o.Delay))
	case o.Status == StatusHeld:
		q = in.insert[insertHeld]
	case o.Status == StatusFailed && o.Keep:
		q = in.insert[insertKept]
	default:
		q, args = in.insert[insertFinished], append(args, micros(o.Retention))
	}
	res, err := sqlstore.ExecPrepared(ctx, in.Prepared, db, q, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// Reexecute requeues the group's failed rows with the given message ids,
// in batches of batch, and reports how many it changed.
func (in *Inbox) Reexecute(ctx context.Context, db bun.IDB, messageIDs []string, batch int) (int64, error) {
	var total int64
	for chunk := range slices.Chunk(messageIDs, batch) {
		rows, err := db.QueryContext(ctx, in.failedByMessageID, in.Group, bun.In(chunk))
		if err != nil {
			return total, err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, err
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return total, err
		}
		n, err := in.Requeue(ctx, db, ids, batch)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func micros(d time.Duration) int64 { return d.Microseconds() }

// Get returns the group's row for messageID, if there is one.
func (in *Inbox) Get(ctx context.Context, db bun.IDB, messageID string) (InboxRow, bool, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE consumer_group = ? AND message_id = ?", inboxColumns, in.TableName)
	var r InboxRow
	rows, err := db.QueryContext(leased.QueryContext(ctx, in.D), q, in.Group, messageID)
	if err != nil {
		return r, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return r, false, rows.Err()
	}
	if err := scanInboxRow(rows, &r); err != nil {
		return r, false, err
	}
	return r, true, rows.Close()
}
