package dbopen

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"
)

func TestForms(t *testing.T) {
	for _, tt := range []struct {
		dsn, dialect, redacted string
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{"postgresql://u:s3cret@db:5432/test", "postgres", "postgresql://u:xxxxx@db:5432/test"},
		{"postgres://u@db/test?password=s3cret&sslmode=disable", "postgres", "postgres://u@db/test?password=xxxxx&sslmode=disable"},
		{"mysql://root@127.0.0.1:3306/test", "mysql", "mysql://root@127.0.0.1:3306/test"},
		{"mysql://root:s3cret@db/test?timeout=5s", "mysql", "mysql://root:xxxxx@db/test?timeout=5s"},
		{"root@tcp(127.0.0.1:3306)/test", "mysql", "root@tcp(127.0.0.1:3306)/test"},
		{"root:s3:c@ret@tcp(db:3306)/test", "mysql", "root:xxxxx@tcp(db:3306)/test"},
		{"tcp(db:3306)/test", "mysql", "tcp(db:3306)/test"},
		{"u:p@unix(/run/mysqld.sock)/test", "mysql", "u:xxxxx@unix(/run/mysqld.sock)/test"},
		{"shop.db", "sqlite", "shop.db"},
		{"/var/lib/shop/shop.db", "sqlite", "/var/lib/shop/shop.db"},
		{"sqlite:shop.db", "sqlite", "sqlite:shop.db"},
		{"sqlite://shop.db", "sqlite", "sqlite://shop.db"},
	} {
		d, err := Dialect(tt.dsn)
		if err != nil || d != tt.dialect {
			t.Errorf("Dialect(%q) = %q, %v; want %q", tt.dsn, d, err, tt.dialect)
		}
		if got := Redact(tt.dsn); got != tt.redacted {
			t.Errorf("Redact(%q) = %q, want %q", tt.dsn, got, tt.redacted)
		}
	}
}

func TestBadDSNs(t *testing.T) {
	for _, tt := range []struct{ dsn, err string }{
		{"", "empty database DSN"},
		{"oracle://scott:tiger@db/x", `unsupported database DSN scheme "oracle"`},
		{"sqlite:", "names no file"},
		{"postgres://u:s3cret@db:badport/x", "postgres: malformed URL"},
		{"mysql://u:s3cret@db/x?timeout=never", "mysql: parse mysql://u:xxxxx@db/x?timeout=never: time: invalid duration"},
		{"u:s3cret@tcp(db)/x?timeout=never", "mysql: parse u:xxxxx@tcp(db)/x?timeout=never: time: invalid duration"},
		{"u:s3cret@db:5432/x://", "unrecognised database DSN: want postgres://"},
	} {
		_, err := Open(context.Background(), tt.dsn)
		if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) = %v, want an error containing %q and no password", tt.dsn, err, tt.err)
		}
		if tt.dsn != "" && strings.Contains(Redact(tt.dsn), "s3cret") {
			t.Errorf("Redact(%q) shows the password", tt.dsn)
		}
	}
}

func TestUnreachableServersDoNotShowPasswords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://u:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		"mysql://u:s3cret@127.0.0.1:1/x?timeout=2s",
		"u:s3cret@tcp(127.0.0.1:1)/x?timeout=2s",
	} {
		db, err := Open(ctx, dsn)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%q) reached a server on port 1", dsn)
		}
		if msg := err.Error(); strings.Contains(msg, "s3cret") || !strings.Contains(msg, "connect to ") || !strings.Contains(msg, "xxxxx") {
			t.Errorf("Open(%q) = %q", dsn, msg)
		}
	}
}

func TestSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a b?.db") // characters a file: URI must escape
	if _, err := OpenExisting(ctx, path); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("OpenExisting of a missing file = %v", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("OpenExisting created the file")
	}
	db, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	var timeout int
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&timeout); err != nil || timeout == 0 {
		t.Errorf("busy_timeout = %d, %v", timeout, err)
	}
	db.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Open did not create %s: %v", path, err)
	}
	db, err = OpenExisting(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// TestUnrecognisedDSNs checks that a DSN of no known form is refused, with
// the forms it could have and without itself: in particular a keyword/value
// DSN is not taken for a SQLite file, which would be created under a name
// holding the password.
func TestUnrecognisedDSNs(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, dsn := range []string{
		"host=db user=u password=s3cret dbname=x",
		"password=s3cret",
		"u:s3cret@db:5432/x",
	} {
		for name, open := range map[string]func(context.Context, string) (*bun.DB, error){"Open": Open, "OpenExisting": OpenExisting} {
			db, err := open(context.Background(), dsn)
			if err == nil {
				db.Close()
				t.Fatalf("%s(%q) opened it", name, dsn)
			}
			if msg := err.Error(); strings.Contains(msg, "s3cret") || !strings.Contains(msg, "unrecognised database DSN: want postgres://") ||
				!strings.Contains(msg, "a SQLite file path") {
				t.Errorf("%s(%q) = %q", name, dsn, msg)
			}
		}
		if _, err := Dialect(dsn); err == nil {
			t.Errorf("Dialect(%q) recognised it", dsn)
		}
		if got := Redact(dsn); got != "(unrecognised DSN)" {
			t.Errorf("Redact(%q) = %q", dsn, got)
		}
	}
	if entries, err := os.ReadDir("."); err != nil || len(entries) > 0 {
		t.Errorf("files created: %v, %v", entries, err)
	}
	// A file whose name has = or @ is named with sqlite:.
	db, err := Open(context.Background(), "sqlite:a=b@c.db")
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func TestSQLiteBusyTimeout(t *testing.T) {
	ctx := context.Background()
	db, err := OpenWith(ctx, filepath.Join(t.TempDir(), "x.db"), Options{SQLiteBusyTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var timeout int
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&timeout); err != nil || timeout != 20000 {
		t.Errorf("busy_timeout = %d, %v; want 20000", timeout, err)
	}
	if _, err := OpenWith(ctx, "x.db", Options{SQLiteBusyTimeout: -1}); err == nil {
		t.Error("a negative SQLiteBusyTimeout was accepted")
	}
}

// TestSQLiteCanceledQueryReleasesItsLock cancels transactions while they run
// UPDATE ... RETURNING and then writes again. modernc.org/sqlite v1.39 left
// such a query's statement unfinalized, so that its connection, closed by
// database/sql, lived on and held the write lock: a process stopping on
// SIGTERM then waited the whole busy timeout on its next write. The pinned
// driver must not.
func TestSQLiteCanceledQueryReleasesItsLock(t *testing.T) {
	for round := range 50 {
		db, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "cancel.db"))
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		if _, err := db.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		writers := make(chan struct{})
		for range 4 {
			go func() {
				defer func() { writers <- struct{}{} }()
				for ctx.Err() == nil {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						continue
					}
					_, _ = tx.ExecContext(ctx, "INSERT INTO t (v) VALUES ('x')")
					if rows, err := tx.QueryContext(ctx, "UPDATE t SET v = 'y' WHERE id IN (SELECT id FROM t ORDER BY id DESC LIMIT 3) RETURNING id"); err == nil {
						for rows.Next() {
						}
						_ = rows.Close()
					}
					_ = tx.Commit()
				}
			}()
		}
		time.Sleep(time.Duration(round%10) * 3 * time.Millisecond)
		cancel()
		for range 4 {
			<-writers
		}
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		began := time.Now()
		_, err = db.ExecContext(wctx, "INSERT INTO t (v) VALUES ('after')")
		wcancel()
		if err != nil {
			t.Fatalf("round %d: write after the cancel: %v (after %s)", round, err, time.Since(began).Round(time.Millisecond))
		}
		db.Close()
	}
}
