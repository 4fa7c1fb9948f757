package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
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

// InboxMigrations are the schema steps of an inbox table. One table may hold
// several consumer groups; every query is scoped to one group.
//
// As in the outbox, next_attempt_at is the single claim key: for pending rows
// it is when the next attempt is due, for processing rows it equals
// lease_until, and it is NULL for succeeded, skipped and failed rows.
// expires_at is NULL until a row is finished and is then when cleanup may
// delete it.
var InboxMigrations = []Migration{{
	Version: 1,
	Statements: func(d Dialect, table string) []string {
		t := d.Types
		claim := IndexName(table, "claim")
		expiry := IndexName(table, "expiry")
		failed := IndexName(table, "failed")
		cols := []string{
			"id " + t.ID,
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
			"status VARCHAR(16) NOT NULL",
			"attempts " + t.Int + " NOT NULL DEFAULT 0",
			"created_at " + t.BigInt + " NOT NULL",
			"next_attempt_at " + t.BigInt,
			"lock_owner VARCHAR(128)",
			"lease_until " + t.BigInt,
			"handled_at " + t.BigInt,
			"expires_at " + t.BigInt,
			"last_error " + t.Text,
			"UNIQUE (consumer_group, message_id)",
		}
		if d.Name == "mysql" {
			// One statement per step (DDL is not transactional). Finished
			// rows have NULL next_attempt_at and unfinished ones NULL
			// expires_at, so each range scan reads only its own rows.
			cols = append(cols,
				"INDEX "+claim+" (consumer_group, next_attempt_at)",
				"INDEX "+expiry+" (consumer_group, expires_at)",
				"INDEX "+failed+" (consumer_group, status)")
			return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
				table, strings.Join(cols, ",\n  "))}
		}
		return []string{
			fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n)", table, strings.Join(cols, ",\n  ")),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, next_attempt_at) WHERE status IN ('%s', '%s')",
				claim, table, StatusPending, StatusProcessing),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, expires_at) WHERE expires_at IS NOT NULL", expiry, table),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, id) WHERE status = '%s'", failed, table, StatusFailed),
		}
	},
}}

// InboxRow is a received message as the inbox stores it.
type InboxRow struct {
	ID        int64
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Source    string
	EventTime int64 // producer's time, µs since the epoch; 0 if unknown
	Payload   []byte
	Headers   sql.NullString // JSON object
	Status    string
	Attempts  int
	HandledAt sql.NullInt64 // database clock, µs
	LastError sql.NullString
}

const inboxColumns = "id, message_id, name, version, topic, msg_key, source, event_time, payload, headers, status, attempts, handled_at, last_error"

