// Package dbopen opens the database that a DSN names, choosing the Bun
// dialect and the driver from the DSN's form. It is the one place in the
// module that opens a database from a DSN: for eventgen-ops, eventbench,
// the chaos harness and the tests' environment.
//
// DSN forms:
//
//	postgres://user:pass@host:5432/db?sslmode=disable  PostgreSQL (pgx); also postgresql://
//	mysql://user:pass@host:3306/db?param=value          MySQL/MariaDB (go-sql-driver/mysql)
//	user:pass@tcp(host:3306)/db?param=value             MySQL/MariaDB, the driver's own DSN form
//	path/to/file.db, sqlite:path/to/file.db            SQLite (modernc.org/sqlite, pure Go)
//
// A bare path with "=" or "@" in it is refused rather than taken as a
// SQLite file, since it is far more likely a DSN of another form, such as
// PostgreSQL's keyword/value "host=db password=..."; name such a file with
// sqlite:. A refused DSN is never echoed.
//
// SQLite files are opened in WAL mode with a busy timeout and immediate
// transactions, so that a relay, consumers and producers can share one file.
//
// Passwords never appear in errors: use [Redact] to show a DSN.
package dbopen

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/schema"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// mask replaces secrets in redacted DSNs and error texts.
const mask = "xxxxx"

// forms names the DSN forms, for the error on a DSN of none of them.
const forms = "postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db, user:pass@tcp(host:3306)/db, or a SQLite file path (sqlite:path for a name with = or @)"

// DefaultSQLiteBusyTimeout is how long a SQLite statement waits for a lock
// that another connection holds, unless [Options] say otherwise.
const DefaultSQLiteBusyTimeout = 10 * time.Second

// sqlitePragmas returns the SQLite settings for a file shared by several
// goroutines or processes: WAL so that readers do not block the writer, a
// busy timeout instead of immediate "database is locked" errors, and
// transactions that take the write lock when they begin, so two writers
// never deadlock on an upgrade.
func sqlitePragmas(busy time.Duration) string {
	return fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate", busy.Milliseconds())
}

// Options changes how [OpenWith] opens a database. The zero value is what
// [Open] does.
type Options struct {
	// MustExist makes a SQLite file that does not exist an error rather
	// than created: for tools that read tables an application made.
	MustExist bool
	// SQLiteBusyTimeout is how long a SQLite statement waits for a lock
	// held by another connection (default DefaultSQLiteBusyTimeout).
	SQLiteBusyTimeout time.Duration
	// NoPing skips the check that the database answers: the first
	// statement connects. (Bun's MySQL dialect then logs to the standard
	// logger if it cannot ask the server for its version.)
	NoPing bool
}

// Open opens the database that dsn names (see the package documentation
// for the forms) and checks that it answers. A SQLite file that does not
// exist is created.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	return OpenWith(ctx, dsn, Options{})
}

// OpenExisting is [Open], except that a SQLite file that does not exist is
// an error rather than created: for tools that read tables an application
// made.
func OpenExisting(ctx context.Context, dsn string) (*bun.DB, error) {
	return OpenWith(ctx, dsn, Options{MustExist: true})
}

// Dialect returns the name of the database that dsn names: "postgres",
// "mysql" or "sqlite", or an error if dsn has none of the known forms.
func Dialect(dsn string) (string, error) {
	t, err := parse(dsn)
	if err != nil {
		return "", err
	}
	return t.dialect, nil
}

// Redact returns dsn with its password masked, for messages and logs.
func Redact(dsn string) string {
	t, err := parse(dsn)
	if err != nil {
		return "(unrecognised DSN)"
	}
	return t.redacted
}

// target is a parsed DSN.
type target struct {
	dialect  string // postgres, mysql or sqlite
	redacted string // the DSN with its password masked
	secret   string // the password, masked in error texts
	path     string // SQLite: the file
	pg       *pgx.ConnConfig
	my       *mysql.Config
}

// OpenWith is [Open] with options.
func OpenWith(ctx context.Context, dsn string, opts Options) (*bun.DB, error) {
	if opts.SQLiteBusyTimeout < 0 {
		return nil, errors.New("dbopen: SQLiteBusyTimeout is negative")
	}
	if opts.SQLiteBusyTimeout == 0 {
		opts.SQLiteBusyTimeout = DefaultSQLiteBusyTimeout
	}
	t, err := parse(dsn)
	if err != nil {
		return nil, err
	}
	// Ping before bun.NewDB: Bun's MySQL dialect asks for the server version
	// there and logs to the standard logger when it cannot.
	var sqldb *sql.DB
	var d schema.Dialect
	switch t.dialect {
	case "postgres":
		sqldb, d = stdlib.OpenDB(*t.pg), pgdialect.New()
	case "mysql":
		conn, err := mysql.NewConnector(t.my)
		if err != nil {
			return nil, t.errorf("open %s: %w", t.redacted, err)
		}
		sqldb, d = sql.OpenDB(conn), mysqldialect.New()
	case "sqlite":
		if opts.MustExist {
			if _, err := os.Stat(t.path); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("open %s: the SQLite database does not exist", t.path)
			}
		}
		if sqldb, err = sql.Open("sqlite", "file:"+(&url.URL{Path: t.path}).EscapedPath()+"?"+sqlitePragmas(opts.SQLiteBusyTimeout)); err != nil {
			return nil, fmt.Errorf("open %s: %w", t.path, err)
		}
		d = sqlitedialect.New()
	}
	if !opts.NoPing {
		if err := sqldb.PingContext(ctx); err != nil {
			sqldb.Close()
			return nil, t.errorf("connect to %s: %w", t.redacted, err)
		}
	}
	db := bun.NewDB(sqldb, d)
	return db, nil
}

