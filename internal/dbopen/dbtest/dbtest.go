// Package dbtest gives the tests of eventgen's commands and example program
// the databases and brokers named in the environment, with the rules of
// runtime/internal/testenv (which packages outside runtime/ cannot import):
// SQLite always; PostgreSQL, MySQL and brokers from EVENTGEN_TEST_POSTGRES,
// EVENTGEN_TEST_MYSQL, EVENTGEN_TEST_AMQP, EVENTGEN_TEST_NATS and
// EVENTGEN_TEST_REDIS; and with EVENTGEN_TEST_REQUIRE_SERVICES=1 an unset
// or unreachable service fails the test instead of skipping it.
package dbtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/dbopen"
)

// Database is one database a test runs against.
type Database struct {
	Name string // sqlite, postgres or mysql
	DSN  string // for dbopen.Open; may hold a password: show it with dbopen.Redact
}

// Databases returns a new SQLite file in t's temporary directory and the
// databases of EVENTGEN_TEST_POSTGRES and EVENTGEN_TEST_MYSQL that are set.
func Databases(t testing.TB) []Database {
	t.Helper()
	dbs := []Database{{Name: "sqlite", DSN: filepath.Join(t.TempDir(), "test.db")}}
	for _, name := range []string{"postgres", "mysql"} {
		if dsn := Optional(t, name); dsn != "" {
			dbs = append(dbs, Database{Name: name, DSN: dsn})
		}
	}
	return dbs
}

// Open opens d for t, closed at t's cleanup. An unreachable server skips t,
// or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func (d Database) Open(t testing.TB) *bun.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := dbopen.Open(ctx, d.DSN)
	if err != nil {
		Unavailable(t, d.Name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// envVar returns the environment variable of service.
func envVar(service string) string {
	switch service {
	case "postgres", "mysql", "amqp", "nats", "redis":
		return "EVENTGEN_TEST_" + strings.ToUpper(service)
	}
	return ""
}

// RequireServices reports whether a missing service must fail the test.
func RequireServices() bool { return os.Getenv("EVENTGEN_TEST_REQUIRE_SERVICES") == "1" }

// Optional returns the DSN or URL of service (postgres, mysql, amqp, nats or
// redis), or "" if its variable is unset, which fails t under
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func Optional(t testing.TB, service string) string {
	t.Helper()
	v := envVar(service)
	if v == "" {
		t.Fatalf("dbtest: unknown service %q", service)
	}
	s := os.Getenv(v)
	if s == "" && RequireServices() {
		t.Fatalf("%s is not set and EVENTGEN_TEST_REQUIRE_SERVICES=1", v)
	}
	return s
}

// Require returns the DSN or URL of service, skipping t if its variable is
// unset (or failing it under EVENTGEN_TEST_REQUIRE_SERVICES=1).
func Require(t testing.TB, service string) string {
	t.Helper()
	s := Optional(t, service)
	if s == "" {
		t.Skipf("%s is not set", envVar(service))
	}
	return s
}

// Unavailable skips t because service cannot be reached, or fails it under
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s unavailable and EVENTGEN_TEST_REQUIRE_SERVICES=1: %v", service, err)
	}
	t.Skipf("%s unavailable: %v", service, err)
}
