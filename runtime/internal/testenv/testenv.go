// Package testenv gives the runtime's tests the databases and brokers to
// run against.
//
// SQLite (a file in the test's temporary directory, pure-Go driver) is always
// available. PostgreSQL and MySQL/MariaDB are added when EVENTGEN_TEST_POSTGRES
// and EVENTGEN_TEST_MYSQL hold a DSN. With EVENTGEN_TEST_REQUIRE_SERVICES=1 an
// unset or unreachable service fails the test instead of skipping it. Those
// rules, and the reading of the variables, are internal/testservices's;
// databases are opened by internal/dbopen.
//
// Tests share one database per service; they isolate themselves with table
// names from [TableName], so no test sees another's rows.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/dbopen"
	"github.com/eventgen/eventgen/internal/testservices"
)

// Environment variables naming the services.
const (
	EnvPostgres        = testservices.EnvPostgres
	EnvMySQL           = testservices.EnvMySQL
	EnvAMQP            = testservices.EnvAMQP
	EnvNATS            = testservices.EnvNATS
	EnvRedis           = testservices.EnvRedis
	EnvRequireServices = testservices.EnvRequireServices
)

// RequireServices reports whether a missing service must fail the run.
func RequireServices() bool { return testservices.RequireServices() }

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
	var dbs []Database
	for _, d := range testservices.Databases(t) {
		if d.Name == "sqlite" {
			// A new file for each Open, in the temporary directory of the
			// test that opens it.
			dbs = append(dbs, Database{Name: d.Name, Open: OpenSQLite})
			continue
		}
		dbs = append(dbs, Database{Name: d.Name, Open: func(t testing.TB) *bun.DB { return OpenDSN(t, d.Name, d.DSN) }})
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
	testservices.CloseOnCleanup(t, db)
	return db
}

// OpenSQLitePath opens (creating if needed) the SQLite database at path with
// the settings eventgen recommends: WAL, a busy timeout and one writer.
func OpenSQLitePath(path string) (*bun.DB, error) {
	return dbopen.Open(context.Background(), "sqlite:"+path)
}

// OpenDSN opens a PostgreSQL or MySQL database and pings it. An unreachable
// database skips t, or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func OpenDSN(t testing.TB, name, dsn string) *bun.DB {
	t.Helper()
	return testservices.Database{Name: name, DSN: dsn}.Open(t)
}

// Open opens a *bun.DB for a postgres or mysql DSN and pings it.
func Open(name, dsn string) (*bun.DB, error) {
	if name != "postgres" && name != "mysql" {
		return nil, fmt.Errorf("testenv: unknown database %s", name)
	}
	if d, err := dbopen.Dialect(dsn); err != nil {
		return nil, err
	} else if d != name {
		return nil, fmt.Errorf("testenv: a %s DSN for %s", d, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return dbopen.Open(ctx, dsn)
}

// Unavailable skips t because a service cannot be reached, or fails it when
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	testservices.Unavailable(t, service, err)
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
			// With the key table that ordering keeps beside each table.
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tbl+"_keys"); err != nil {
				t.Logf("drop %s_keys: %v", tbl, err)
			}
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tbl); err != nil {
				t.Logf("drop %s: %v", tbl, err)
			}
		}
	})
}
