package leased

import (
	"fmt"
	"strings"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Schema returns the statements that create the table s describes: the id,
// the table's own columns, the engine's columns and the unique constraint
// (such as "UNIQUE (message_id)"), then the engine's indexes.
//
// next_attempt_at is the single claim key: for waiting and pending rows it
// is when the row becomes due, for processing rows it equals lease_until
// (after which another claimer may take the row over), and it is NULL for
// terminal rows. expires_at is NULL until a row is terminal, and is then
// when cleanup may delete it. So "claimable" and "expired" are each one
// range on one index on every database, however much history the table
// keeps. With a scope, every index starts with the scope column.
func (s Spec) Schema(own []string, unique string) []string {
	d, t, table := s.Dialect, s.Dialect.Types, s.Table
	cols := append([]string{"id " + t.ID}, own...)
	cols = append(cols,
		"status VARCHAR(16) NOT NULL",
		"attempts "+t.Int+" NOT NULL DEFAULT 0",
		"created_at "+t.BigInt+" NOT NULL",
		"next_attempt_at "+t.BigInt,
		"lock_owner VARCHAR(128)",
		"lease_until "+t.BigInt,
		s.DoneAt+" "+t.BigInt,
		"expires_at "+t.BigInt,
		"last_error "+t.Text,
		unique)
	scope := ""
	if s.Scope != "" {
		scope = s.Scope + ", "
	}
	claim := sqlstore.IndexName(table, "claim")
	expiry := sqlstore.IndexName(table, "expiry")
	failed := sqlstore.IndexName(table, "failed")
	if d.Name == "mysql" {
		// DDL is not transactional on MySQL: one statement per step,
		// with the indexes inside CREATE TABLE. Without partial
		// indexes, a table without a scope gets no status index, which
		// every update would pay for; FailedIndexSteps adds a cheaper
		// index of its failed rows as later steps.
		cols = append(cols,
			"INDEX "+claim+" ("+scope+"next_attempt_at)",
			"INDEX "+expiry+" ("+scope+"expires_at)")
		if s.Scope != "" {
			cols = append(cols, "INDEX "+failed+" ("+scope+"status)")
		}
		return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
			table, strings.Join(cols, ",\n  "))}
	}
	due := append(append([]string{}, s.Waiting...), StatusPending, StatusProcessing)
	return []string{
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n  %s\n)", table, strings.Join(cols, ",\n  ")),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%snext_attempt_at) WHERE status IN (%s)", claim, table, scope, quoteList(due)),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%sexpires_at) WHERE expires_at IS NOT NULL", expiry, table, scope),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%sid) WHERE status = '%s'", failed, table, scope, StatusFailed),
	}
}
