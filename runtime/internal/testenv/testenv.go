// Package testenv gives tests the databases and brokers to run against.
//
// SQLite (a file in the test's temporary directory, pure-Go driver) is always
// available. PostgreSQL and MySQL/MariaDB are added when EVENTGEN_TEST_POSTGRES
// and EVENTGEN_TEST_MYSQL hold a DSN. With EVENTGEN_TEST_REQUIRE_SERVICES=1 an
// unset or unreachable service fails the test instead of skipping it.
//
// Tests share one database per service; they isolate themselves with table
// names from [TableName], so no test sees another's rows.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Environment variables naming the services.
const (
	EnvPostgres        = "EVENTGEN_TEST_POSTGRES"
	EnvMySQL           = "EVENTGEN_TEST_MYSQL"
	EnvAMQP            = "EVENTGEN_TEST_AMQP"
	EnvNATS            = "EVENTGEN_TEST_NATS"
	EnvRedis           = "EVENTGEN_TEST_REDIS"
	EnvRequireServices = "EVENTGEN_TEST_REQUIRE_SERVICES"
)

// RequireServices reports whether a missing service must fail the run.
func RequireServices() bool { return os.Getenv(EnvRequireServices) == "1" }

// Database is one database a suite runs against.
type Database struct {
	Name string // sqlite, postgres or mysql
	// Open returns a fresh *bun.DB for the test, closed at its cleanup.
	Open func(t testing.TB) *bun.DB
}

// Databases returns SQLite and every database whose variable is set. Under
// EVENTGEN_TEST_REQUIRE_SERVICES=1 an unset variable fails t.
func Databases(t testing.TB) []Database {
	t.Helper()
	dbs := []Database{{Name: "sqlite", Open: OpenSQLite}}
	for _, s := range []struct{ name, env string }{{"postgres", EnvPostgres}, {"mysql", EnvMySQL}} {
		dsn := os.Getenv(s.env)
		if dsn == "" {
			if RequireServices() {
				t.Fatalf("%s is not set and %s=1", s.env, EnvRequireServices)
			}
			continue
		}
		name := s.name
		dbs = append(dbs, Database{Name: name, Open: func(t testing.TB) *bun.DB { return OpenDSN(t, name, dsn) }})
	}
	return dbs
}

// OpenSQLite opens a new SQLite database file in t's temporary directory,
// with WAL and a busy timeout so that a relay and producers can share it.
func OpenSQLite(t testing.TB) *bun.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := OpenSQLitePath(path)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// OpenSQLitePath opens (creating if needed) the SQLite database at path with
// the settings eventgen recommends: WAL, a busy timeout and one writer.
func OpenSQLitePath(path string) (*bun.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	return bun.NewDB(sqldb, sqlitedialect.New()), nil
}

// OpenDSN opens a PostgreSQL or MySQL database and pings it. An unreachable
// database skips t, or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func OpenDSN(t testing.TB, name, dsn string) *bun.DB {
	t.Helper()
	db, err := Open(name, dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		Unavailable(t, name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Open opens a *bun.DB for a postgres or mysql DSN without pinging it.
func Open(name, dsn string) (*bun.DB, error) {
	switch name {
	case "postgres":
		sqldb, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, err
		}
		return bun.NewDB(sqldb, pgdialect.New()), nil
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, err
		}
		cfg.ParseTime = true
		cfg.MultiStatements = false
		sqldb, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			return nil, err
		}
		return bun.NewDB(sqldb, mysqldialect.New()), nil
	}
	return nil, &unknownDatabaseError{name}
}

type unknownDatabaseError struct{ name string }

func (e *unknownDatabaseError) Error() string { return "testenv: unknown database " + e.name }

// Unavailable skips t because a service cannot be reached, or fails it when
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s unavailable and %s=1: %v", service, EnvRequireServices, err)
	}
	t.Skipf("%s unavailable: %v", service, err)
}

// TableName returns a table name unique to this test run, starting with prefix.
func TableName(t testing.TB, prefix string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(prefix) + "_" + hex.EncodeToString(b[:])
}

// DropTables drops the given tables at t's cleanup, so shared databases do
// not fill up with test tables.
func DropTables(t testing.TB, db *bun.DB, tables ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, tbl := range tables {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tbl); err != nil {
				t.Logf("drop %s: %v", tbl, err)
			}
		}
	})
}
