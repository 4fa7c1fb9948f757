package tables

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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
	// Each part length-prefixed, so that no two triples write the same
	// bytes.
	b := make([]byte, 0, 3*(len(source)+len(topic)+len(key)+8))
	for _, s := range []string{source, topic, key} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(append(append(b, ':'), s...), ';')
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
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
// indexes of its ordered and held rows, and the key table.
var inboxOrderingMigrations = []sqlstore.Migration{{
	Version: 3,
	Statements: func(d sqlstore.Dialect, table string) []string {
		return []string{addSeqColumn(d, table)}
	},
}, {
	Version: 4,
	Statements: func(d sqlstore.Dialect, table string) []string {
		// A key's rows by sequence; on PostgreSQL and SQLite also its
		// held rows alone, which scans of held rows read. MySQL, without
		// partial indexes, finds those through the (group, status)
		// index of a scoped table (see leased.Spec.Schema).
		ordered := sqlstore.IndexName(table, "ordered")
		if d.Name == "mysql" {
			return []string{fmt.Sprintf("ALTER TABLE %s ADD INDEX %s (consumer_group, msg_key, seq)", table, ordered)}
		}
		return []string{
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, msg_key, seq) WHERE seq > 0", ordered, table),
			fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, msg_key, seq) WHERE status = '%s'", sqlstore.IndexName(table, "held"), table, StatusHeld),
		}
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

// scanInt64s reads rows of a string and an integer into out, and closes
// rows.
func scanInt64s(rows interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}, out map[string]int64) error {
	defer rows.Close()
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		out[k] = v
	}
	return rows.Err()
}

// scanLast reads the streams' last numbers into last, and checks that
// every one of the want streams has one.
func scanLast(rows interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}, last map[string]int64, want int) error {
	if err := scanInt64s(rows, last); err != nil {
		return err
	}
	if len(last) != want {
		return fmt.Errorf("key table returned %d of %d streams", len(last), want)
	}
	return nil
}

// orderingSQL holds an inbox's ordering statements.
type orderingSQL struct {
	advance, advanceRead string // advanceRead reads back on MySQL, which has no RETURNING
	wake, park, keep     string
	heldStreams          string
	streams              string
	lock, read, set      string
	next, firstHeld      string
	waiting              string
	silent, forget       string
	lockStreams          string
	take, taken          string // taken reads back on MySQL
}

