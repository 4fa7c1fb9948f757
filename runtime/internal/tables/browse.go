package tables

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Browser reads the rows of an outbox table, or of one group of an inbox
// table, for operators: lists filtered and paged by id (keyset, never
// OFFSET), one row with its payload, throughput per minute, and the few
// writes an operator makes by hand (delete, publish a scheduled row now).
// Claims, settles and requeues stay with the engine (leased.Table).
//
// Every statement names its columns, so that columns added later (such as
// an ordering sequence) change nothing here.
type Browser struct {
	d     sqlstore.Dialect
	table string
	// scope is the consumer group of an inbox, as the first argument of
	// every statement; nil for the outbox.
	scope []any
	// scoped is "consumer_group = ? AND " for an inbox, empty otherwise.
	scoped string
	// doneAt is the column stamped when a row finished: published_at or
	// handled_at.
	doneAt string
	// list and detail are the columns of a listed row and of one row.
	list, detail string
}

// BrowseRow is a row as an operator sees it. Times are µs since the epoch
// on the database's clock; 0 when NULL.
type BrowseRow struct {
	ID        int64
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Source    string
	// Seq is the row's position in its stream (source, topic, key), 0 if
	// it has none.
	Seq int64
	// EventTime is the producer's time of an inbox row; 0 in the outbox.
	EventTime   int64
	Status      string
	Attempts    int
	CreatedAt   int64
	NextAttempt int64
	DoneAt      int64 // published_at or handled_at
	ExpiresAt   int64
	LeaseUntil  int64
	LockOwner   string
	LastError   string
	// Payload and Headers (a JSON object) are read by Row only.
	Payload []byte
	Headers string
}

const browseCommon = "id, message_id, name, version, topic, msg_key, source, seq, %s, status, attempts, created_at, next_attempt_at, %s, expires_at, lease_until, lock_owner, last_error"

// NewOutboxBrowser returns the browser of the outbox table named table
// (validated).
func NewOutboxBrowser(d sqlstore.Dialect, table string) *Browser {
	cols := fmt.Sprintf(browseCommon, "0", "published_at")
	return &Browser{d: d, table: table, doneAt: "published_at", list: cols, detail: cols + ", payload, headers"}
}

// NewInboxBrowser returns the browser of group's rows of the inbox table
// named table (validated).
func NewInboxBrowser(d sqlstore.Dialect, table, group string) *Browser {
	cols := fmt.Sprintf(browseCommon, "event_time", "handled_at")
	return &Browser{d: d, table: table, scope: []any{group}, scoped: "consumer_group = ? AND ",
		doneAt: "handled_at", list: cols, detail: cols + ", payload, headers"}
}

// BrowseFilter selects and pages the rows of a list. Empty fields select
// everything.
type BrowseFilter struct {
	Status, Name, Key, MessageID string
	// Since and Until bound created_at: Since <= created_at < Until (µs).
	Since, Until int64
	// Before lists the rows with ids below it, newest first; After those
	// with ids above it, oldest first (the caller reverses them). At most
	// one is set; with neither, the newest rows are listed.
	Before, After int64
	// Limit is how many rows to read.
	Limit int
}

// List returns up to f.Limit rows that f selects, by id descending (or
// ascending with f.After): one index range on the primary key, however far
// the page is from the newest rows.
func (b *Browser) List(ctx context.Context, db bun.IDB, f BrowseFilter) ([]BrowseRow, error) {
	var where []string
	args := slices.Clone(b.scope)
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if f.Status != "" {
		add("status = ?", f.Status)
	}
	if f.Name != "" {
		add("name = ?", f.Name)
	}
	if f.Key != "" {
		add("msg_key = ?", f.Key)
	}
	if f.MessageID != "" {
		add("message_id = ?", f.MessageID)
	}
	if f.Since != 0 {
		add("created_at >= ?", f.Since)
	}
	if f.Until != 0 {
		add("created_at < ?", f.Until)
	}
	order := "DESC"
	switch {
	case f.After != 0:
		add("id > ?", f.After)
		order = "ASC"
	case f.Before != 0:
		add("id < ?", f.Before)
	}
	cond := strings.TrimSuffix(b.scoped, " AND ")
	if len(where) > 0 {
		cond = b.scoped + strings.Join(where, " AND ")
	}
	if cond != "" {
		cond = " WHERE " + cond
	}
	q := fmt.Sprintf("SELECT %s FROM %s%s ORDER BY id %s LIMIT ?", b.list, b.table, cond, order)
	args = append(args, max(1, f.Limit))
	return b.query(ctx, db, q, false, args...)
}

