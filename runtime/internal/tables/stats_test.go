package tables

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// directCounts counts the rows of the suite's table (its group's) by
// status with COUNT(*), and the pending rows that have failed an attempt.
func directCounts(t *testing.T, s *suite) (map[string]int64, int64) {
	t.Helper()
	where, args := "", []any{}
	if s.name == "inbox" {
		where, args = " WHERE consumer_group = ?", []any{suiteGroup}
	}
	rows, err := s.db.QueryContext(s.ctx(), "SELECT status, COUNT(*) FROM "+s.table+where+" GROUP BY status", args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[string]int64{}
	for rows.Next() {
		var status string
		var n int64
		if err := rows.Scan(&status, &n); err != nil {
			t.Fatal(err)
		}
		counts[status] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	and := " WHERE"
	if where != "" {
		and = where + " AND"
	}
	var retrying int64
	q := fmt.Sprintf("SELECT COUNT(*) FROM %s%s status = '%s' AND attempts > 0", s.table, and, StatusPending)
	if err := s.db.QueryRowContext(s.ctx(), q, args...).Scan(&retrying); err != nil {
		t.Fatal(err)
	}
	return counts, retrying
}

// nonZero returns the entries of m that are not 0.
func nonZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// fillStatuses puts rows of the suite's table in every status: done,
// failed (and skipped in the inbox), processing, pending after a failed
// attempt, pending and not yet due, and scheduled in the outbox. No row
// is due when it returns. In the inbox it also fills another group.
func fillStatuses(t *testing.T, s *suite) {
	t.Helper()
	ctx := s.ctx()
	if s.name == "inbox" {
		other := NewInbox(s.d, s.table, "other", nil)
		for i := range 4 {
			row := InboxRow{MessageID: fmt.Sprintf("o-%d", i), Name: "E", Version: 1, Topic: "topic", Payload: []byte{}}
			if _, err := other.Insert(ctx, s.db, row, Outcome{Status: []string{StatusPending, StatusFailed}[i%2], Retention: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.insert(t, s.db, s.d, s.table, 7, 0, 16)
	ids := s.claimAll(t, "a", time.Hour)
	if len(ids) != 7 {
		t.Fatalf("claimed %d rows, want 7", len(ids))
	}
	if n, err := s.e.Done(ctx, s.db, "a", ids[:3], 0, time.Hour); err != nil || n != 3 {
		t.Fatalf("Done = %d, %v", n, err)
	}
	if err := s.e.Retry(ctx, s.db, "a", ids[3], 1, time.Hour, "retry me"); err != nil {
		t.Fatal(err)
	}
	terminal := StatusFailed
	if s.name == "inbox" {
		terminal = StatusSkipped
	}
	for i, id := range ids[4:6] {
		if err := s.e.Finish(ctx, s.db, "a", id, []string{StatusFailed, terminal}[i], 2, time.Hour, "boom"); err != nil {
			t.Fatal(err)
		}
	}
	// ids[6] stays processing, leased for an hour.
	s.insert(t, s.db, s.d, s.table, 2, time.Hour, 16)
	if s.name == "outbox" {
		_, err := s.db.ExecContext(ctx, OutboxInsertSQL(s.d, s.table, 1), "sched", "E", 1, "topic", "", 0, "src", []byte{}, nil, StatusScheduled, time.Hour.Microseconds())
		if err != nil {
			t.Fatal(err)
		}
	}
}

// statsBehaviours are the conformance suite's behaviours of Table.Stats.
var statsBehaviours = []struct {
	name string
	run  func(t *testing.T, s *suite)
}{
	// Stats agrees with COUNT(*) per status, prepared and through Bun,
	// and bounds the history it counts.
	{"StatsAgreesWithCount", func(t *testing.T, s *suite) {
		ctx := s.ctx()
		st, err := s.e.Stats(ctx, s.db, 100)
		if err != nil {
			t.Fatalf("Stats of an empty table: %v", err)
		}
		want := map[string]int64{StatusPending: 0, StatusProcessing: 0, StatusFailed: 0}
		if s.name == "outbox" {
			want[StatusScheduled] = 0
		} else {
			want[StatusHeld] = 0 // the inbox's parked status
		}
		if !maps.Equal(st.Rows, want) || st.Retrying != 0 || st.OldestDue != 0 || st.HistoryCapped {
			t.Errorf("Stats of an empty table = %+v, want %v and nothing else", st, want)
		}

		fillStatuses(t, s)
		counts, retrying := directCounts(t, s)
		if len(counts) < 5 || retrying != 1 {
			t.Fatalf("the table holds %v with %d retrying: not every status", counts, retrying)
		}
		prepared := sqlstore.NewPrepared(s.db, s.d)
		for _, p := range []*sqlstore.Prepared{nil, prepared, prepared} {
			st, err := s.open(s.d, s.table, p).Stats(ctx, s.db, 100)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(nonZero(st.Rows), counts) || st.Retrying != retrying || st.HistoryCapped {
				t.Errorf("Stats = %+v; COUNT(*) finds %v with %d retrying", st, counts, retrying)
			}
			if st.OldestDue != 0 {
				t.Errorf("OldestDue = %s with no row due", st.OldestDue)
			}
		}

		// The history is counted up to the limit; the rest stays exact.
		history := counts[StatusPublished] + counts[StatusSucceeded] + counts[StatusSkipped]
		st, err = s.e.Stats(ctx, s.db, 2)
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		for status, n := range st.Rows {
			switch status {
			case StatusPublished, StatusSucceeded, StatusSkipped:
				got += n
			default:
				if n != counts[status] {
					t.Errorf("with a history limit of 2, %s = %d, want %d", status, n, counts[status])
				}
			}
		}
		if history <= 2 || got != 2 || !st.HistoryCapped {
			t.Errorf("with a history limit of 2 of %d finished rows: counted %d, capped %v", history, got, st.HistoryCapped)
		}
	}},
	// The age of the row due the longest is measured on the database's
	// clock and grows while the row waits.
	{"StatsOldestDueGrowsWhileRowsWait", func(t *testing.T, s *suite) {
		ctx := s.ctx()
		stats := s.e.Stats
		s.insert(t, s.db, s.d, s.table, 1, time.Hour, 16)
		if st, err := stats(ctx, s.db, 10); err != nil || st.OldestDue != 0 {
			t.Fatalf("a row due in an hour: OldestDue = %s, %v; want 0", st.OldestDue, err)
		}
		s.insert(t, s.db, s.d, s.table, 2, 0, 16)
		first, err := stats(ctx, s.db, 10)
		if err != nil {
			t.Fatal(err)
		}
		const wait = 150 * time.Millisecond
		time.Sleep(wait)
		second, err := stats(ctx, s.db, 10)
		if err != nil {
			t.Fatal(err)
		}
		if grown := second.OldestDue - first.OldestDue; grown < wait-10*time.Millisecond || second.OldestDue > time.Minute {
			t.Errorf("OldestDue went from %s to %s in %s", first.OldestDue, second.OldestDue, wait)
		}
		// An hour later by the database's clock (the rows' due times an
		// hour earlier), the row due in an hour is due too, and the others
		// have waited an hour.
		s.hourPasses(t)
		st, err := stats(ctx, s.db, 10)
		if err != nil || st.OldestDue < time.Hour || st.OldestDue > time.Hour+time.Minute {
			t.Errorf("an hour later OldestDue = %s, %v; want an hour", st.OldestDue, err)
		}
		// Claimed rows do not wait.
		s.claimAll(t, "a", time.Minute)
		if st, err := stats(ctx, s.db, 10); err != nil || st.OldestDue != 0 || st.Rows[StatusProcessing] != 3 {
			t.Errorf("with every row claimed: %+v, %v; want 3 processing and OldestDue 0", st, err)
		}
	}},
	// EXPLAIN shows that each part of the Stats statement reads one of
	// the table's claim, failed, expiry (and held) indexes and never scans the
	// table, and that the newest finished rows are read in the expiry
	// index's order, so that the read stops at the history limit.
	// PostgreSQL is told to scan neither the table nor a bitmap
	// (enable_seqscan and enable_bitmapscan are off), since on a test's
	// small table those cost least: so this shows that an index serves
	// every part as wanted, which the planner chooses on a table large
	// enough to matter. MySQL is told which index to use by the statement
	// itself.
	{"StatsReadsIndexesOnly", func(t *testing.T, s *suite) {
		fillStatuses(t, s)
		hook := &statements{}
		s.db.AddQueryHook(hook)
		if _, err := s.e.Stats(s.ctx(), s.db, 100); err != nil {
			t.Fatal(err)
		}
		queries := hook.queries("SELECT")
		if len(queries) != 1 {
			t.Fatalf("Stats ran %d statements, want 1: %q", len(queries), queries)
		}
		indexes := []string{
			sqlstore.IndexName(s.table, "claim"),
			sqlstore.IndexName(s.table, "failed"),
			sqlstore.IndexName(s.table, "expiry"),
		}
		if s.name == "inbox" && s.d.Name != "mysql" {
			// Its held rows, on their partial index (on MySQL, the
			// scoped status index that the failed rows use).
			indexes = append(indexes, sqlstore.IndexName(s.table, "held"))
		}
		plan := explain(t, s, queries[0])
		for _, step := range plan {
			if !usesIndex(s.d.Name, s.table, step, indexes) {
				t.Errorf("a step of the plan does not read one of the indexes %v: %s", indexes, step)
			}
			// The newest finished rows are read in the index's order, so
			// that the read stops at the limit.
			if strings.Contains(step, indexes[2]) && !inOrder(s.d.Name, step) {
				t.Errorf("the expiry index is not read in its order: %s", step)
			}
		}
		all := strings.Join(plan, "\n")
		for _, index := range indexes {
			if !strings.Contains(all, index) {
				t.Errorf("the plan does not use %s:\n%s", index, all)
			}
		}
		if t.Failed() {
			t.Logf("query:\n%s", queries[0])
		}
	}},
}

// explain returns the steps of the plan of query that read the suite's
// table: lines of PostgreSQL's plan, MySQL's rows (as "type key"), and
// SQLite's query plan details.
func explain(t *testing.T, s *suite, query string) []string {
	t.Helper()
	ctx := s.ctx()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	prefix := "EXPLAIN "
	switch s.d.Name {
	case "postgres":
		for _, scan := range []string{"enable_seqscan", "enable_bitmapscan"} {
			if _, err := tx.ExecContext(ctx, "SET LOCAL "+scan+" = off"); err != nil {
				t.Fatal(err)
			}
		}
	case "sqlite":
		prefix = "EXPLAIN QUERY PLAN "
	}
	rows, err := tx.QueryContext(ctx, prefix+query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		col := func(name string) string { return vals[slices.Index(cols, name)].String }
		switch s.d.Name {
		case "postgres":
			if line := col("QUERY PLAN"); strings.Contains(line, "Scan") && strings.Contains(line, s.table) {
				steps = append(steps, strings.TrimSpace(line))
			}
		case "mysql":
			if col("table") == s.table {
				steps = append(steps, col("type")+" "+col("key")+" "+col("Extra"))
			}
		default:
			// A sort of the rows read shows as a temporary B-tree.
			if d := col("detail"); strings.HasPrefix(d, "SCAN "+s.table) || strings.HasPrefix(d, "SEARCH "+s.table) ||
				strings.Contains(d, "TEMP B-TREE FOR ORDER BY") {
				steps = append(steps, d)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 {
		t.Fatalf("no step of the plan reads %s", s.table)
	}
	return steps
}

// inOrder reports whether a step of a plan reads its index in order.
func inOrder(dialect, step string) bool {
	switch dialect {
	case "postgres":
		return strings.Contains(step, "Index Scan Backward using ")
	case "mysql":
		return !strings.Contains(step, "filesort")
	default:
		return true // a sort is a step of its own, which reads no index
	}
}

// usesIndex reports whether a step of a plan reads one of indexes.
func usesIndex(dialect, table, step string, indexes []string) bool {
	named := func(prefix string) bool {
		return slices.ContainsFunc(indexes, func(index string) bool { return strings.Contains(step, prefix+index) })
	}
	switch dialect {
	case "postgres":
		// A bitmap heap scan reads the rows its bitmap index scan found.
		return named("using ") || named("Bitmap Index Scan on ") || strings.HasPrefix(strings.TrimLeft(step, "-> "), "Bitmap Heap Scan on "+table)
	case "mysql":
		return !strings.HasPrefix(step, "ALL ") && !strings.HasPrefix(step, "index ") && named(" ")
	default:
		return named("USING INDEX ") || named("USING COVERING INDEX ")
	}
}

// TestOutboxFailedIndexUpgrade migrates an outbox table of version 1 that
// holds failed rows to the current version, which on MySQL adds the index
// of failed rows, and checks that Stats counts them.
func TestOutboxFailedIndexUpgrade(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			dialect, table := atFirstVersion(t, db, "outbox_v1", OutboxMigrations)
			s := &suite{kind: kinds[0], db: db, d: dialect, table: table, e: kinds[0].open(dialect, table, nil)}
			s.insert(t, db, dialect, table, 3, 0, 16)
			// Failed as version 1's relay left them: the engine's
			// statements now read columns that version 1 lacks.
			if _, err := db.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET status = '%s', attempts = 1, next_attempt_at = NULL, expires_at = %s + ?",
				table, StatusFailed, dialect.Now), time.Hour.Microseconds()); err != nil {
				t.Fatal(err)
			}
			s.insert(t, db, dialect, table, 2, 0, 16)
			if err := sqlstore.Migrate(ctx, db, table, OutboxMigrations); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			if err := sqlstore.Migrate(ctx, db, table, OutboxMigrations); err != nil {
				t.Fatalf("migrate again: %v", err)
			}
			st, err := NewOutbox(dialect, table, nil).Stats(ctx, db, 10)
			if err != nil || st.Rows[StatusFailed] != 3 || st.Rows[StatusPending] != 2 {
				t.Fatalf("Stats after the upgrade = %+v, %v; want 3 failed and 2 pending", st, err)
			}
			// Rows keep their mark as they fail and are requeued.
			if n, err := s.e.RequeueFailed(ctx, db, 10); err != nil || n != 3 {
				t.Fatalf("RequeueFailed = %d, %v", n, err)
			}
			s.failRows(t, time.Hour)
			s.insert(t, db, dialect, table, 1, 0, 16)
			counts, _ := directCounts(t, s)
			st, err = NewOutbox(dialect, table, nil).Stats(ctx, db, 10)
			if err != nil || !maps.Equal(nonZero(st.Rows), counts) {
				t.Errorf("Stats = %+v, %v; COUNT(*) finds %v", st, err, counts)
			}
			if dialect.Name != "mysql" {
				return
			}
			var n int
			q := "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? AND column_name = ?"
			if err := db.QueryRowContext(ctx, q, table, sqlstore.IndexName(table, "failed"), leased.FailedColumn).Scan(&n); err != nil || n != 1 {
				t.Errorf("index %s on %s: %d, %v", sqlstore.IndexName(table, "failed"), leased.FailedColumn, n, err)
			}
		})
	}
}