func newOrderingSQL(d sqlstore.Dialect, table string) orderingSQL {
	keys, now := KeysTable(table), d.Now
	var o orderingSQL
	// An event of sequence n advances its stream from n-1 to n, and
	// records its message id there; any other position is left as it is.
	// The statement locks the stream's row until the transaction ends.
	insert := fmt.Sprintf("INSERT INTO %s%%s (consumer_group, stream, source, topic, msg_key, seq, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, %s)", keys, now)
	if d.Name == "mysql" {
		o.advance = fmt.Sprintf(insert, "") + fmt.Sprintf(" ON DUPLICATE KEY UPDATE message_id = IF(seq = ?, ?, message_id), updated_at = IF(seq = ?, %s, updated_at), seq = IF(seq = ?, ?, seq)", now)
		o.advanceRead = fmt.Sprintf("SELECT seq, message_id FROM %s WHERE consumer_group = ? AND stream = ?", keys)
	} else {
		o.advance = fmt.Sprintf(insert, " AS k") + fmt.Sprintf(" ON CONFLICT (consumer_group, stream) DO UPDATE SET message_id = CASE WHEN k.seq = ? THEN ? ELSE k.message_id END, "+
			"updated_at = CASE WHEN k.seq = ? THEN %s ELSE k.updated_at END, seq = CASE WHEN k.seq = ? THEN ? ELSE k.seq END RETURNING seq, message_id", now)
	}
	// "seq > 0" and "status = 'held'" let PostgreSQL and SQLite use the
	// partial indexes of ordered and held rows.
	o.wake = fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = %s WHERE consumer_group = ? AND msg_key = ? AND seq = ? AND seq > 0 AND topic = ? AND source = ? AND status = '%s'",
		table, StatusPending, now, StatusHeld)
	o.park = fmt.Sprintf("UPDATE %s SET status = '%s', attempts = attempts - 1, next_attempt_at = NULL, lock_owner = NULL, lease_until = NULL WHERE id = ? AND lock_owner = ?",
		table, StatusHeld)
	o.keep = fmt.Sprintf("UPDATE %s SET expires_at = NULL WHERE id = ? AND status = '%s'", table, StatusFailed)
	o.heldStreams = fmt.Sprintf("SELECT source, topic, msg_key, MIN(seq), COUNT(*), MIN(created_at), MIN(created_at) < %s - ? FROM %s "+
		"WHERE consumer_group = ? AND status = '%s' AND seq > 0 GROUP BY source, topic, msg_key ORDER BY MIN(created_at) LIMIT ?", now, table, StatusHeld)
	o.streams = fmt.Sprintf("SELECT stream, seq FROM %s WHERE consumer_group = ? AND stream IN (?)", keys)
	// A write that changes nothing locks the row (and, on SQLite, the
	// database) before the read.
	o.lock = fmt.Sprintf("UPDATE %s SET updated_at = updated_at WHERE consumer_group = ? AND stream = ?", keys)
	o.read = fmt.Sprintf("SELECT seq FROM %s WHERE consumer_group = ? AND stream = ?", keys)
	o.firstHeld = fmt.Sprintf("SELECT COALESCE(MIN(seq), 0) FROM %s WHERE consumer_group = ? AND msg_key = ? AND seq > 0 AND topic = ? AND source = ? AND status = '%s'", table, StatusHeld)
	o.set = fmt.Sprintf("UPDATE %s SET seq = ?, message_id = ?, updated_at = %s WHERE consumer_group = ? AND stream = ?", keys, now)
	// A key is silent when nothing of it changed for a retention and no
	// row of it is unfinished or kept (those have no expiry). The forget
	// checks it again, once it holds the keys' rows (see ForgetKeys).
	silent := fmt.Sprintf("%[1]s.updated_at < %[2]s - ? AND NOT EXISTS (SELECT 1 FROM %[3]s i WHERE i.consumer_group = %[1]s.consumer_group AND i.msg_key = %[1]s.msg_key "+
		"AND i.seq > 0 AND i.topic = %[1]s.topic AND i.source = %[1]s.source AND i.expires_at IS NULL)", keys, now, table)
	o.silent = fmt.Sprintf("SELECT stream FROM %s WHERE consumer_group = ? AND %s LIMIT ?", keys, silent)
	o.lockStreams = fmt.Sprintf("UPDATE %s SET updated_at = updated_at WHERE consumer_group = ? AND stream IN (?)", keys)
	o.forget = fmt.Sprintf("DELETE FROM %s WHERE consumer_group = ? AND stream IN (?) AND %s", keys, silent)
	// Take claims a stream's held row of a sequence as a retrier's claim
	// does (processing, leased, the attempt counted).
	match := fmt.Sprintf("consumer_group = ? AND msg_key = ? AND seq = ? AND seq > 0 AND topic = ? AND source = ? AND status = '%s'", StatusHeld)
	o.take = fmt.Sprintf("UPDATE %s SET status = '%s', lock_owner = ?, lease_until = %s + ?, next_attempt_at = %s + ?, attempts = attempts + 1 WHERE %s",
		table, "processing", now, now, match)
	if d.Name == "mysql" {
		o.taken = fmt.Sprintf("SELECT %s FROM %s WHERE consumer_group = ? AND msg_key = ? AND seq = ? AND seq > 0 AND topic = ? AND source = ? AND status = 'processing' AND lock_owner = ?",
			inboxColumns, table)
	} else {
		o.take += " RETURNING " + inboxColumns
	}
	o.next = fmt.Sprintf("SELECT id, message_id, status, last_error, %s FROM %s WHERE consumer_group = ? AND msg_key = ? AND seq = ? AND seq > 0 AND topic = ? AND source = ?", appliedRow, table)
	// The rows of a stream between two sequences that wait: held, pending,
	// running or kept failed, the rows with no expiry.
	o.waiting = fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE consumer_group = ? AND msg_key = ? AND seq > ? AND seq < ? AND seq > 0 AND topic = ? AND source = ? AND expires_at IS NULL", table)
	return o
}

