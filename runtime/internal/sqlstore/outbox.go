package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// Outbox row statuses. A row moves scheduled -> pending -> processing ->
// published, or back to pending after a failed round, or to failed after the
// last attempt. Only scheduled, pending and processing rows have a
// next_attempt_at; published and failed rows have NULL there, which keeps
// them out of the claim index (partial where the database has partial
// indexes, skipped by the range scan where it has not).
const (
	StatusScheduled  = "scheduled"
	StatusPending    = "pending"
	StatusProcessing = "processing"
	StatusPublished  = "published"
	StatusFailed     = "failed"
)

// OutboxMigrations are the schema steps of an outbox table.
//
// next_attempt_at is the single claim key: for scheduled and pending rows it
// is when the row becomes due, for processing rows it equals lease_until (the
// lease's expiry, after which another relay may take the row over), and it is
// NULL for published and failed rows. So "claimable" is one range on one
// index on every database, however much history the table keeps.
var OutboxMigrations = []Migration{{
	Version: 1,
	Statements: func(d Dialect, table string) []string {
		t := d.Types
		claim := IndexName(table, "claim")
		expiry := IndexName(table, "expiry")
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
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (id) WHERE status = '%s'", IndexName(table, "failed"), table, StatusFailed),
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
func OutboxInsertSQL(d Dialect, table string, rows int) string {
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

// OutboxStore builds and runs the relay's statements on one outbox table.
// Every statement takes "now" from the database clock.
type OutboxStore struct {
	d     Dialect
	table string
	// now is the database's current time, evaluated once per statement, so
	// that PostgreSQL can use it as an index condition (clock_timestamp is
	// volatile; an uncorrelated scalar subquery is computed once).
	now string

	// lockIDs and lockRows select due rows FOR UPDATE SKIP LOCKED inside a
	// transaction, for relays that hold row locks while they publish.
	lockIDs, lockRows, markLocked, leaseLocked string

	claim, claimIDs, fetch, markPublished, retry, fail, release, requeue, failedIDs, failed, expired, deleteExpired string
}

const rowColumns = "id, message_id, name, version, topic, msg_key, source, payload, headers, attempts, created_at, last_error"

// NewOutboxStore returns the store for table, which must be validated.
func NewOutboxStore(d Dialect, table string) *OutboxStore {
	s := &OutboxStore{d: d, table: table, now: "(SELECT " + d.Now + ")"}
	claimable := fmt.Sprintf("status IN ('%s', '%s', '%s') AND next_attempt_at >= ? AND next_attempt_at <= %s",
		StatusScheduled, StatusPending, StatusProcessing, s.now)
	size := "octet_length(payload)"
	if d.Name != "postgres" {
		size = "length(payload)" // bytes for BLOBs on SQLite and MySQL
	}
	take := fmt.Sprintf("status = '%s', lock_owner = ?, lease_until = %s + ?, next_attempt_at = %s + ?", StatusProcessing, s.now, s.now)
	if d.UpdateReturning {
		// One statement: lock due rows (skipping those another relay is
		// claiming), keep the prefix that fits the byte budget, take them.
		lock := ""
		if d.SkipLocked {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		cfg, async := "", ""
		if d.Name == "postgres" {
			// A lease lost in a database crash only makes the row due
			// again, so the claim need not wait for its WAL flush:
			// synchronous_commit off for this statement's transaction.
			cfg = "cfg AS (SELECT set_config('synchronous_commit', 'off', true) AS v), "
			async = " AND (SELECT v FROM cfg) = 'off'"
		}
		s.claim = fmt.Sprintf(`WITH %sc AS (
  SELECT id, next_attempt_at, %s AS size FROM %s
  WHERE %s
  ORDER BY next_attempt_at LIMIT ?%s
), s AS (
  SELECT id, ROW_NUMBER() OVER w AS rn, SUM(size) OVER w AS run FROM c
  WINDOW w AS (ORDER BY next_attempt_at, id)
)
UPDATE %s SET %s
WHERE id IN (SELECT id FROM s WHERE rn = 1 OR run <= ?)%s
RETURNING %s`, cfg, size, table, claimable, lock, table, take, async, rowColumns)
	} else {
		// MySQL: lock ids and sizes, update the prefix, then read it.
		// FORCE INDEX: on a small table MySQL prefers a full scan and a
		// sort, and its locking read would then lock every due row, not
		// only the batch.
		s.claimIDs = fmt.Sprintf("SELECT id, %s FROM %s FORCE INDEX (%s) WHERE %s ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
			size, table, IndexName(table, "claim"), claimable)
		s.claim = fmt.Sprintf("UPDATE %s SET %s WHERE id IN (?)", table, take)
		s.fetch = fmt.Sprintf("SELECT %s FROM %s WHERE id IN (?) AND lock_owner = ? AND status = '%s'", rowColumns, table, StatusProcessing)
	}
	if d.SkipLocked {
		if d.Name == "postgres" {
			// The server ends the session, and so the transaction and its
			// locks, if it stays idle (publishing) longer than the lease.
			s.lockRows = fmt.Sprintf(`WITH cfg AS (SELECT set_config('idle_in_transaction_session_timeout', ?, true) AS v), c AS (
  SELECT id, next_attempt_at, %s AS size FROM %s
  WHERE %s
  ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED
), s AS (
  SELECT id, ROW_NUMBER() OVER w AS rn, SUM(size) OVER w AS run FROM c
  WINDOW w AS (ORDER BY next_attempt_at, id)
)
SELECT %s FROM %s WHERE id IN (SELECT id FROM s WHERE rn = 1 OR run <= ?) AND (SELECT v FROM cfg) IS NOT NULL`, size, table, claimable, rowColumns, table)
		} else {
			s.lockIDs = s.claimIDs
			s.lockRows = fmt.Sprintf("SELECT %s FROM %s WHERE id IN (?)", rowColumns, table)
		}
		s.markLocked = fmt.Sprintf("UPDATE %s SET status = '%s', lock_owner = ?, attempts = attempts + ?, published_at = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL WHERE id IN (?)",
			table, StatusPublished, s.now, s.now)
		s.leaseLocked = fmt.Sprintf("UPDATE %s SET %s WHERE id IN (?)", table, take)
	}
	mine := fmt.Sprintf("lock_owner = ? AND status = '%s'", StatusProcessing)
	// The marks take their ids as one argument where the database can read
	// a list from one, so that a relay's connection prepares the statement
	// once for every batch size (see StatementConn).
	ids := "id IN (?)"
	switch d.Name {
	case "postgres":
		ids = "id = ANY(CAST(? AS BIGINT[]))"
	case "sqlite":
		ids = "id IN (SELECT value FROM json_each(?))"
	}
	s.markPublished = fmt.Sprintf("UPDATE %s SET status = '%s', attempts = attempts + ?, published_at = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL WHERE %s AND %s",
		table, StatusPublished, s.now, s.now, ids, mine)
	s.retry = fmt.Sprintf("UPDATE %s SET status = '%s', attempts = ?, next_attempt_at = %s + ?, lock_owner = NULL, lease_until = NULL, last_error = ? WHERE id = ? AND %s",
		table, StatusPending, s.now, mine)
	s.fail = fmt.Sprintf("UPDATE %s SET status = '%s', attempts = ?, next_attempt_at = NULL, lease_until = NULL, expires_at = %s + ?, last_error = ? WHERE id = ? AND %s",
		table, StatusFailed, s.now, mine)
	s.release = fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s, lock_owner = NULL, lease_until = NULL WHERE id IN (?) AND %s",
		table, StatusPending, s.now, mine)
	s.requeue = fmt.Sprintf("UPDATE %s SET status = '%s', attempts = 0, next_attempt_at = %s, expires_at = NULL, lock_owner = NULL, lease_until = NULL WHERE status = '%s' AND id IN (?)",
		table, StatusPending, s.now, StatusFailed)
	s.failedIDs = fmt.Sprintf("SELECT id FROM %s WHERE status = '%s' ORDER BY id LIMIT ?", table, StatusFailed)
	s.failed = fmt.Sprintf("SELECT %s FROM %s WHERE status = '%s' ORDER BY id LIMIT ?", rowColumns, table, StatusFailed)
	expired := fmt.Sprintf("expires_at <= %s", s.now)
	if d.Name == "mysql" {
		// MySQL cannot LIMIT a subquery of IN, and a range DELETE would take
		// gap locks that block inserts: read ids without locking, then
		// delete them by primary key (row locks only), checking again.
		s.expired = fmt.Sprintf("SELECT id FROM %s WHERE %s ORDER BY expires_at LIMIT ?", table, expired)
		s.deleteExpired = fmt.Sprintf("DELETE FROM %s WHERE id IN (?) AND %s", table, expired)
	} else if d.Name == "postgres" {
		// Computed once, then deleted by primary key; rows another
		// cleaner is deleting are skipped instead of waited for.
		s.deleteExpired = fmt.Sprintf("DELETE FROM %s WHERE id = ANY(ARRAY(SELECT id FROM %s WHERE %s LIMIT ? FOR UPDATE SKIP LOCKED))", table, table, expired)
	} else {
		s.deleteExpired = fmt.Sprintf("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE %s LIMIT ?)", table, table, expired)
	}
	return s
}

func micros(d time.Duration) int64 { return d.Microseconds() }

// LocksRows reports whether the database can lock due rows and skip those
// another relay has locked, so that a relay may hold a batch by its row
// locks while it publishes (see Lock) instead of writing a lease first.
func (s *OutboxStore) LocksRows() bool { return s.lockRows != "" }

// Lock begins a transaction and locks due rows in it as Claim chooses
// them, skipping rows locked by other relays; c.Owner is not used. The
// locks are the lease: they last until the transaction ends, which the
// caller bounds by c.Lease, and on PostgreSQL the server also ends the
// session if the transaction stays idle for c.Lease, so that a hung relay
// cannot hold rows forever. With no due rows it returns a nil transaction.
//
// The caller publishes the rows, then settles them in the transaction with
// MarkLocked and LeaseLocked and commits. Compared with leasing every row
// first, a batch costs one row write instead of two.
func (s *OutboxStore) Lock(ctx context.Context, db *bun.DB, c Claim) (*bun.Tx, []OutboxRow, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.lock(ctx, tx, c)
	if err != nil || len(rows) == 0 {
		_ = tx.Rollback() // nothing written
		return nil, nil, err
	}
	return &tx, rows, nil
}

func (s *OutboxStore) lock(ctx context.Context, tx bun.Tx, c Claim) ([]OutboxRow, error) {
	if s.lockIDs == "" {
		timeout := strconv.FormatInt(max(1, c.Lease.Milliseconds()), 10)
		rows, err := tx.QueryContext(ctx, s.lockRows, timeout, c.From, c.Limit, c.MaxBytes)
		if err != nil {
			return nil, err
		}
		return scanRows(rows, c.Limit)
	}
	ids, err := s.lockPrefix(ctx, tx, c)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, s.lockRows, bun.In(ids))
	if err != nil {
		return nil, err
	}
	return scanRows(rows, len(ids))
}

// lockPrefix locks due rows by id and size, and returns the ids of the
// prefix that fits maxBytes.
func (s *OutboxStore) lockPrefix(ctx context.Context, tx bun.Tx, c Claim) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, s.claimIDs, c.From, c.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	total := 0
	for rows.Next() {
		var id int64
		var size int
		if err := rows.Scan(&id, &size); err != nil {
			return nil, err
		}
		if len(ids) > 0 && total+size > c.MaxBytes {
			break
		}
		total += size
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// MarkLocked marks rows locked by tx published by owner, adding failures
// to their attempts and setting them to expire after retention.
func (s *OutboxStore) MarkLocked(ctx context.Context, tx bun.Tx, owner string, ids []int64, failures int, retention time.Duration) error {
	_, err := tx.ExecContext(ctx, s.markLocked, owner, failures, micros(retention), bun.In(ids))
	return err
}

// LeaseLocked leases rows locked by tx to owner until now+lease, as Claim
// does, so that they stay with owner after the transaction ends.
func (s *OutboxStore) LeaseLocked(ctx context.Context, tx bun.Tx, owner string, ids []int64, lease time.Duration) error {
	_, err := tx.ExecContext(ctx, s.leaseLocked, owner, micros(lease), micros(lease), bun.In(ids))
	return err
}

// Claim says which rows to claim and for how long.
type Claim struct {
	// Owner is the relay's lock_owner.
	Owner string
	// From skips rows due before it (database clock, µs): a hint that
	// spares the scan the index entries of rows already published, which
	// stay in the index until vacuum. 0 scans from the start, which
	// callers must do regularly: rows that commit late, or whose lease or
	// retry delay ends, may fall before any hint.
	From int64
	// Limit and MaxBytes bound the batch in rows and payload bytes (at
	// least one row is claimed).
	Limit, MaxBytes int
	// Lease is how long the rows stay with Owner.
	Lease time.Duration
}

// Claim leases up to c.Limit due rows to c.Owner until now+c.Lease: the
// smallest prefix, in due order, whose payloads fit c.MaxBytes. Due rows are
// scheduled and pending rows whose next attempt has come, and processing
// rows whose lease has expired.
func (s *OutboxStore) Claim(ctx context.Context, db bun.IDB, c Claim) ([]OutboxRow, error) {
	if s.claimIDs == "" {
		if s.d.Name == "sqlite" {
			// modernc.org/sqlite (v1.39) leaves the statement of a query
			// cancelled mid-run unfinalized, and its pooled connection then
			// holds the write lock of this UPDATE ... RETURNING for good.
			// The claim is short and bounded by its LIMIT.
			ctx = context.WithoutCancel(ctx)
		}
		rows, err := queryPrepared(ctx, db, s.claim, c.From, c.Limit, c.Owner, micros(c.Lease), micros(c.Lease), c.MaxBytes)
		if err != nil {
			return nil, err
		}
		return scanRows(rows, c.Limit)
	}
	var ids []int64
	err := db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
		// READ COMMITTED: no gap locks, so claims never block inserts.
		var err error
		ids, err = s.lockPrefix(ctx, tx, c)
		if err != nil || len(ids) == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, s.claim, c.Owner, micros(c.Lease), micros(c.Lease), bun.In(ids))
		return err
	})
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, s.fetch, bun.In(ids), c.Owner)
	if err != nil {
		return nil, err
	}
	return scanRows(rows, len(ids))
}