// Row returns the row id with its payload and headers, if it exists.
func (b *Browser) Row(ctx context.Context, db bun.IDB, id int64) (BrowseRow, bool, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %sid = ?", b.detail, b.table, b.scoped)
	rows, err := b.query(ctx, db, q, true, append(slices.Clone(b.scope), id)...)
	if err != nil || len(rows) == 0 {
		return BrowseRow{}, false, err
	}
	return rows[0], true, nil
}

func (b *Browser) query(ctx context.Context, db bun.IDB, q string, detail bool, args ...any) ([]BrowseRow, error) {
	rows, err := db.QueryContext(leased.QueryContext(ctx, b.d), q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BrowseRow
	for rows.Next() {
		var r BrowseRow
		var next, done, expires, lease sql.NullInt64
		var owner, lastErr, headers sql.NullString
		dest := []any{&r.ID, &r.MessageID, &r.Name, &r.Version, &r.Topic, &r.Key, &r.Source, &r.Seq, &r.EventTime,
			&r.Status, &r.Attempts, &r.CreatedAt, &next, &done, &expires, &lease, &owner, &lastErr}
		if detail {
			dest = append(dest, &r.Payload, &headers)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		r.NextAttempt, r.DoneAt, r.ExpiresAt, r.LeaseUntil = next.Int64, done.Int64, expires.Int64, lease.Int64
		r.LockOwner, r.LastError, r.Headers = owner.String, lastErr.String, headers.String
		out = append(out, r)
	}
	return out, rows.Err()
}

// Held returns up to limit of the group's held rows of stream s after
// sequence after, in sequence order: the events that wait behind it. It
// reads the index of held rows. Inbox browsers only.
func (b *Browser) Held(ctx context.Context, db bun.IDB, s Stream, after int64, limit int) ([]BrowseRow, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %smsg_key = ? AND seq > ? AND topic = ? AND source = ? AND status = '%s' ORDER BY seq LIMIT ?",
		b.list, b.table, b.scoped, StatusHeld)
	return b.query(ctx, db, q, false, append(slices.Clone(b.scope), s.Key, after, s.Topic, s.Source, max(1, limit))...)
}

// KeyState is where one stream of a group stands.
type KeyState struct {
	// Seen reports that the group has applied or skipped an event of the
	// stream; Applied is the last such sequence.
	Seen    bool
	Applied int64
	// Held counts the stream's held rows, the oldest written at Since (µs).
	Held  int
	Since int64
}

// KeyState reads where stream s of the group stands: its key table row and
// its held rows. Inbox browsers only.
func (b *Browser) KeyState(ctx context.Context, db bun.IDB, s Stream) (KeyState, error) {
	ctx = leased.QueryContext(ctx, b.d)
	var k KeyState
	err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT seq FROM %s WHERE %sstream = ?", KeysTable(b.table), b.scoped),
		append(slices.Clone(b.scope), s.ID())...).Scan(&k.Applied)
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return k, err
	default:
		k.Seen = true
	}
	var since sql.NullInt64
	q := fmt.Sprintf("SELECT COUNT(*), MIN(created_at) FROM %s WHERE %smsg_key = ? AND seq > 0 AND topic = ? AND source = ? AND status = '%s'",
		b.table, b.scoped, StatusHeld)
	if err := db.QueryRowContext(ctx, q, append(slices.Clone(b.scope), s.Key, s.Topic, s.Source)...).Scan(&k.Held, &since); err != nil {
		return k, err
	}
	k.Since = since.Int64
	return k, nil
}

// RowIDs returns the ids of the rows of messageIDs, by message id.
func (b *Browser) RowIDs(ctx context.Context, db bun.IDB, messageIDs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(messageIDs))
	if len(messageIDs) == 0 {
		return out, nil
	}
	q := fmt.Sprintf("SELECT message_id, id FROM %s WHERE %smessage_id IN (?)", b.table, b.scoped)
	rows, err := db.QueryContext(leased.QueryContext(ctx, b.d), q, append(slices.Clone(b.scope), bun.In(messageIDs))...)
	if err != nil {
		return nil, err
	}
	return out, scanInt64s(rows, out)
}