// Position is where an ordered row stands in its group's stream.
type Position struct {
	// Advanced reports that the row was the next event and that its
	// transaction moved the stream to it: the row may run, and its
	// transaction's rollback moves the stream back.
	Advanced bool
	// Applied is the stream's last applied (or skipped) sequence, before
	// this row when it advanced.
	Applied int64
}

// Advance moves r's stream in tx from r.Seq-1 to r.Seq, if it stands
// there, and locks it until tx ends. A first event (sequence 1) also
// starts a stream the group has never seen; a later one finds it at 0.
func (in *Inbox) Advance(ctx context.Context, tx bun.IDB, r InboxRow) (Position, error) {
	stream := StreamID(r.Source, r.Topic, r.Key)
	first, firstID := int64(0), ""
	if r.Seq == 1 {
		first, firstID = 1, r.MessageID
	}
	args := []any{in.Group, stream, r.Source, r.Topic, r.Key, first, firstID, r.Seq - 1, r.MessageID, r.Seq - 1, r.Seq - 1, r.Seq}
	var seq int64
	var by string
	if in.ordering.advanceRead != "" {
		if _, err := sqlstore.ExecPrepared(ctx, in.Prepared, tx, in.ordering.advance, args...); err != nil {
			return Position{}, err
		}
		rows, err := sqlstore.QueryPrepared(ctx, in.Prepared, tx, in.ordering.advanceRead, in.Group, stream)
		if err != nil {
			return Position{}, err
		}
		if err := scanOne(rows, &seq, &by); err != nil {
			return Position{}, err
		}
	} else {
		rows, err := sqlstore.QueryPrepared(ctx, in.Prepared, tx, in.ordering.advance, args...)
		if err != nil {
			return Position{}, err
		}
		if err := scanOne(rows, &seq, &by); err != nil {
			return Position{}, err
		}
	}
	if seq == r.Seq && by == r.MessageID {
		return Position{Advanced: true, Applied: r.Seq - 1}, nil
	}
	return Position{Applied: seq}, nil
}