func scanRows(rows *sql.Rows, capacity int) ([]OutboxRow, error) {
	defer rows.Close()
	out := make([]OutboxRow, 0, capacity)
	for rows.Next() {
		var r OutboxRow
		if err := rows.Scan(&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Source, &r.Payload, &r.Headers, &r.Attempts, &r.CreatedAt, &r.LastError); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkPublished marks ids published by owner, adding failures to their
// attempts and setting them to expire after retention. Rows another relay
// has taken over are left alone. It returns how many rows it marked.
func (s *OutboxStore) MarkPublished(ctx context.Context, db bun.IDB, owner string, ids []int64, failures int, retention time.Duration) (int64, error) {
	if s.d.Name == "mysql" {
		return s.exec(ctx, db, s.markPublished, failures, micros(retention), bun.In(ids), owner)
	}
	return rowsAffected(execPrepared(ctx, db, s.markPublished, failures, micros(retention), idList(s.d, ids), owner))
}

// idList writes ids as the one text argument of a mark: a PostgreSQL
// array literal, or a JSON array on SQLite.
func idList(d Dialect, ids []int64) string {
	open, close := byte('['), byte(']')
	if d.Name == "postgres" {
		open, close = '{', '}'
	}
	b := make([]byte, 0, 2+len(ids)*8)
	b = append(b, open)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, close))
}

