package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
)

// Migration is one step of a table's schema. Steps are applied in order and
// recorded, so Migrate is idempotent and upgrades old schemas.
type Migration struct {
	Version int
	// Statements returns the DDL for dialect d and the validated table name.
	// On MySQL, where DDL is not transactional, keep each step to one
	// statement (declare indexes inside CREATE TABLE) so that a crash cannot
	// leave a step half done.
	Statements func(d Dialect, table string) []string
}

// MigrationsTable returns the name of the table that records applied
// migrations, in the same schema as table.
func MigrationsTable(table string) string {
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		return table[:i+1] + "eventgen_migrations"
	}
	return "eventgen_migrations"
}

// SchemaSQL returns every statement of migrations for a fresh database, as a
// migration tool would run them, ending with the bookkeeping rows.
func SchemaSQL(d Dialect, table string, migrations []Migration) []string {
	var out []string
	out = append(out, createMigrationsTable(d, MigrationsTable(table)))
	for _, m := range migrations {
		out = append(out, m.Statements(d, table)...)
		out = append(out, fmt.Sprintf("INSERT INTO %s (table_name, version) VALUES ('%s', %d)", MigrationsTable(table), table, m.Version))
	}
	return out
}

func createMigrationsTable(d Dialect, name string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (table_name VARCHAR(255) NOT NULL, version %s NOT NULL, applied_at %s NOT NULL DEFAULT 0, PRIMARY KEY (table_name, version))",
		name, d.Types.Int, d.Types.BigInt)
}

// Migrate applies the steps of migrations that table does not have yet.
// Concurrent callers (several replicas starting at once) are serialized by a
// database lock where the database has one.
//
// The bookkeeping rows alone do not make a table: when table does not exist
// although steps are recorded for it (it was dropped, or restored from a
// backup without it), Migrate forgets those steps and applies every step
// again from the first, which creates the table anew. The first step of
// every table creates it, and a missing table has no rows to lose.
func Migrate(ctx context.Context, db *bun.DB, table string, migrations []Migration) error {
	if err := ValidateTableName(table); err != nil {
		return err
	}
	d, err := DialectOf(db)
	if err != nil {
		return err
	}
	mt := MigrationsTable(table)
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", table, err)
	}
	defer conn.Close()
	if d.Name == "mysql" {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", "eventgen_migrate:"+table).Scan(&got); err != nil {
			return fmt.Errorf("migrate %s: lock: %w", table, err)
		}
		if !got.Valid || got.Int64 != 1 {
			return fmt.Errorf("migrate %s: another process held the migration lock for 60s", table)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", "eventgen_migrate:"+table) //nolint:errcheck // released with the session anyway
	}
	if _, err := conn.ExecContext(ctx, createMigrationsTable(d, mt)); err != nil {
		return fmt.Errorf("migrate %s: create %s: %w", table, mt, err)
	}
	for i, m := range migrations {
		err := conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if d.Name == "postgres" {
				if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext(?))", "eventgen_migrate:"+table); err != nil {
					return fmt.Errorf("lock: %w", err)
				}
			}
			if i == 0 {
				if err := forgetIfMissing(ctx, tx, d, mt, table); err != nil {
					return err
				}
			}
			var n int
			err := tx.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE table_name = ? AND version = ?", mt), table, m.Version).Scan(&n)
			if err != nil {
				return fmt.Errorf("read applied versions: %w", err)
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range m.Statements(d, table) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("version %d: %w", m.Version, err)
				}
			}
			_, err = tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (table_name, version, applied_at) VALUES (?, ?, %s)", mt, d.Now), table, m.Version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", table, err)
		}
	}
	return nil
}

// forgetIfMissing deletes the bookkeeping rows of table when the table itself
// does not exist, so that every step is applied again.
func forgetIfMissing(ctx context.Context, tx bun.Tx, d Dialect, mt, table string) error {
	exists, err := tableExists(ctx, tx, d, table)
	if err != nil {
		return fmt.Errorf("check that the table exists: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE table_name = ?", mt), table); err != nil {
		return fmt.Errorf("forget the versions of the missing table: %w", err)
	}
	return nil
}

// tableExists reports whether the validated name table resolves to a table
// the way the outbox's and inbox's own statements resolve it: through the
// search path on PostgreSQL, in the current database on MySQL unless
// qualified, and case-insensitively on SQLite.
func tableExists(ctx context.Context, tx bun.Tx, d Dialect, table string) (bool, error) {
	schema, name := "", table
	if i := strings.IndexByte(table, '.'); i >= 0 {
		schema, name = table[:i], table[i+1:]
	}
	var q string
	var args []any
	switch d.Name {
	case "postgres":
		q, args = "SELECT CASE WHEN to_regclass(?) IS NULL THEN 0 ELSE 1 END", []any{table}
	case "mysql":
		q, args = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", []any{name}
		if schema != "" {
			q, args = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", []any{schema, name}
		}
	default:
		q, args = "SELECT COUNT(*) FROM pragma_table_info(?)", []any{name}
		if schema != "" {
			q, args = "SELECT COUNT(*) FROM pragma_table_info(?, ?)", []any{name, schema}
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}
