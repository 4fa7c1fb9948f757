package eventgen

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// TestPinnedConnKeepsItsConnection checks, with a temporary table (which
// lives in one connection on every database), that a pinnedConn runs every
// call on one connection while other goroutines churn the pool, that an
// error gives the connection back, and that a small pool is not pinned.
func TestPinnedConnKeepsItsConnection(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			p := newPinnedConn(db, dialectOf(t, db), true)
			defer p.close()
			if p.off {
				t.Fatalf("a pool of %d connections is not pinned", db.Stats().MaxOpenConnections)
			}
			exec := func(q string) func(bun.IDB) error {
				return func(db bun.IDB) error {
					_, err := db.ExecContext(ctx, q)
					return err
				}
			}
			if err := p.do(ctx, exec("CREATE TEMPORARY TABLE pinned_probe (x INTEGER)")); err != nil {
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
				if err := p.do(ctx, exec("INSERT INTO pinned_probe (x) VALUES (1)")); err != nil {
					t.Fatalf("call %d after the pool churned: %v (not the pinned connection)", i, err)
				}
			}

			// A failed call releases the connection: the next one runs on
			// another, which has no such table.
			if err := p.do(ctx, exec("SELECT no_such_column FROM pinned_probe")); err == nil {
				t.Fatal("a bad statement succeeded")
			}
			if p.conn != nil {
				t.Error("the connection was kept after an error")
			}
			if err := p.do(ctx, exec("INSERT INTO pinned_probe (x) VALUES (1)")); err == nil && d.Name != "sqlite" {
				// SQLite's pool may hand the same connection back.
				t.Error("the temporary table is still there: the connection was not given back")
			}

			// A connection the server closed is retried once on a fresh one.
			calls := 0
			err := p.do(ctx, func(db bun.IDB) error {
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
			if err := p.do(ctx, func(bun.IDB) error { calls++; return permanent }); !errors.Is(err, permanent) || calls != 1 {
				t.Errorf("other errors: %d calls, %v; want 1 call and the error", calls, err)
			}

			db.SetMaxOpenConns(minPinnedPool - 1)
			small := newPinnedConn(db, dialectOf(t, db), true)
			if !small.off {
				t.Errorf("a pool of %d connections is pinned", minPinnedPool-1)
			}
			var got bun.IDB
			_ = small.do(ctx, func(db bun.IDB) error { got = db; return nil })
			if got != bun.IDB(db) {
				t.Errorf("a small pool ran f on %T, want the *bun.DB itself", got)
			}
		})
	}
}

func dialectOf(t *testing.T, db *bun.DB) sqlstore.Dialect {
	t.Helper()
	d, err := sqlstore.DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPinnedConnPreparesClaimsAndMarks checks that the relay's claims and
// marks run as statements prepared once on its pinned connection (visible
// on PostgreSQL) unless told not to, and that they claim and mark the right
// rows everywhere.
func TestPinnedConnPreparesClaimsAndMarks(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		for _, prepare := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/prepare=%t", d.Name, prepare), func(t *testing.T) {
				testPinnedConnStatements(t, d, prepare)
			})
		}
	}
}

func testPinnedConnStatements(t *testing.T, d testenv.Database, prepare bool) {
	db := d.Open(t)
	ob := newOutbox(t, db, newPubSub(t), OutboxOptions{})
	ctx := context.Background()
	p := newPinnedConn(db, ob.dialect, prepare)
	defer p.close()
	for round := range 2 {
		publish(t, ob, db, 10*round, 3)
		var rows []tables.OutboxRow
		err := p.do(ctx, func(db bun.IDB) (err error) {
			rows, err = ob.store.Claim(ctx, db, leased.Claim{Owner: ob.owner, Limit: 10, MaxBytes: 1 << 20, Lease: time.Minute})
			return err
		})
		if err != nil || len(rows) != 3 {
			t.Fatalf("round %d: claimed %d rows, %v; want 3", round, len(rows), err)
		}
		ids := []int64{rows[0].ID, rows[1].ID, rows[2].ID}
		var n int64
		err = p.do(ctx, func(db bun.IDB) (err error) {
			n, err = ob.store.Done(ctx, db, ob.owner, ids, 0, time.Hour)
			return err
		})
		if err != nil || n != 3 {
			t.Fatalf("round %d: marked %d rows, %v; want 3", round, n, err)
		}
	}
	if c := statusCounts(t, ob); c[tables.StatusPublished] != 6 || len(c) != 1 {
		t.Errorf("statuses = %v, want 6 published", c)
	}
	if d.Name != "postgres" {
		return
	}
	// Statements with placeholders: pgx also prepares queries that Bun
	// sends with their values inlined.
	var statements, executions int
	err := p.do(ctx, func(db bun.IDB) error {
		return db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements
WHERE strpos(statement, ?) > 0 AND strpos(statement, '$' || '1') > 0`, ob.opts.Table).Scan(&statements, &executions)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	if prepare {
		want = 2 // the claim and the mark
	}
	if statements != want || executions != 2*want {
		t.Errorf("%d statements prepared on the connection, executed %d times; want %d, twice each", statements, executions, want)
	}
}