// Retry returns a row of owner to pending after a failed round, due after delay.
func (s *OutboxStore) Retry(ctx context.Context, db bun.IDB, owner string, id int64, attempts int, delay time.Duration, lastErr string) error {
	_, err := s.exec(ctx, db, s.retry, attempts, micros(delay), lastErr, id, owner)
	return err
}

// Fail marks a row of owner failed, to expire after retention.
func (s *OutboxStore) Fail(ctx context.Context, db bun.IDB, owner string, id int64, attempts int, retention time.Duration, lastErr string) error {
	_, err := s.exec(ctx, db, s.fail, attempts, micros(retention), lastErr, id, owner)
	return err
}

// Release returns rows of owner that it did not try to pending, due now.
func (s *OutboxStore) Release(ctx context.Context, db bun.IDB, owner string, ids []int64) error {
	_, err := s.exec(ctx, db, s.release, bun.In(ids), owner)
	return err
}

// Requeue returns the failed rows among ids to pending with a fresh retry
// budget, and reports how many it changed.
func (s *OutboxStore) Requeue(ctx context.Context, db bun.IDB, ids []int64) (int64, error) {
	return s.exec(ctx, db, s.requeue, bun.In(ids))
}

// RequeueFailed returns up to limit failed rows, lowest ids first, to
// pending, and reports how many it changed. Ids are read first and updated
// by primary key, so that no range of the table is locked.
func (s *OutboxStore) RequeueFailed(ctx context.Context, db bun.IDB, limit int) (int64, error) {
	ids, err := queryIDs(ctx, db, s.failedIDs, limit)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	return s.Requeue(ctx, db, ids)
}

