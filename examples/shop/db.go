package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/schema"
	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go)
)

// dbForms names the -db forms, for the error on a value of none of them.
const dbForms = "want postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db, user:pass@tcp(host:3306)/db, or a SQLite file (sqlite:path for a name with = or @)"

// sqliteSettings let a relay, consumers and producers share one SQLite
// file: WAL so that readers do not block the writer, a busy timeout instead
// of immediate "database is locked" errors, and transactions that take the
// write lock when they begin.
const sqliteSettings = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"

// openDB opens the database that dsn names, as a service would: with
// database/sql, the database's driver and Bun's dialect for it. It returns
// the dialect's name and dsn with its password masked, for printing. dsn is
// never in an error: it may hold a password.
func openDB(ctx context.Context, dsn string) (db *bun.DB, dialect, shown string, err error) {
	var sqldb *sql.DB
	var d schema.Dialect
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, "", "", errors.New("-db: malformed postgres:// URL") // url's error holds the password
		}
		dialect, shown, d = "postgres", u.Redacted(), pgdialect.New()
		if sqldb, err = sql.Open("pgx", dsn); err != nil {
			return nil, "", "", fmt.Errorf("open %s: %w", shown, err)
		}
	case strings.HasPrefix(lower, "mysql://"), strings.Contains(dsn, "@tcp("), strings.HasPrefix(dsn, "tcp("):
		cfg, err := mysqlConfig(dsn)
		if err != nil {
			return nil, "", "", err
		}
		cfg.ParseTime = true // eventgen's tables hold times
		masked := *cfg
		if masked.Passwd != "" {
			masked.Passwd = "xxxxx"
		}
		dialect, shown, d = "mysql", masked.FormatDSN(), mysqldialect.New()
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, "", "", fmt.Errorf("open %s: %w", shown, err)
		}
		sqldb = sql.OpenDB(conn)
	case strings.Contains(dsn, "://"):
		return nil, "", "", fmt.Errorf("unsupported database DSN scheme %q: %s", scheme(dsn), dbForms)
	case strings.HasPrefix(lower, "sqlite:") || !strings.ContainsAny(dsn, "=@"):
		path := dsn
		if strings.HasPrefix(lower, "sqlite:") {
			path = dsn[len("sqlite:"):]
		}
		dialect, shown, d = "sqlite", path, sqlitedialect.New()
		if sqldb, err = sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+sqliteSettings); err != nil {
			return nil, "", "", fmt.Errorf("open %s: %w", path, err)
		}
		// One connection: SQLite has one writer, and Go's pool queues
		// the others where a canceled context reaches them, whereas
		// SQLite's busy handler lets them sleep through a stop.
		sqldb.SetMaxOpenConns(1)
	default:
		// Such as PostgreSQL's keyword/value form, "host=db password=...":
		// not a file name, and not to be printed.
		return nil, "", "", errors.New("unrecognised -db value: " + dbForms)
	}
	// Ping before bun.NewDB, whose MySQL dialect asks the server for its
	// version.
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, "", "", fmt.Errorf("connect to %s: %w", shown, err)
	}
	return bun.NewDB(sqldb, d), dialect, shown, nil
}

// mysqlConfig parses the driver's DSN (user:pass@tcp(host:3306)/db) or a
// mysql://user:pass@host:3306/db URL.
func mysqlConfig(dsn string) (*mysql.Config, error) {
	if !strings.HasPrefix(strings.ToLower(dsn), "mysql://") {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, errors.New("-db: malformed MySQL DSN: " + dbForms)
		}
		return cfg, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, errors.New("-db: malformed mysql:// URL")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "3306")
	}
	cfg, err := mysql.ParseDSN("tcp(" + host + ")/" + strings.TrimPrefix(u.Path, "/") + "?" + u.RawQuery)
	if err != nil {
		return nil, errors.New("-db: malformed mysql:// URL")
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	return cfg, nil
}

// scheme returns the scheme of a URL, if it looks like one, for messages.
func scheme(dsn string) string {
	s, _, _ := strings.Cut(dsn, "://")
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.') {
			return "(not shown)"
		}
	}
	return s
}