func scanOne(rows *sql.Rows, dest ...any) error {
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// WakeSeq makes the held row of sequence seq in stream s due now, for the
// retrier, and reports whether there was one.
func (in *Inbox) WakeSeq(ctx context.Context, db bun.IDB, s Stream, seq int64) (bool, error) {
	res, err := sqlstore.ExecPrepared(ctx, in.Prepared, db, in.ordering.wake, in.Group, s.Key, seq, s.Topic, s.Source)
	n, err := rowsAffected(res, err)
	return n > 0, err
}

// Park puts owner's claimed row id back to held, without counting the
// attempt its claim counted: it turned out not to be the next event.
func (in *Inbox) Park(ctx context.Context, db bun.IDB, owner string, id int64) error {
	_, err := db.ExecContext(ctx, in.ordering.park, id, owner)
	return err
}

// Keep removes the expiry of failed row id: it blocks its key, and stays
// until it is re-executed or skipped.
func (in *Inbox) Keep(ctx context.Context, db bun.IDB, id int64) error {
	_, err := db.ExecContext(ctx, in.ordering.keep, id)
	return err
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Stream is one stream of a group: its events' source, topic and key.
type Stream struct {
	Source, Topic, Key string
}

// ID returns the stream's id in the key tables.
func (s Stream) ID() string { return StreamID(s.Source, s.Topic, s.Key) }

// HeldStream is a stream with held rows.
type HeldStream struct {
	Stream
	// Applied is the stream's last applied sequence, 0 if none was.
	Applied int64
	// FirstHeld is the lowest held sequence; Held counts the held rows.
	FirstHeld int64
	Held      int
	// Since is when the oldest held row was stored (database clock, µs),
	// and Overdue reports that it was longer ago than the age asked for.
	Since   int64
	Overdue bool
}

// HeldStreams returns up to limit streams of the group with held rows,
// those held longest first, with where each stands; Overdue marks those
// whose oldest held row is older than age.
func (in *Inbox) HeldStreams(ctx context.Context, db bun.IDB, age time.Duration, limit int) ([]HeldStream, error) {
	rows, err := db.QueryContext(ctx, in.ordering.heldStreams, micros(age), in.Group, limit)
	if err != nil {
		return nil, err
	}
	var out []HeldStream
	for rows.Next() {
		var h HeldStream
		var overdue bool
		if err := rows.Scan(&h.Source, &h.Topic, &h.Key, &h.FirstHeld, &h.Held, &h.Since, &overdue); err != nil {
			rows.Close()
			return nil, err
		}
		h.Overdue = overdue
		out = append(out, h)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	applied, err := in.applied(ctx, db, out)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Applied = applied[out[i].ID()]
	}
	return out, nil
}

// NextRow is the row that would run next in a stream, as an operator sees
// it.
type NextRow struct {
	ID        int64
	MessageID string
	Status    string
	LastError sql.NullString
}

// appliedRow is true of a row whose event was applied: run, or skipped in
// its turn. Such a row after its stream's position is history: the group
// applied it, then forgot the key (KeyRetention), and the key started
// again at 0 before cleanup deleted the row.
var appliedRow = fmt.Sprintf("status IN ('%s', '%s')", StatusSucceeded, StatusSkipped)

// ErrNotMissing is Skip's error, with missingOnly, when the stream's next
// event is not missing.
var ErrNotMissing = errors.New("the next event is not missing")

// Skip moves stream s past its next event, in one transaction: the row of
// sequence Applied+1, when the group has it and it waits (failed, pending
// or held), is marked skipped with reason, kept for retention. When that
// event is missing, the stream moves to just before its first held row.
// An event is missing when the group never received it, and also when its
// row is history (see appliedRow). The move passes no row that waits. With
// missingOnly, it moves only past missing events. It returns the sequence
// the stream now stands at, the skipped row (nil if missing), and an error
// if there is nothing to skip.
func (in *Inbox) Skip(ctx context.Context, db *bun.DB, s Stream, reason string, retention time.Duration, missingOnly bool) (int64, *NextRow, error) {
	var at int64
	var skipped *NextRow
	err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var applied int64
		id := s.ID()
		if _, err := tx.ExecContext(ctx, in.ordering.lock, in.Group, id); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, in.ordering.read, in.Group, id).Scan(&applied); err != nil {
			if err == sql.ErrNoRows {
				return fmt.Errorf("the group has no events of key %q (topic %q, source %q)", s.Key, s.Topic, s.Source)
			}
			return err
		}
		var next NextRow
		var history bool
		err := tx.QueryRowContext(ctx, in.ordering.next, in.Group, s.Key, applied+1, s.Topic, s.Source).Scan(&next.ID, &next.MessageID, &next.Status, &next.LastError, &history)
		switch {
		case err == sql.ErrNoRows || err == nil && history:
			var first int64
			if err := tx.QueryRowContext(ctx, in.ordering.firstHeld, in.Group, s.Key, s.Topic, s.Source).Scan(&first); err != nil {
				return err
			}
			at = first - 1
			if at <= applied {
				return fmt.Errorf("key %q (topic %q, source %q) waits for nothing: no event after sequence %d", s.Key, s.Topic, s.Source, applied)
			}
			var waiting int64
			if err := tx.QueryRowContext(ctx, in.ordering.waiting, in.Group, s.Key, applied, first, s.Topic, s.Source).Scan(&waiting); err != nil {
				return err
			}
			if waiting > 0 {
				if missingOnly {
					return ErrNotMissing
				}
				return fmt.Errorf("key %q (topic %q, source %q): %d of its events between sequences %d and %d wait; skip them one at a time", s.Key, s.Topic, s.Source, waiting, applied, first)
			}
		case err != nil:
			return err
		case missingOnly:
			return ErrNotMissing
		case next.Status == StatusFailed || next.Status == StatusPending || next.Status == StatusHeld:
			msg := reason
			if next.LastError.Valid && next.LastError.String != "" {
				msg += "; last error: " + next.LastError.String
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET status = '%s', next_attempt_at = NULL, lock_owner = NULL, lease_until = NULL, handled_at = %s, expires_at = %s + ?, last_error = ? WHERE id = ?",
				in.TableName, StatusSkipped, in.D.Now, in.D.Now), micros(retention), msg, next.ID); err != nil {
				return err
			}
			at, skipped = applied+1, &next
		default:
			return fmt.Errorf("key %q (topic %q, source %q): its next event %s is %s, not waiting", s.Key, s.Topic, s.Source, next.MessageID, next.Status)
		}
		_, err = tx.ExecContext(ctx, in.ordering.set, at, "", in.Group, id)
		return err
	})
	return at, skipped, err
}