// Failed returns up to limit failed rows, lowest ids first.
func (s *OutboxStore) Failed(ctx context.Context, db bun.IDB, limit int) ([]OutboxRow, error) {
	rows, err := db.QueryContext(ctx, s.failed, limit)
	if err != nil {
		return nil, err
	}
	return scanRows(rows, min(limit, 1024))
}

// DeleteExpired deletes up to limit rows whose expiry has passed, in one
// short statement, and reports how many it deleted.
func (s *OutboxStore) DeleteExpired(ctx context.Context, db bun.IDB, limit int) (int64, error) {
	if s.expired == "" {
		return rowsAffected(db.ExecContext(ctx, s.deleteExpired, limit))
	}
	// Another cleaner may read the same ids and delete them first: then
	// read the next ones, so that 0 means nothing is left to delete.
	for {
		ids, err := queryIDs(ctx, db, s.expired, limit)
		if err != nil || len(ids) == 0 {
			return 0, err
		}
		n, err := s.exec(ctx, db, s.deleteExpired, bun.In(ids))
		if err != nil || n > 0 {
			return n, err
		}
	}
}

func queryIDs(ctx context.Context, db bun.IDB, query string, limit int) ([]int64, error) {
	rows, err := db.QueryContext(ctx, query, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ids := make([]int64, 0, min(limit, 1024))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// exec runs a write that changes rows chosen by id. On MySQL, whose
// default REPEATABLE READ makes an UPDATE lock every row it reads (all of
// them, when a small table is scanned), it runs under READ COMMITTED,
// where rows that do not match are skipped without waiting for their
// locks: a relay holding a locked batch must never block another's marks.
func (s *OutboxStore) exec(ctx context.Context, db bun.IDB, query string, args ...any) (int64, error) {
	if pool, ok := db.(*bun.DB); ok && s.d.Name == "mysql" {
		var n int64
		err := pool.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
			var err error
			n, err = rowsAffected(tx.ExecContext(ctx, query, args...))
			return err
		})
		return n, err
	}
	return rowsAffected(db.ExecContext(ctx, query, args...))
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
