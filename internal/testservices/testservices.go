// Package testservices holds the rules by which eventgen's tests find the
// databases and brokers to run against, and is the one place that reads
// their environment variables:
//
//	EVENTGEN_TEST_POSTGRES           a PostgreSQL DSN
//	EVENTGEN_TEST_MYSQL              a MySQL/MariaDB DSN
//	EVENTGEN_TEST_AMQP               a RabbitMQ URL
//	EVENTGEN_TEST_NATS               a NATS JetStream URL
//	EVENTGEN_TEST_REDIS              a Redis URL
//	EVENTGEN_TEST_REQUIRE_SERVICES   1: an unset or unreachable service fails
//	                                 the test instead of skipping it
//
// SQLite needs no variable and is always there. Databases are opened with
// internal/dbopen, so the DSNs take its forms.
//
// runtime/internal/testenv builds the runtime's test helpers on this
// package; tests outside runtime/, which cannot import that one, use this
// one directly.
package testservices

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/dbopen"
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

// envVar returns the environment variable of service (postgres, mysql,
// amqp, nats or redis), or "".
func envVar(service string) string {
	switch service {
	case "postgres":
		return EnvPostgres
	case "mysql":
		return EnvMySQL
	case "amqp":
		return EnvAMQP
	case "nats":
		return EnvNATS
	case "redis":
		return EnvRedis
	}
	return ""
}

// RequireServices reports whether a missing service must fail the test.
func RequireServices() bool { return os.Getenv(EnvRequireServices) == "1" }

// Optional returns the DSN or URL of service (postgres, mysql, amqp, nats or
// redis), or "" if its variable is unset, which fails t under
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func Optional(t testing.TB, service string) string {
	t.Helper()
	v := envVar(service)
	if v == "" {
		t.Fatalf("testservices: unknown service %q", service)
	}
	s := os.Getenv(v)
	if s == "" && RequireServices() {
		t.Fatalf("%s is not set and %s=1", v, EnvRequireServices)
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
		t.Fatalf("%s unavailable and %s=1: %v", service, EnvRequireServices, err)
	}
	t.Skipf("%s unavailable: %v", service, err)
}

// Database is one database a test runs against.
type Database struct {
	Name string // sqlite, postgres or mysql
	DSN  string // for dbopen.Open; may hold a password: show it with dbopen.Redact
}

// Databases returns a new SQLite file in t's temporary directory and the
// databases of EVENTGEN_TEST_POSTGRES and EVENTGEN_TEST_MYSQL that are set.
// Under EVENTGEN_TEST_REQUIRE_SERVICES=1 an unset one fails t.
func Databases(t testing.TB) []Database {
	t.Helper()
	dbs := []Database{{Name: "sqlite", DSN: "sqlite:" + filepath.Join(t.TempDir(), "test.db")}}
	for _, name := range []string{"postgres", "mysql"} {
		if dsn := Optional(t, name); dsn != "" {
			dbs = append(dbs, Database{Name: name, DSN: dsn})
		}
	}
	return dbs
}

// Open opens d for t and checks that it answers; it is closed at t's
// cleanup. An unreachable server skips t, or fails it under
// EVENTGEN_TEST_REQUIRE_SERVICES=1; a DSN of another database than d.Name
// fails it.
func (d Database) Open(t testing.TB) *bun.DB {
	t.Helper()
	if dialect, err := dbopen.Dialect(d.DSN); err != nil || dialect != d.Name {
		t.Fatalf("the %s DSN: %v (a DSN of %q)", d.Name, err, dialect)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := dbopen.Open(ctx, d.DSN)
	if err != nil {
		Unavailable(t, d.Name, err)
	}
	CloseOnCleanup(t, db)
	return db
}

// CloseOnCleanup closes db when t ends and waits, up to 10 s, for its
// connections to close. One in use at Close (a statement being prepared in
// the background, say) closes only when it is released; on SQLite the last
// one removes the -wal and -shm files, which must happen before t's
// temporary directory is removed.
func CloseOnCleanup(t testing.TB, db *bun.DB) {
	t.Cleanup(func() {
		db.Close()
		for deadline := time.Now().Add(10 * time.Second); db.DB.Stats().OpenConnections > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	})
}