// Eligible returns those of ids whose rows have one of statuses, in
// ascending order: the rows an action on ids would change.
func (b *Browser) Eligible(ctx context.Context, db bun.IDB, ids []int64, statuses []string) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q := fmt.Sprintf("SELECT id FROM %s WHERE %sstatus IN (?) AND id IN (?) ORDER BY id", b.table, b.scoped)
	return column[int64](db.QueryContext(leased.QueryContext(ctx, b.d), q, append(slices.Clone(b.scope), bun.In(statuses), bun.In(ids))...))
}

// column reads the one column of rows.
func column[T any](rows *sql.Rows, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Delete deletes those of ids whose rows have one of statuses, by primary
// key, and reports how many it deleted.
func (b *Browser) Delete(ctx context.Context, db bun.IDB, ids []int64, statuses []string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	q := fmt.Sprintf("DELETE FROM %s WHERE %sstatus IN (?) AND id IN (?)", b.table, b.scoped)
	return b.exec(ctx, db, q, append(slices.Clone(b.scope), bun.In(statuses), bun.In(ids))...)
}

// PublishNow makes those of ids that are scheduled pending and due now,
// and reports how many it changed.
func (b *Browser) PublishNow(ctx context.Context, db bun.IDB, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	q := fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s WHERE %sstatus = '%s' AND id IN (?)",
		b.table, StatusPending, b.d.Now, b.scoped, StatusScheduled)
	return b.exec(ctx, db, q, append(slices.Clone(b.scope), bun.In(ids))...)
}

// exec runs a write; on MySQL given the pool, in a READ COMMITTED
// transaction, which takes no gap locks (see leased.Table).
func (b *Browser) exec(ctx context.Context, db bun.IDB, q string, args ...any) (int64, error) {
	run := func(ctx context.Context, db bun.IDB) (int64, error) {
		res, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	if _, ok := db.(*bun.DB); !ok || b.d.Name != "mysql" {
		return run(ctx, db)
	}
	var n int64
	err := db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
		var err error
		n, err = run(ctx, tx)
		return err
	})
	return n, err
}

// Bucket is the number of rows of one status that finished in one minute.
type Bucket struct {
	Status string
	// Minute counts minutes from the start of the window.
	Minute int
	N      int64
}

// Throughput counts the rows that finished (published, handled, failed)
// in the last window µs, by status and minute, on the database's clock,
// and returns the window's start. retention is the shortest retention a
// finished row gets: the statement reads the expiry index only from the
// window's start plus it, not the whole history the table keeps.
func (b *Browser) Throughput(ctx context.Context, db bun.IDB, window, retention int64) ([]Bucket, int64, error) {
	ctx = leased.QueryContext(ctx, b.d)
	var now int64
	if err := db.QueryRowContext(ctx, "SELECT "+b.d.Now).Scan(&now); err != nil {
		return nil, 0, err
	}
	start := now - window
	div := "/"
	if b.d.Name == "mysql" {
		div = "DIV"
	}
	q := fmt.Sprintf("SELECT status, (%s - ?) %s 60000000 AS m, COUNT(*) FROM %s WHERE %sexpires_at >= ? AND %s >= ? GROUP BY status, m ORDER BY m",
		b.doneAt, div, b.table, b.scoped, b.doneAt)
	args := append(append([]any{start}, b.scope...), start+retention, start)
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []Bucket
	for rows.Next() {
		var bk Bucket
		if err := rows.Scan(&bk.Status, &bk.Minute, &bk.N); err != nil {
			return nil, 0, err
		}
		out = append(out, bk)
	}
	return out, start, rows.Err()
}

// InboxGroups returns the consumer groups that have rows in the inbox
// table named table (validated), sorted.
func InboxGroups(ctx context.Context, db bun.IDB, d sqlstore.Dialect, table string) ([]string, error) {
	return column[string](db.QueryContext(leased.QueryContext(ctx, d), "SELECT DISTINCT consumer_group FROM "+table+" ORDER BY consumer_group"))
}