// parse recognises dsn's form without opening anything.
func parse(dsn string) (*target, error) {
	if dsn == "" {
		return nil, errors.New("empty database DSN")
	}
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return parsePostgres(dsn)
	case strings.HasPrefix(lower, "mysql://"):
		return parseMySQLURL(dsn)
	case isMySQLDSN(dsn):
		return parseMySQL(dsn)
	case strings.HasPrefix(lower, "sqlite:"):
		path := strings.TrimPrefix(dsn[len("sqlite:"):], "//")
		if path == "" {
			return nil, errors.New("sqlite: DSN names no file")
		}
		return &target{dialect: "sqlite", redacted: dsn, path: path}, nil
	case strings.Contains(dsn, "://"):
		if scheme, _, _ := strings.Cut(dsn, "://"); isScheme(scheme) {
			return nil, fmt.Errorf("unsupported database DSN scheme %q: want %s", scheme, forms)
		}
		return nil, errors.New("unrecognised database DSN: want " + forms)
	case strings.ContainsAny(dsn, "=@"):
		// A keyword/value DSN ("host=db password=..."), or a URL or MySQL
		// DSN mistyped: not a file to create, and not to be echoed.
		return nil, errors.New("unrecognised database DSN: want " + forms)
	}
	return &target{dialect: "sqlite", redacted: dsn, path: dsn}, nil
}

// isScheme reports whether s has the syntax of a URL scheme, so that it can
// be shown: a letter, then letters, digits, "+", "-" or ".".
func isScheme(s string) bool {
	for i, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

// isMySQLDSN reports whether dsn has go-sql-driver/mysql's own form,
// [user[:password]@]net(address)/dbname, with net tcp or unix.
func isMySQLDSN(dsn string) bool {
	for _, n := range []string{"tcp(", "unix("} {
		if strings.HasPrefix(dsn, n) || strings.Contains(dsn, "@"+n) {
			return strings.Contains(dsn, ")/")
		}
	}
	return false
}

func parsePostgres(dsn string) (*target, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error quotes the whole URL, password included.
		return nil, errors.New("postgres: malformed URL")
	}
	t := &target{dialect: "postgres", redacted: redactURL(u)}
	if u.User != nil {
		t.secret, _ = u.User.Password()
	}
	if t.pg, err = pgx.ParseConfig(dsn); err != nil {
		return nil, t.errorf("postgres: parse %s: %w", t.redacted, err)
	}
	if t.secret == "" {
		t.secret = t.pg.Password // from a password query parameter
	}
	return t, nil
}

// parseMySQLURL turns mysql://user:pass@host:port/db?params into the
// driver's configuration.
func parseMySQLURL(dsn string) (*target, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, errors.New("mysql: malformed URL")
	}
	t := &target{dialect: "mysql", redacted: redactURL(u)}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "3306")
	}
	driverDSN := "tcp(" + host + ")" + u.EscapedPath()
	if u.Path == "" {
		driverDSN += "/"
	}
	if u.RawQuery != "" {
		driverDSN += "?" + u.RawQuery
	}
	if u.User != nil {
		t.secret, _ = u.User.Password()
	}
	cfg, err := mysql.ParseDSN(driverDSN)
	if err != nil {
		return nil, t.errorf("mysql: parse %s: %w", t.redacted, err)
	}
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd = t.secret
	}
	t.my = mysqlDefaults(cfg)
	return t, nil
}

func parseMySQL(dsn string) (*target, error) {
	t := &target{dialect: "mysql", redacted: dsn}
	// The password runs from the first colon to the last @ before the
	// network, as the driver reads it; it may itself hold @ and colons.
	if at := max(strings.LastIndex(dsn, "@tcp("), strings.LastIndex(dsn, "@unix(")); at >= 0 {
		if user, pass, ok := strings.Cut(dsn[:at], ":"); ok {
			t.secret = pass
			t.redacted = user + ":" + mask + dsn[at:]
		}
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, t.errorf("mysql: parse %s: %w", t.redacted, err)
	}
	t.my = mysqlDefaults(cfg)
	return t, nil
}

// mysqlDefaults sets what eventgen needs of every MySQL connection.
func mysqlDefaults(cfg *mysql.Config) *mysql.Config {
	cfg.ParseTime = true
	return cfg
}

// redactURL masks u's password and any query parameter that may hold a
// secret.
func redactURL(u *url.URL) string {
	r := *u
	if q := r.Query(); len(q) > 0 {
		masked := false
		for k := range q {
			if lk := strings.ToLower(k); strings.Contains(lk, "pass") || strings.Contains(lk, "secret") || strings.Contains(lk, "key") {
				q.Set(k, mask)
				masked = true
			}
		}
		if masked {
			r.RawQuery = q.Encode()
		}
	}
	if r.User != nil {
		if _, ok := r.User.Password(); ok {
			r.User = url.UserPassword(r.User.Username(), mask)
		}
	}
	return r.String()
}

// errorf is fmt.Errorf with t's password masked in the resulting text. The
// wrapped error stays reachable through errors.Is and errors.As.
func (t *target) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if t.secret == "" {
		return err
	}
	return &maskedError{err: err, secrets: []string{t.secret, url.QueryEscape(t.secret), url.PathEscape(t.secret)}}
}

type maskedError struct {
	err     error
	secrets []string
}

func (e *maskedError) Error() string {
	s := e.err.Error()
	for _, secret := range e.secrets {
		s = strings.ReplaceAll(s, secret, mask)
	}
	return s
}

func (e *maskedError) Unwrap() error { return e.err }