func scanInboxRows(rows *sql.Rows) ([]InboxRow, error) {
	defer rows.Close()
	var out []InboxRow
	for rows.Next() {
		var r InboxRow
		if err := rows.Scan(&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Source, &r.EventTime,
			&r.Payload, &r.Headers, &r.Status, &r.Attempts, &r.HandledAt, &r.LastError); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Inbox runs the inbox queries of one consumer group on one table.
type Inbox struct {
	D     Dialect
	Table string // validated
	Group string
	// Prepared, if set, runs the insert of every handled message as a
	// prepared statement; see Prepared.
	Prepared *Prepared
}

// nowValue is the database clock as a value computed once per statement.
// PostgreSQL's clock_timestamp() is volatile, so a bare comparison with it
// could not be an index condition; a scalar subquery is evaluated once.
func (in Inbox) nowValue() string { return "(SELECT " + in.D.Now + ")" }

// queryContext returns the context for a query that returns rows. On SQLite
// it is not cancelled: modernc.org/sqlite (v1.39) drops, unfinalized, the
// statement of a query whose context ends while it runs, and the pooled
// connection then holds its transaction (and, for UPDATE ... RETURNING, the
// write lock) open for good. Inbox queries are short and bounded by LIMIT.
func (in Inbox) queryContext(ctx context.Context) context.Context {
	if in.D.Name == "sqlite" {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// Outcome is how a row is inserted: its status, attempts so far, the delay
// of its next attempt (pending) or its retention (finished), both in
// microseconds, and its last error.
type Outcome struct {
	Status    string
	Attempts  int
	Delay     int64
	Retention int64
	LastError string
}

// Insert records r unless the group already has a row for its message id,
// and reports whether it did. Run inside the handler's transaction, the row
// and the handler's writes commit together; a concurrent delivery of the same
// message waits for that transaction and then inserts nothing.
func (in Inbox) Insert(ctx context.Context, db bun.IDB, r InboxRow, o Outcome) (bool, error) {
	var verb, conflict string
	switch in.D.Name {
	case "postgres":
		verb, conflict = "INSERT INTO", " ON CONFLICT (consumer_group, message_id) DO NOTHING"
	case "mysql":
		// IGNORE also downgrades errors such as truncation to warnings:
		// callers check lengths and encodings before inserting.
		verb = "INSERT IGNORE INTO"
	default:
		verb = "INSERT OR IGNORE INTO"
	}
	now := in.D.Now
	next, handled, expires := "NULL", now, now+" + ?"
	arg := o.Retention
	if o.Status == StatusPending {
		next, handled, expires = now+" + ?", "NULL", "NULL"
		arg = o.Delay
	}
	var lastErr any
	if o.LastError != "" {
		lastErr = o.LastError
	}
	q := fmt.Sprintf("%s %s (consumer_group, message_id, name, version, topic, msg_key, source, event_time, payload, headers, "+
		"status, attempts, last_error, created_at, next_attempt_at, handled_at, expires_at) "+
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, %s, %s, %s, %s)%s",
		verb, in.Table, now, next, handled, expires, conflict)
	payload := r.Payload
	if payload == nil {
		payload = []byte{}
	}
	args := []any{in.Group, r.MessageID, r.Name, r.Version, r.Topic, r.Key, r.Source, r.EventTime,
		payload, r.Headers, o.Status, o.Attempts, lastErr, arg}
	var res sql.Result
	var err error
	if in.Prepared != nil {
		res, err = in.Prepared.ExecContext(ctx, db, q, args...)
	} else {
		res, err = db.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// Claim takes up to n due rows of the group for owner: pending rows whose
// next attempt is due and processing rows whose lease expired. Claimed rows
// are processing, leased for lease microseconds, with attempts counted up
// (so a message that crashes its process still runs out of attempts). The
// returned rows carry the new attempt count.
func (in Inbox) Claim(ctx context.Context, db *bun.DB, owner string, n int, lease int64) ([]InboxRow, error) {
	now := in.D.Now
	set := fmt.Sprintf("status = '%s', lock_owner = ?, attempts = attempts + 1, lease_until = %s + ?, next_attempt_at = %s + ?",
		StatusProcessing, now, now)
	due := fmt.Sprintf("SELECT id FROM %s WHERE consumer_group = ? AND status IN ('%s', '%s') AND next_attempt_at <= %s ORDER BY next_attempt_at LIMIT ?",
		in.Table, StatusPending, StatusProcessing, in.nowValue())
	if in.D.UpdateReturning {
		ids := "id IN (" + due + ")"
		if in.D.SkipLocked { // PostgreSQL: lock once, then update by primary key
			ids = "id = ANY(ARRAY(" + due + " FOR UPDATE SKIP LOCKED))"
		}
		q := fmt.Sprintf("UPDATE %s SET %s WHERE %s RETURNING %s", in.Table, set, ids, inboxColumns)
		rows, err := db.QueryContext(in.queryContext(ctx), q, owner, lease, lease, in.Group, n)
		if err != nil {
			return nil, err
		}
		return scanInboxRows(rows)
	}
	// MySQL: lock the due rows, skipping those another replica holds, then
	// lease them, in one transaction.
	var out []InboxRow
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := strings.Replace(due, "SELECT id ", "SELECT "+inboxColumns+" ", 1) + " FOR UPDATE SKIP LOCKED"
		rows, err := tx.QueryContext(ctx, q, in.Group, n)
		if err != nil {
			return err
		}
		if out, err = scanInboxRows(rows); err != nil || len(out) == 0 {
			return err
		}
		ids := make([]int64, len(out))
		for i := range out {
			ids[i] = out[i].ID
			out[i].Status = StatusProcessing
			out[i].Attempts++
		}
		_, err = tx.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET %s WHERE id IN (?)", in.Table, set), owner, lease, lease, bun.In(ids))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Own re-checks, inside the handler's transaction, that owner still holds the
// row's lease and renews it. It locks the row until the transaction ends, so
// no other replica can claim it meanwhile.
func (in Inbox) Own(ctx context.Context, tx bun.Tx, id int64, owner string, lease int64) (bool, error) {
	// The new lease always differs from the old (the clock has moved), so
	// MySQL's "changed rows" count is 1 as well.
	q := fmt.Sprintf("UPDATE %s SET lease_until = %s + ?, next_attempt_at = %s + ? WHERE id = ? AND lock_owner = ? AND status = '%s'",
		in.Table, in.D.Now, in.D.Now, StatusProcessing)
	res, err := tx.ExecContext(ctx, q, lease, lease, id, owner)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Succeed marks a row handled, in the handler's transaction.
func (in Inbox) Succeed(ctx context.Context, tx bun.Tx, id int64, retention int64) error {
	q := fmt.Sprintf("UPDATE %s SET status = '%s', handled_at = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL, lock_owner = NULL WHERE id = ?",
		in.Table, StatusSucceeded, in.D.Now, in.D.Now)
	_, err := tx.ExecContext(ctx, q, retention, id)
	return err
}

// Retry returns a row that owner holds to pending, due after delay
// microseconds.
func (in Inbox) Retry(ctx context.Context, db bun.IDB, id int64, owner string, delay int64, lastError string) error {
	q := fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s + ?, lease_until = NULL, lock_owner = NULL, last_error = ? WHERE id = ? AND lock_owner = ? AND status = '%s'",
		in.Table, StatusPending, in.D.Now, StatusProcessing)
	_, err := db.ExecContext(ctx, q, delay, lastError, id, owner)
	return err
}

// Release gives back a row that owner claimed but did not run to the end
// (shutdown): pending, due now, with the unfinished attempt uncounted.
func (in Inbox) Release(ctx context.Context, db bun.IDB, id int64, owner string) error {
	q := fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s, attempts = attempts - 1, lease_until = NULL, lock_owner = NULL WHERE id = ? AND lock_owner = ? AND status = '%s'",
		in.Table, StatusPending, in.D.Now, StatusProcessing)
	_, err := db.ExecContext(ctx, q, id, owner)
	return err
}

// Finish ends a row that owner holds as failed or skipped, kept for
// retention microseconds.
func (in Inbox) Finish(ctx context.Context, db bun.IDB, id int64, owner, status string, retention int64, lastError string) error {
	q := fmt.Sprintf("UPDATE %s SET status = ?, handled_at = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL, lock_owner = NULL, last_error = ? WHERE id = ? AND lock_owner = ? AND status = '%s'",
		in.Table, in.D.Now, in.D.Now, StatusProcessing)
	_, err := db.ExecContext(ctx, q, status, retention, lastError, id, owner)
	return err
}

// Reexecute returns the group's failed rows with the given message ids (all
// of them if messageIDs is nil) to pending, due now, with a fresh budget of
// attempts. It reports how many rows it changed.
func (in Inbox) Reexecute(ctx context.Context, db bun.IDB, messageIDs []string) (int64, error) {
	q := fmt.Sprintf("UPDATE %s SET status = '%s', attempts = 0, next_attempt_at = %s, handled_at = NULL, expires_at = NULL, lease_until = NULL, lock_owner = NULL WHERE consumer_group = ? AND status = '%s'",
		in.Table, StatusPending, in.D.Now, StatusFailed)
	args := []any{in.Group}
	if messageIDs != nil {
		q += " AND message_id IN (?)"
		args = append(args, bun.In(messageIDs))
	}
	res, err := db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Failed returns up to limit of the group's failed rows, oldest first.
func (in Inbox) Failed(ctx context.Context, db bun.IDB, limit int) ([]InboxRow, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE consumer_group = ? AND status = '%s' ORDER BY id LIMIT ?", inboxColumns, in.Table, StatusFailed)
	rows, err := db.QueryContext(in.queryContext(ctx), q, in.Group, limit)
	if err != nil {
		return nil, err
	}
	return scanInboxRows(rows)
}

// Get returns the group's row for messageID, if there is one.
func (in Inbox) Get(ctx context.Context, db bun.IDB, messageID string) (InboxRow, bool, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE consumer_group = ? AND message_id = ?", inboxColumns, in.Table)
	rows, err := db.QueryContext(in.queryContext(ctx), q, in.Group, messageID)
	if err != nil {
		return InboxRow{}, false, err
	}
	out, err := scanInboxRows(rows)
	if err != nil || len(out) == 0 {
		return InboxRow{}, false, err
	}
	return out[0], true, nil
}

// DeleteExpired deletes up to batch of the group's finished rows whose
// retention has passed, and reports how many it deleted.
func (in Inbox) DeleteExpired(ctx context.Context, db bun.IDB, batch int) (int64, error) {
	var q string
	switch in.D.Name {
	case "mysql":
		// MySQL has no LIMIT in IN subqueries, but has DELETE ... LIMIT.
		q = fmt.Sprintf("DELETE FROM %s WHERE consumer_group = ? AND expires_at <= %s ORDER BY expires_at LIMIT ?", in.Table, in.nowValue())
	case "postgres":
		// ARRAY(...) is computed once, then deleted by primary key: with
		// IN (...) the planner may hash-join against a scan of the table.
		q = fmt.Sprintf("DELETE FROM %s WHERE id = ANY(ARRAY(SELECT id FROM %s WHERE consumer_group = ? AND expires_at <= %s ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED))",
			in.Table, in.Table, in.nowValue())
	default:
		q = fmt.Sprintf("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE consumer_group = ? AND expires_at <= %s ORDER BY expires_at LIMIT ?)",
			in.Table, in.Table, in.nowValue())
	}
	res, err := db.ExecContext(ctx, q, in.Group, batch)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
