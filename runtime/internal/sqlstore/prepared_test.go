package sqlstore

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite"
)

func TestDriverPlaceholders(t *testing.T) {
	pg, _ := DialectByName("postgres")
	my, _ := DialectByName("mysql")
	for _, c := range []struct {
		d           Dialect
		query, want string
	}{
		{pg, "INSERT INTO t (a, b) VALUES (?, ?), (?, now() + ?)", "INSERT INTO t (a, b) VALUES ($1, $2), ($3, now() + $4)"},
		{pg, "SELECT 1", "SELECT 1"},
		{pg, "?", "$1"},
		{pg, "??????????", "$1$2$3$4$5$6$7$8$9$10"},
		{my, "INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (?)"},
	} {
		if got := driverPlaceholders(c.d, c.query); got != c.want {
			t.Errorf("%s: driverPlaceholders(%q) = %q, want %q", c.d.Name, c.query, got, c.want)
		}
	}
}

// TestPreparedWait checks that Wait returns once the statements started in
// the background are prepared, so that a stopping caller leaves none
// working on the database.
func TestPreparedWait(t *testing.T) {
	sqldb, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "wait.db"))
	if err != nil {
		t.Fatal(err)
	}
	db := bun.NewDB(sqldb, sqlitedialect.New())
	defer db.Close()
	d, err := DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPrepared(db, d)
	const query = "SELECT 1"
	if p.stmt(query) != nil {
		t.Fatal("a statement was prepared before its first use")
	}
	p.Wait(time.Minute)
	p.mu.RLock()
	prepared, preparing := p.stmts[query] != nil, p.preparing[query]
	p.mu.RUnlock()
	if !prepared || preparing {
		t.Errorf("after Wait: prepared %v, still preparing %v", prepared, preparing)
	}
	var nilPrepared *Prepared
	nilPrepared.Wait(time.Second) // no panic
}