// Next returns the group's row of sequence seq in stream s, if it has one
// that is not history (see appliedRow): as for Skip, such a row counts as
// missing.
func (in *Inbox) Next(ctx context.Context, db bun.IDB, s Stream, seq int64) (InboxRow, bool, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE consumer_group = ? AND msg_key = ? AND seq = ? AND seq > 0 AND topic = ? AND source = ? AND NOT (%s)", inboxColumns, in.TableName, appliedRow)
	rows, err := db.QueryContext(ctx, q, in.Group, s.Key, seq, s.Topic, s.Source)
	if err != nil {
		return InboxRow{}, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return InboxRow{}, false, rows.Err()
	}
	var r InboxRow
	if err := scanInboxRow(rows, &r); err != nil {
		return r, false, err
	}
	return r, true, rows.Close()
}

// FailedHeads returns up to limit streams whose next event failed: kept
// failed rows (see Outcome.Keep) that their stream has not passed.
func (in *Inbox) FailedHeads(ctx context.Context, db bun.IDB, limit int) ([]HeldStream, error) {
	q := fmt.Sprintf("SELECT source, topic, msg_key, seq FROM %s WHERE consumer_group = ? AND status = '%s' AND seq > 0 AND expires_at IS NULL ORDER BY id LIMIT ?", in.TableName, StatusFailed)
	rows, err := db.QueryContext(ctx, q, in.Group, limit)
	if err != nil {
		return nil, err
	}
	var failed []HeldStream
	for rows.Next() {
		var h HeldStream
		if err := rows.Scan(&h.Source, &h.Topic, &h.Key, &h.Applied); err != nil {
			rows.Close()
			return nil, err
		}
		h.Applied-- // the stream stands before it, if it is the head
		failed = append(failed, h)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	applied, err := in.applied(ctx, db, failed)
	if err != nil {
		return nil, err
	}
	out := failed[:0]
	for _, h := range failed {
		if applied[h.ID()] == h.Applied {
			out = append(out, h)
		}
	}
	return out, nil
}

// Blocked is a stream whose events wait: HeadFailed reports that its next
// event failed and is kept, which only an operator releases.
type Blocked struct {
	HeldStream
	HeadFailed bool
}

// BlockedStreams returns up to limit of the group's blocked streams: those
// with held rows whose turn has not come, held longest first, then those
// whose next event failed with nothing held behind it. It reads up to
// limit held streams and up to limit failed rows, through the indexes of
// held and failed rows.
func (in *Inbox) BlockedStreams(ctx context.Context, db bun.IDB, limit int) ([]Blocked, error) {
	held, err := in.HeldStreams(ctx, db, 0, limit)
	if err != nil {
		return nil, err
	}
	heads, err := in.FailedHeads(ctx, db, limit)
	if err != nil {
		return nil, err
	}
	failed := make(map[Stream]bool, len(heads))
	for _, h := range heads {
		failed[h.Stream] = true
	}
	var out []Blocked
	seen := make(map[Stream]bool, len(held))
	for _, s := range held {
		seen[s.Stream] = true
		if s.Applied < s.FirstHeld-1 { // else its turn has come
			out = append(out, Blocked{HeldStream: s, HeadFailed: failed[s.Stream]})
		}
	}
	for _, h := range heads {
		if !seen[h.Stream] {
			out = append(out, Blocked{HeldStream: h, HeadFailed: true})
		}
	}
	return out[:min(len(out), limit)], nil
}

// applied returns the last applied sequence of each stream of hs, by id.
func (in *Inbox) applied(ctx context.Context, db bun.IDB, hs []HeldStream) (map[string]int64, error) {
	out := make(map[string]int64, len(hs))
	if len(hs) == 0 {
		return out, nil
	}
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.ID()
	}
	rows, err := db.QueryContext(ctx, in.ordering.streams, in.Group, bun.In(ids))
	if err != nil {
		return nil, err
	}
	return out, scanInt64s(rows, out)
}

