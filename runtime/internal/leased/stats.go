package leased

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// FailedColumn is the virtual column that marks failed rows on MySQL in a
// table without a scope: 1 on a failed row, NULL on the others (see
// Spec.FailedIndexSteps).
const FailedColumn = "is_failed"

// FailedIndexSteps returns the two schema steps that give a table without
// a scope an index of its failed rows on MySQL, which has no partial
// indexes and whose tables Schema made without one: a virtual column,
// FailedColumn, and an index on it. A status index would change on every
// claim and settle; this one changes only when a row fails or is requeued,
// so rows that never fail cost it an insert and a delete. Each step is one
// statement and must be a schema version of its own: MariaDB adds either
// without blocking writes, but not both in one statement. Elsewhere both
// are nil: Schema's partial index, or a scoped table's (scope, status)
// index on MySQL, already serves.
func (s Spec) FailedIndexSteps() (column, index []string) {
	if s.Dialect.Name != "mysql" || s.Scope != "" {
		return nil, nil
	}
	column = []string{fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s TINYINT AS (CASE WHEN status = '%s' THEN 1 END) VIRTUAL",
		s.Table, FailedColumn, StatusFailed)}
	index = []string{fmt.Sprintf("ALTER TABLE %s ADD INDEX %s (%s)", s.Table, sqlstore.IndexName(s.Table, "failed"), FailedColumn)}
	return column, index
}

// Stats is a count of the rows of a table, or of its scope, by status, read
// in one statement and so from one snapshot.
type Stats struct {
	// Rows counts the rows of each status. The statuses rows wait or run
	// in (Spec.Waiting, pending, processing) and failed are always
	// present and counted exactly. The other terminal statuses (Spec.Done,
	// and those Finish was given) are the table's history, kept for a
	// retention: they are counted among the newest finished rows only, up
	// to the limit given to Stats, and are present when that found any.
	Rows map[string]int64
	// Retrying counts the pending rows whose attempts are above 0: those
	// waiting for a retry.
	Retrying int64
	// OldestDue is how long the row due the longest has waited for a
	// claim, on the database's clock: the time since the due time of the
	// first row a claim would take now, or 0 if none is due.
	OldestDue time.Duration
	// HistoryCapped reports that the history counted reached its limit:
	// the table may hold more finished rows than Rows counts.
	HistoryCapped bool
}

// The parts of the statistics statement, in its first column.
const (
	statsUnfinished = 1
	statsFailed     = 2
	statsHistory    = 3
	statsParked     = 4
)

// statsQuery builds the statement Stats runs: three parts joined by UNION
// ALL, each on one index, so that its cost grows with the rows it counts
// (those that wait or run, the failed ones and at most the history limit)
// and never with the history the table keeps.
//
//   - Unfinished rows, by status, on the claim index: partial on the
//     waiting statuses on PostgreSQL and SQLite, the range of non-NULL
//     next_attempt_at on MySQL (terminal rows have NULL there).
//   - Failed rows, on the failed index: partial on PostgreSQL and SQLite,
//     (scope, status) on MySQL, or FailedColumn on MySQL without a scope.
//     This part also returns the clock, against which the first part
//     found the due rows.
//   - The newest finished rows, on the expiry index read backwards from
//     the latest expiry, up to a limit.
//
// MySQL is told which index to use: on a small table it prefers a scan.
func statsQuery(spec Spec, unfinished []string) string {
	d, table := spec.Dialect, spec.Table
	mysql := d.Name == "mysql"
	on := func(index string) string {
		if mysql {
			return table + " FORCE INDEX (" + sqlstore.IndexName(table, index) + ")"
		}
		return table
	}
	scoped := ""
	if spec.Scope != "" {
		scoped = spec.Scope + " = ? AND "
	}
	failed := failedWhere(spec)
	now := "(SELECT " + d.Now + ")"
	return fmt.Sprintf(`SELECT %d AS part, status, COUNT(*) AS n, SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) AS retried, MIN(CASE WHEN next_attempt_at <= %s THEN next_attempt_at END) AS due, NULL AS now
FROM %s WHERE %sstatus IN (%s) AND next_attempt_at IS NOT NULL GROUP BY status
UNION ALL
SELECT %d, '%s', COUNT(*), 0, NULL, %s FROM %s WHERE %s
UNION ALL
SELECT %d, status, COUNT(*), 0, NULL, NULL FROM (
  SELECT status FROM %s WHERE %sexpires_at IS NOT NULL AND status <> '%s' ORDER BY expires_at DESC LIMIT ?
) h GROUP BY status`,
		statsUnfinished, now, on("claim"), scoped, quoteList(unfinished),
		statsFailed, StatusFailed, now, on("failed"), failed,
		statsHistory, on("expiry"), scoped, StatusFailed) + parkedPart(spec, scoped)
}

// parkedPart is the statistics statement's part that counts the rows of
// Spec.Parked, if it is set: on their partial index on PostgreSQL and
// SQLite, on the scoped status index on MySQL.
func parkedPart(spec Spec, scoped string) string {
	if spec.Parked == "" {
		return ""
	}
	table := spec.Table
	if spec.Dialect.Name == "mysql" && spec.Scope != "" {
		table += " FORCE INDEX (" + sqlstore.IndexName(spec.Table, "failed") + ")"
	}
	return fmt.Sprintf("\nUNION ALL\nSELECT %d, '%s', COUNT(*), 0, NULL, NULL FROM %s WHERE %sstatus = '%s'",
		statsParked, spec.Parked, table, scoped, spec.Parked)
}

// statsArgs returns the arguments of the statistics statement.
func (t *Table[R]) statsArgs(historyLimit int) []any {
	if t.scope == nil {
		return []any{historyLimit}
	}
	s := t.scope[0]
	if t.parked != "" {
		return []any{s, s, s, historyLimit, s}
	}
	return []any{s, s, s, historyLimit}
}

// Stats counts the table's rows (its scope's) by status, and how long the
// row due the longest has waited: see [Stats]. It counts at most
// historyLimit finished rows besides the failed ones.
func (t *Table[R]) Stats(ctx context.Context, db bun.IDB, historyLimit int) (Stats, error) {
	rows, err := t.query(QueryContext(ctx, t.d), db, t.stats, t.statsArgs(max(1, historyLimit))...)
	if err != nil {
		return Stats{}, err
	}
	defer rows.Close()
	st := Stats{Rows: map[string]int64{StatusFailed: 0}}
	if t.parked != "" {
		st.Rows[t.parked] = 0
	}
	for _, s := range t.unfinished {
		st.Rows[s] = 0
	}
	var history int64
	var oldest, now sql.NullInt64
	for rows.Next() {
		var part int
		var status string
		var n, retried int64
		var due, clock sql.NullInt64
		if err := rows.Scan(&part, &status, &n, &retried, &due, &clock); err != nil {
			return Stats{}, err
		}
		st.Rows[status] += n
		switch part {
		case statsUnfinished:
			if status == StatusPending {
				st.Retrying = retried
			}
			if due.Valid && (!oldest.Valid || due.Int64 < oldest.Int64) {
				oldest = due
			}
		case statsFailed:
			now = clock
		case statsHistory:
			history += n
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, err
	}
	if oldest.Valid && now.Valid && now.Int64 > oldest.Int64 {
		st.OldestDue = time.Duration(now.Int64-oldest.Int64) * time.Microsecond
	}
	st.HistoryCapped = history >= int64(max(1, historyLimit))
	return st, nil
}
