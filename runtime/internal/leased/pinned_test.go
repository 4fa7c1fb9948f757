package leased

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"testing"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// TestPinnedKeepsItsConnection checks, with a temporary table (which
// lives in one connection on every database), that a Pinned runs every
// call on one connection while other goroutines churn the pool, that an
// error gives the connection back, and that a small pool is not pinned.
func TestPinnedKeepsItsConnection(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			p := NewPinned(db, dialect(t, db), true)
			defer p.Close()
			if p.off {
				t.Fatalf("a pool of %d connections is not pinned", db.Stats().MaxOpenConnections)
			}
			exec := func(q string) func(bun.IDB) error {
				return func(db bun.IDB) error {
					_, err := db.ExecContext(ctx, q)
					return err
				}
			}
			if err := p.Do(ctx, exec("CREATE TEMPORARY TABLE pinned_probe (x INTEGER)")); err != nil {
				t.Fatal(err)
			}
			// Hold more connections than the pool keeps idle, then let
			// them go: database/sql closes the extra ones.
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Error(err)
						return
					}
					<-start
					_ = tx.Rollback()
				}()
			}
			close(start)
			wg.Wait()
			for i := range 3 {
				if err := p.Do(ctx, exec("INSERT INTO pinned_probe (x) VALUES (1)")); err != nil {
					t.Fatalf("call %d after the pool churned: %v (not the pinned connection)", i, err)
				}
			}

			// A failed call releases the connection: the next one runs on
			// another, which has no such table.
			if err := p.Do(ctx, exec("SELECT no_such_column FROM pinned_probe")); err == nil {
				t.Fatal("a bad statement succeeded")
			}
			if p.conn != nil {
				t.Error("the connection was kept after an error")
			}
			if err := p.Do(ctx, exec("INSERT INTO pinned_probe (x) VALUES (1)")); err == nil && d.Name != "sqlite" {
				// SQLite's pool may hand the same connection back.
				t.Error("the temporary table is still there: the connection was not given back")
			}

			// A connection the server closed is retried once on a fresh one.
			calls := 0
			err := p.Do(ctx, func(db bun.IDB) error {
				if calls++; calls == 1 {
					return driver.ErrBadConn
				}
				return exec("SELECT 1")(db)
			})
			if err != nil || calls != 2 {
				t.Errorf("after ErrBadConn: %d calls, %v; want 2 calls and nil", calls, err)
			}
			permanent := errors.New("permanent")
			calls = 0
			if err := p.Do(ctx, func(bun.IDB) error { calls++; return permanent }); !errors.Is(err, permanent) || calls != 1 {
				t.Errorf("other errors: %d calls, %v; want 1 call and the error", calls, err)
			}

			db.SetMaxOpenConns(minPinnedPool - 1)
			small := NewPinned(db, dialect(t, db), true)
			if !small.off {
				t.Errorf("a pool of %d connections is pinned", minPinnedPool-1)
			}
			var got bun.IDB
			_ = small.Do(ctx, func(db bun.IDB) error { got = db; return nil })
			if got != bun.IDB(db) {
				t.Errorf("a small pool ran f on %T, want the *bun.DB itself", got)
			}
		})
	}
}

func dialect(t *testing.T, db *bun.DB) sqlstore.Dialect {
	t.Helper()
	d, err := sqlstore.DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
