// Package leased is the engine under the outbox and the inbox: a table of
// rows that workers claim with leases, settle, retry in two tiers, requeue
// and clean up. The outbox and the inbox say what one of their rows means
// (their columns, their insert, their statuses for "done"); everything about
// claiming, leases, settling, requeueing and cleanup is here, written once.
//
// # The row life cycle
//
// Every leased table has the columns id, status, attempts, next_attempt_at,
// lock_owner, lease_until, expires_at and last_error. A row waits (pending,
// or a waiting status of the table's own such as the outbox's scheduled)
// until next_attempt_at, is claimed (processing, leased to one owner until
// lease_until, which next_attempt_at then equals), and is settled by its
// owner: done, back to pending after a failure, or finished as failed (or
// another terminal status of the table's). Terminal rows have NULL
// next_attempt_at, so "claimable" is one index range on every database, and
// an expires_at, after which Cleanup deletes them. A row whose owner's lease
// expired is claimable again, and every settle checks the owner, so a
// zombie's late settle changes nothing.
//
// # Databases
//
// Every time comes from the database's clock. Claims skip rows other
// claimers have locked where the database can (PostgreSQL, MySQL). On MySQL
// every write the engine runs on the pool runs under READ COMMITTED, which
// takes no gap locks, and deletes and requeues go by primary key, so that
// neither blocks the application's inserts. Statements are built once per
// table and run as prepared statements where the connection keeps them (see
// [sqlstore.StatementConn] and [sqlstore.Prepared]).
package leased

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Statuses the engine itself sets. A table adds its own: waiting ones (see
// Spec.Waiting) and terminal ones (Spec.Done, and whatever Finish is given).
const (
	StatusPending    = "pending"
	StatusProcessing = "processing"
	StatusFailed     = "failed"
)

// Spec describes one leased table to the engine.
type Spec struct {
	Dialect sqlstore.Dialect
	// Table is the table's name, validated (sqlstore.ValidateTableName).
	Table string
	// Scope, if set, is a column that partitions the table, such as the
	// inbox's consumer_group: every statement is limited to the rows whose
	// Scope column holds the value given to [New]. The claim index must
	// then start with it.
	Scope string
	// Columns are the columns that claims and listings return, in the
	// order Scan reads them.
	Columns string
	// Waiting lists the statuses besides pending whose rows are due at
	// next_attempt_at (the outbox's scheduled).
	Waiting []string
	// Done is the status of a row handled successfully, and DoneAt the
	// column stamped with the time it was.
	Done, DoneAt string
	// FinishedAt, if set, is the column stamped when a row is finished as
	// failed (or another terminal status), and cleared when it is requeued.
	FinishedAt string
	// SizeOf, if set, is the column whose byte length bounds a claimed batch
	// (see Claim.MaxBytes).
	SizeOf string
	// CountOnClaim makes a claim count the attempt, before it runs, so that
	// a run that crashes its process still uses up attempts; releasing the
	// row uncounts it. Otherwise the settle counts attempts.
	CountOnClaim bool
	// Parked, if set, is a status of the table's own whose rows wait
	// outside the claim index (no next_attempt_at, no expiry) until
	// something makes them pending; Stats counts them, on an index of
	// theirs the table provides (partial on the status, or MySQL's
	// scoped status index).
	Parked string
}

// Table runs the engine's statements on one leased table, scoped to one
// value of Spec.Scope if the table has a scope. R is the table's row type,
// read by scan from Spec.Columns. A Table is safe for concurrent use.
type Table[R any] struct {
	d     sqlstore.Dialect
	scope []any // the scope value as the statements' first argument, or nil
	scan  func(*sql.Rows, *R) error
	// prepared, if set, runs statements given the pool or one of its
	// transactions as prepared statements.
	prepared *sqlstore.Prepared

	// The statements, built once; see New.
	claim, claimIDs, fetch         stmt
	lockIDs, lockRows              stmt
	markLocked, leaseLocked        stmt
	own, done, retry, finish       stmt
	release, requeue, failedIDs    stmt
	failed, expired, deleteExpired stmt
	stats                          stmt
	// unfinished are the statuses of rows that wait or run.
	unfinished []string
	// parked is Spec.Parked.
	parked string
}

// stmt is one statement and whether it may run prepared: a statement whose
// arguments Bun expands (bun.In on MySQL) may not.
type stmt struct {
	q       string
	prepare bool
}

// New returns the engine for the table spec describes, limited to the rows
// whose scope column holds scope (ignored without Spec.Scope). scan reads one
// row of Spec.Columns into r. prepared may be nil.
func New[R any](spec Spec, scope string, scan func(rows *sql.Rows, r *R) error, prepared *sqlstore.Prepared) *Table[R] {
	t := &Table[R]{d: spec.Dialect, scan: scan, prepared: prepared, parked: spec.Parked}
	d, table := spec.Dialect, spec.Table
	mysql := d.Name == "mysql"
	now := "(SELECT " + d.Now + ")" // once per statement: an index condition on PostgreSQL
	scoped := ""
	if spec.Scope != "" {
		scoped = spec.Scope + " = ? AND "
		t.scope = []any{scope}
	}
	due := append(append([]string{}, spec.Waiting...), StatusPending, StatusProcessing)
	t.unfinished = due
	claimable := fmt.Sprintf("%sstatus IN (%s) AND next_attempt_at >= ? AND next_attempt_at <= %s", scoped, quoteList(due), now)
	size := "0"
	if spec.SizeOf != "" {
		size = "octet_length(" + spec.SizeOf + ")"
		if d.Name != "postgres" {
			size = "length(" + spec.SizeOf + ")" // bytes for BLOBs on SQLite and MySQL
		}
	}
	count := ""
	if spec.CountOnClaim {
		count = ", attempts = attempts + 1"
	}
	take := fmt.Sprintf("status = '%s', lock_owner = ?, lease_until = %s + ?, next_attempt_at = %s + ?%s", StatusProcessing, now, now, count)
	mine := fmt.Sprintf("lock_owner = ? AND status = '%s'", StatusProcessing)
	// ids is a list of ids as one argument where the database can read a
	// list from one, so that one prepared statement serves every length.
	ids := "id IN (?)"
	switch d.Name {
	case "postgres":
		ids = "id = ANY(CAST(? AS BIGINT[]))"
	case "sqlite":
		ids = "id IN (SELECT value FROM json_each(?))"
	}
	byIDs := func(q string) stmt { return stmt{q: q, prepare: !mysql} }
	fixed := func(q string) stmt { return stmt{q: q, prepare: true} }

	if d.UpdateReturning {
		// One statement: lock due rows (skipping those another claimer
		// holds), keep the prefix that fits the byte budget, take them.
		lock, cfg, async := "", "", ""
		if d.SkipLocked {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		if d.Name == "postgres" {
			// A lease lost in a database crash only makes the row due
			// again, so the claim need not wait for its WAL flush.
			cfg = "cfg AS (SELECT set_config('synchronous_commit', 'off', true) AS v), "
			async = " AND (SELECT v FROM cfg) = 'off'"
		}
		t.claim = fixed(fmt.Sprintf(`WITH %sc AS (
  SELECT id, next_attempt_at, %s AS size FROM %s
  WHERE %s
  ORDER BY next_attempt_at LIMIT ?%s
), s AS (
  SELECT id, ROW_NUMBER() OVER w AS rn, SUM(size) OVER w AS run FROM c
  WINDOW w AS (ORDER BY next_attempt_at, id)
)
UPDATE %s SET %s
WHERE id IN (SELECT id FROM s WHERE rn = 1 OR run <= ?)%s
RETURNING %s`, cfg, size, table, claimable, lock, table, take, async, spec.Columns))
	} else {
		// MySQL: lock ids and sizes, update the prefix, then read it.
		// FORCE INDEX: on a small table MySQL prefers a full scan and a
		// sort, and its locking read would then lock every due row.
		t.claimIDs = fixed(fmt.Sprintf("SELECT id, %s FROM %s FORCE INDEX (%s) WHERE %s ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED",
			size, table, sqlstore.IndexName(table, "claim"), claimable))
		t.claim = byIDs(fmt.Sprintf("UPDATE %s SET %s WHERE %s", table, take, ids))
		t.fetch = byIDs(fmt.Sprintf("SELECT %s FROM %s WHERE %s AND %s", spec.Columns, table, ids, mine))
	}
	if d.SkipLocked {
		if d.Name == "postgres" {
			// The server ends the session, and so the transaction and its
			// locks, if it stays idle longer than the lease.
			t.lockRows = fixed(fmt.Sprintf(`WITH cfg AS (SELECT set_config('idle_in_transaction_session_timeout', ?, true) AS v), c AS (
  SELECT id, next_attempt_at, %s AS size FROM %s
  WHERE %s
  ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED
), s AS (
  SELECT id, ROW_NUMBER() OVER w AS rn, SUM(size) OVER w AS run FROM c
  WINDOW w AS (ORDER BY next_attempt_at, id)
)
SELECT %s FROM %s WHERE id IN (SELECT id FROM s WHERE rn = 1 OR run <= ?) AND (SELECT v FROM cfg) IS NOT NULL`, size, table, claimable, spec.Columns, table))
		} else {
			t.lockIDs = t.claimIDs
			t.lockRows = byIDs(fmt.Sprintf("SELECT %s FROM %s WHERE %s", spec.Columns, table, ids))
		}
		t.markLocked = byIDs(fmt.Sprintf("UPDATE %s SET status = '%s', lock_owner = ?, attempts = attempts + ?, %s = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL WHERE %s",
			table, spec.Done, spec.DoneAt, now, now, ids))
		t.leaseLocked = byIDs(fmt.Sprintf("UPDATE %s SET %s WHERE %s", table, take, ids))
	}
	// The new lease always differs from the old (the clock has moved), so
	// MySQL's "changed rows" count is 1 as well.
	t.own = fixed(fmt.Sprintf("UPDATE %s SET lease_until = %s + ?, next_attempt_at = %s + ? WHERE id = ? AND %s", table, now, now, mine))
	t.done = byIDs(fmt.Sprintf("UPDATE %s SET status = '%s', attempts = attempts + ?, %s = %s, expires_at = %s + ?, next_attempt_at = NULL, lease_until = NULL WHERE %s AND %s",
		table, spec.Done, spec.DoneAt, now, now, ids, mine))
	t.retry = fixed(fmt.Sprintf("UPDATE %s SET status = '%s', attempts = ?, next_attempt_at = %s + ?, lock_owner = NULL, lease_until = NULL, last_error = ? WHERE id = ? AND %s",
		table, StatusPending, now, mine))
	finishedAt, unfinish := "", ""
	if spec.FinishedAt != "" {
		finishedAt = spec.FinishedAt + " = " + now + ", "
		unfinish = spec.FinishedAt + " = NULL, "
	}
	t.finish = fixed(fmt.Sprintf("UPDATE %s SET status = ?, attempts = ?, next_attempt_at = NULL, lease_until = NULL, %sexpires_at = %s + ?, last_error = ? WHERE id = ? AND %s",
		table, finishedAt, now, mine))
	uncount := ""
	if spec.CountOnClaim {
		uncount = ", attempts = attempts - 1"
	}
	t.release = byIDs(fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s%s, lock_owner = NULL, lease_until = NULL WHERE %s AND %s",
		table, StatusPending, now, uncount, ids, mine))
	t.requeue = byIDs(fmt.Sprintf("UPDATE %s SET status = '%s', attempts = 0, next_attempt_at = %s, %sexpires_at = NULL, lock_owner = NULL, lease_until = NULL WHERE %sstatus = '%s' AND %s",
		table, StatusPending, now, unfinish, scoped, StatusFailed, ids))
	t.failedIDs = fixed(fmt.Sprintf("SELECT id FROM %s WHERE %s ORDER BY id LIMIT ?", table, failedWhere(spec)))
	t.failed = fixed(fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY id LIMIT ?", spec.Columns, table, failedWhere(spec)))
	expired := fmt.Sprintf("%sexpires_at <= %s", scoped, now)
	switch d.Name {
	case "mysql":
		// MySQL cannot LIMIT a subquery of IN, and a range DELETE would
		// take gap locks that block inserts: read ids without locking,
		// then delete them by primary key, checking again.
		t.expired = fixed(fmt.Sprintf("SELECT id FROM %s WHERE %s ORDER BY expires_at LIMIT ?", table, expired))
		t.deleteExpired = byIDs(fmt.Sprintf("DELETE FROM %s WHERE %s AND %s", table, expired, ids))
	case "postgres":
		// Computed once, then deleted by primary key; rows another
		// cleaner is deleting are skipped instead of waited for.
		t.deleteExpired = fixed(fmt.Sprintf("DELETE FROM %s WHERE id = ANY(ARRAY(SELECT id FROM %s WHERE %s ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED))", table, table, expired))
	default:
		t.deleteExpired = fixed(fmt.Sprintf("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE %s ORDER BY expires_at LIMIT ?)", table, table, expired))
	}
	t.stats = fixed(statsQuery(spec, due))
	return t
}

func quoteList(statuses []string) string {
	q := make([]string, len(statuses))
	for i, s := range statuses {
		q[i] = "'" + s + "'"
	}
	return strings.Join(q, ", ")
}

// Dialect returns the table's dialect.
func (t *Table[R]) Dialect() sqlstore.Dialect { return t.d }

// Claim says which rows to claim and for how long.
type Claim struct {
	// Owner is the claimer's lock_owner.
	Owner string
	// From skips rows due before it (database clock, µs): a hint that
	// spares the scan the index entries of rows already settled, which
	// stay in the index until vacuum. 0 scans from the start, which
	// callers must do regularly: rows that commit late, or whose lease or
	// retry delay ends, may fall before any hint.
	From int64
	// Limit bounds the batch in rows, and MaxBytes in bytes of the
	// Spec.SizeOf column (at least one row is claimed; 0 is no bound).
	Limit, MaxBytes int
	// Lease is how long the rows stay with Owner.
	Lease time.Duration
}

func (c Claim) maxBytes() int {
	if c.MaxBytes <= 0 {
		return math.MaxInt32
	}
	return c.MaxBytes
}

// Claim leases up to c.Limit due rows to c.Owner until now+c.Lease: the
// smallest prefix, in due order, whose sizes fit c.MaxBytes. Due rows are
// waiting and pending rows whose next attempt has come, and processing rows
// whose lease has expired. With Spec.CountOnClaim the returned rows carry
// their new attempt count.
func (t *Table[R]) Claim(ctx context.Context, db bun.IDB, c Claim) ([]R, error) {
	lease := micros(c.Lease)
	if t.claimIDs.q == "" {
		args := t.args(c.From, c.Limit, c.Owner, lease, lease, c.maxBytes())
		rows, err := t.query(QueryContext(ctx, t.d), db, t.claim, args...)
		if err != nil {
			return nil, err
		}
		return t.scanRows(rows, c.Limit)
	}
	var ids []int64
	err := t.readCommitted(ctx, db, func(ctx context.Context, tx bun.IDB) error {
		var err error
		ids, err = t.lockPrefix(ctx, tx, c)
		if err != nil || len(ids) == 0 {
			return err
		}
		_, err = t.exec(ctx, tx, t.claim, c.Owner, lease, lease, t.idList(ids))
		return err
	})
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err := t.query(ctx, db, t.fetch, t.idList(ids), c.Owner)
	if err != nil {
		return nil, err
	}
	return t.scanRows(rows, len(ids))
}

// lockPrefix locks due rows by id and size, and returns the ids of the
// prefix that fits the byte budget.
func (t *Table[R]) lockPrefix(ctx context.Context, tx bun.IDB, c Claim) ([]int64, error) {
	rows, err := t.query(ctx, tx, t.claimIDs, t.args(c.From, c.Limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	total, budget := 0, c.maxBytes()
	for rows.Next() {
		var id int64
		var size int
		if err := rows.Scan(&id, &size); err != nil {
			return nil, err
		}
		if len(ids) > 0 && total+size > budget {
			break
		}
		total += size
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// LocksRows reports whether the database can lock due rows and skip those
// another claimer has locked, so that a claimer may hold a batch by its row
// locks (see Lock) instead of writing a lease first.
func (t *Table[R]) LocksRows() bool { return t.lockRows.q != "" }

// Lock begins a transaction and locks due rows in it as Claim chooses them,
// skipping rows locked by others; c.Owner is not used. The locks are the
// lease: they last until the transaction ends, which the caller bounds by
// c.Lease, and on PostgreSQL the server also ends the session if the
// transaction stays idle for c.Lease. With no due rows it returns a nil
// transaction.
//
// The caller settles the rows in the transaction with MarkLocked and
// LeaseLocked and commits: a batch costs one row write instead of two.
func (t *Table[R]) Lock(ctx context.Context, db *bun.DB, c Claim) (*bun.Tx, []R, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, nil, err
	}
	rows, err := t.lock(ctx, tx, c)
	if err != nil || len(rows) == 0 {
		_ = tx.Rollback() // nothing written
		return nil, nil, err
	}
	return &tx, rows, nil
}

func (t *Table[R]) lock(ctx context.Context, tx bun.Tx, c Claim) ([]R, error) {
	if t.lockIDs.q == "" {
		timeout := strconv.FormatInt(max(1, c.Lease.Milliseconds()), 10)
		rows, err := t.query(ctx, tx, t.lockRows, append([]any{timeout}, t.args(c.From, c.Limit, c.maxBytes())...)...)
		if err != nil {
			return nil, err
		}
		return t.scanRows(rows, c.Limit)
	}
	ids, err := t.lockPrefix(ctx, tx, c)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err := t.query(ctx, tx, t.lockRows, t.idList(ids))
	if err != nil {
		return nil, err
	}
	return t.scanRows(rows, len(ids))
}

// MarkLocked marks rows locked by tx done by owner, adding failures to
// their attempts, to expire after retention.
func (t *Table[R]) MarkLocked(ctx context.Context, tx bun.Tx, owner string, ids []int64, failures int, retention time.Duration) error {
	_, err := t.exec(ctx, tx, t.markLocked, owner, failures, micros(retention), t.idList(ids))
	return err
}

// LeaseLocked leases rows locked by tx to owner until now+lease, as Claim
// does, so that they stay with owner after the transaction ends.
func (t *Table[R]) LeaseLocked(ctx context.Context, tx bun.Tx, owner string, ids []int64, lease time.Duration) error {
	_, err := t.exec(ctx, tx, t.leaseLocked, owner, micros(lease), micros(lease), t.idList(ids))
	return err
}

// Own checks that owner still holds row id and renews its lease until
// now+lease. Run in a transaction, it also locks the row until the
// transaction ends, so that no other claimer can take it meanwhile however
// long the run takes.
func (t *Table[R]) Own(ctx context.Context, tx bun.IDB, owner string, id int64, lease time.Duration) (bool, error) {
	n, err := t.exec(ctx, tx, t.own, micros(lease), micros(lease), id, owner)
	return n == 1, err
}

// Done marks owner's rows ids done, adding failures to their attempts, to
// expire after retention. Rows another owner has taken over are left alone.
// It returns how many rows it marked.
func (t *Table[R]) Done(ctx context.Context, db bun.IDB, owner string, ids []int64, failures int, retention time.Duration) (int64, error) {
	return t.exec(ctx, db, t.done, failures, micros(retention), t.idList(ids), owner)
}

// Retry returns owner's row id to pending after a failed attempt, with
// attempts counted so far, due after delay.
func (t *Table[R]) Retry(ctx context.Context, db bun.IDB, owner string, id int64, attempts int, delay time.Duration, lastErr string) error {
	_, err := t.exec(ctx, db, t.retry, attempts, micros(delay), lastErr, id, owner)
	return err
}

// Finish ends owner's row id with a terminal status (failed, or one of the
// table's own), to expire after retention.
func (t *Table[R]) Finish(ctx context.Context, db bun.IDB, owner string, id int64, status string, attempts int, retention time.Duration, lastErr string) error {
	_, err := t.exec(ctx, db, t.finish, status, attempts, micros(retention), lastErr, id, owner)
	return err
}

// Release gives owner's rows ids back, pending and due now, without a
// settled attempt (with Spec.CountOnClaim the claim's count is undone).
func (t *Table[R]) Release(ctx context.Context, db bun.IDB, owner string, ids []int64) error {
	_, err := t.exec(ctx, db, t.release, t.idList(ids), owner)
	return err
}

// Requeue returns the failed rows among ids to pending, due now, with a
// fresh budget of attempts, batch ids per statement, and reports how many
// it changed.
func (t *Table[R]) Requeue(ctx context.Context, db bun.IDB, ids []int64, batch int) (int64, error) {
	var total int64
	for chunk := range slices.Chunk(ids, max(1, batch)) {
		n, err := t.exec(ctx, db, t.requeue, t.args(t.idList(chunk))...)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// RequeueFailed requeues every failed row, batch rows per statement, and
// reports how many it changed. Each batch reads ids first and updates them
// by primary key, so that no range of the table is locked.
func (t *Table[R]) RequeueFailed(ctx context.Context, db bun.IDB, batch int) (int64, error) {
	var total int64
	for {
		ids, err := t.queryIDs(ctx, db, t.failedIDs, max(1, batch))
		if err != nil || len(ids) == 0 {
			return total, err
		}
		n, err := t.exec(ctx, db, t.requeue, t.args(t.idList(ids))...)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// Failed returns up to limit failed rows, lowest ids first.
func (t *Table[R]) Failed(ctx context.Context, db bun.IDB, limit int) ([]R, error) {
	rows, err := t.query(QueryContext(ctx, t.d), db, t.failed, t.args(limit)...)
	if err != nil {
		return nil, err
	}
	return t.scanRows(rows, min(limit, 1024))
}

// Cleanup deletes the rows whose expiry has passed, batch rows per
// statement by primary key, each statement its own short transaction, and
// reports how many it deleted. Several cleaners may run at once: on
// PostgreSQL they skip each other's rows, and each goes on until it finds
// nothing left to delete. On SQLite, which has one writer at a time, it
// waits after each batch three times as long as the batch took, so that a
// cleaner holds the writer at most a quarter of the time: the outbox's and
// an inbox's cleaners together leave the application at least half of it.
func (t *Table[R]) Cleanup(ctx context.Context, db bun.IDB, batch int) (int64, error) {
	var total int64
	for {
		start := time.Now()
		n, err := t.cleanupBatch(ctx, db, max(1, batch))
		total += n
		// A short batch is not the end: another cleaner may have taken
		// part of it.
		if err != nil || n == 0 || ctx.Err() != nil {
			return total, err
		}
		if t.d.Name == "sqlite" {
			sleep(ctx, min(3*time.Since(start), 2*time.Second))
		}
	}
}

// cleanupBatch deletes up to limit expired rows in one statement.
func (t *Table[R]) cleanupBatch(ctx context.Context, db bun.IDB, limit int) (int64, error) {
	if t.expired.q == "" {
		return t.exec(ctx, db, t.deleteExpired, t.args(limit)...)
	}
	// Another cleaner may read the same ids and delete them first: then
	// read the next ones.
	for {
		ids, err := t.queryIDs(ctx, db, t.expired, limit)
		if err != nil || len(ids) == 0 {
			return 0, err
		}
		n, err := t.exec(ctx, db, t.deleteExpired, t.args(t.idList(ids))...)
		if err != nil || n > 0 {
			return n, err
		}
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// args prepends the scope value, if any, to args.
func (t *Table[R]) args(args ...any) []any {
	if t.scope == nil {
		return args
	}
	return append(append(make([]any, 0, len(args)+1), t.scope...), args...)
}

// idList writes ids as the one argument of an id list: a PostgreSQL array
// literal, a JSON array on SQLite, and a list Bun expands on MySQL.
func (t *Table[R]) idList(ids []int64) any {
	if t.d.Name == "mysql" {
		return bun.In(ids)
	}
	open, close := byte('['), byte(']')
	if t.d.Name == "postgres" {
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

func (t *Table[R]) scanRows(rows *sql.Rows, capacity int) ([]R, error) {
	defer rows.Close()
	out := make([]R, 0, capacity)
	for rows.Next() {
		var r R
		if err := t.scan(rows, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *Table[R]) queryIDs(ctx context.Context, db bun.IDB, s stmt, limit int) ([]int64, error) {
	rows, err := t.query(QueryContext(ctx, t.d), db, s, t.args(limit)...)
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

// query runs a statement that returns rows: prepared where it may be and
// db keeps statements, through Bun otherwise.
func (t *Table[R]) query(ctx context.Context, db bun.IDB, s stmt, args ...any) (*sql.Rows, error) {
	if s.prepare {
		return sqlstore.QueryPrepared(ctx, t.prepared, db, s.q, args...)
	}
	return db.QueryContext(ctx, s.q, args...)
}

// exec runs a write and returns the rows it changed. Given the pool on
// MySQL, it runs the write in a READ COMMITTED transaction: under the
// default REPEATABLE READ an UPDATE locks every row it reads and takes gap
// locks, so a claimer holding a locked batch would block others' settles
// and the application's inserts.
func (t *Table[R]) exec(ctx context.Context, db bun.IDB, s stmt, args ...any) (int64, error) {
	run := func(ctx context.Context, db bun.IDB) (int64, error) {
		if s.prepare {
			return rowsAffected(sqlstore.ExecPrepared(ctx, t.prepared, db, s.q, args...))
		}
		return rowsAffected(db.ExecContext(ctx, s.q, args...))
	}
	if _, ok := db.(*bun.DB); !ok || t.d.Name != "mysql" {
		return run(ctx, db)
	}
	var n int64
	err := t.readCommitted(ctx, db, func(ctx context.Context, tx bun.IDB) error {
		var err error
		n, err = run(ctx, tx)
		return err
	})
	return n, err
}

// readCommitted runs f in a READ COMMITTED transaction of db, or in db
// itself if db is already a transaction.
func (t *Table[R]) readCommitted(ctx context.Context, db bun.IDB, f func(context.Context, bun.IDB) error) error {
	if tx, ok := db.(bun.Tx); ok {
		return f(ctx, tx)
	}
	return db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
		return f(ctx, tx)
	})
}

// QueryContext returns the context for a query that returns rows. On SQLite
// it is not cancelled: modernc.org/sqlite before v1.62 drops, unfinalized,
// the statement of a query whose context ends while it runs, and the
// connection then holds its transaction (and, for UPDATE ... RETURNING, the
// write lock) for good, even once database/sql has closed it. Applications
// may pin an older driver than eventgen's tests do. The engine's queries are
// short and bounded by LIMIT.
func QueryContext(ctx context.Context, d sqlstore.Dialect) context.Context {
	if d.Name == "sqlite" {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

func micros(d time.Duration) int64 { return d.Microseconds() }

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// failedWhere selects the failed rows of spec's table (in its scope) by an
// index: the partial failed index on PostgreSQL and SQLite, the scope's
// (scope, status) index of a scoped MySQL table, and the FailedColumn index
// of an unscoped one, which lists failed rows alone (see Schema).
func failedWhere(spec Spec) string {
	if spec.Dialect.Name == "mysql" && spec.Scope == "" {
		return FailedColumn + " = 1"
	}
	scoped := ""
	if spec.Scope != "" {
		scoped = spec.Scope + " = ? AND "
	}
	return fmt.Sprintf("%sstatus = '%s'", scoped, StatusFailed)
}