// ForgetKeys deletes, batch at a time, the group's keys whose last change
// is older than retention and that have no events waiting or failed, and
// reports how many it deleted.
func (in *Inbox) ForgetKeys(ctx context.Context, db bun.IDB, retention time.Duration, batch int) (int64, error) {
	var total int64
	for {
		rows, err := db.QueryContext(ctx, in.ordering.silent, in.Group, micros(retention), max(batch, 1))
		if err != nil {
			return total, err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, err
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil || len(ids) == 0 {
			return total, err
		}
		n, err := in.forget(ctx, db, ids, retention)
		total += n
		if err != nil || n == 0 || len(ids) < batch {
			return total, err
		}
	}
}

// forget deletes the keys of streams ids that are still silent. An event
// of one of them may have arrived since they were found silent: the
// transaction that stored it held the key's row (see Advance) and may not
// have committed yet. So forget first takes the rows, waiting for such
// transactions, and then checks and deletes in a statement that sees what
// they committed (READ COMMITTED; SQLite has one writer).
func (in *Inbox) forget(ctx context.Context, db bun.IDB, ids []string, retention time.Duration) (int64, error) {
	var n int64
	err := db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, in.ordering.lockStreams, in.Group, bun.In(ids)); err != nil {
			return err
		}
		var err error
		n, err = rowsAffected(tx.ExecContext(ctx, in.ordering.forget, in.Group, bun.In(ids), micros(retention)))
		return err
	})
	return n, err
}

// TakeNext claims for owner, with a lease, the held row that follows r in
// its stream, as a retrier's claim would, and returns it; ok is false when
// there is none.
func (in *Inbox) TakeNext(ctx context.Context, db bun.IDB, owner string, r InboxRow, lease time.Duration) (InboxRow, bool, error) {
	args := []any{owner, micros(lease), micros(lease), in.Group, r.Key, r.Seq + 1, r.Topic, r.Source}
	var rows *sql.Rows
	if in.ordering.taken != "" {
		res, err := sqlstore.ExecPrepared(ctx, in.Prepared, db, in.ordering.take, args...)
		if n, err := rowsAffected(res, err); err != nil || n == 0 {
			return InboxRow{}, false, err
		}
		rows, err = sqlstore.QueryPrepared(ctx, in.Prepared, db, in.ordering.taken, in.Group, r.Key, r.Seq+1, r.Topic, r.Source, owner)
		if err != nil {
			return InboxRow{}, false, err
		}
	} else {
		var err error
		if rows, err = sqlstore.QueryPrepared(ctx, in.Prepared, db, in.ordering.take, args...); err != nil {
			return InboxRow{}, false, err
		}
	}
	defer rows.Close()
	if !rows.Next() {
		return InboxRow{}, false, rows.Err()
	}
	var next InboxRow
	if err := scanInboxRow(rows, &next); err != nil {
		return next, false, err
	}
	return next, true, rows.Close()
}
