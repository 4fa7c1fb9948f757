package eventgen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

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
	p := leased.NewPinned(db, ob.dialect, prepare)
	defer p.Close()
	for round := range 2 {
		publish(t, ob, db, 10*round, 3)
		var rows []tables.OutboxRow
		err := p.Do(ctx, func(db bun.IDB) (err error) {
			rows, err = ob.store.Claim(ctx, db, leased.Claim{Owner: ob.owner, Limit: 10, MaxBytes: 1 << 20, Lease: time.Minute})
			return err
		})
		if err != nil || len(rows) != 3 {
			t.Fatalf("round %d: claimed %d rows, %v; want 3", round, len(rows), err)
		}
		ids := []int64{rows[0].ID, rows[1].ID, rows[2].ID}
		var n int64
		err = p.Do(ctx, func(db bun.IDB) (err error) {
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
	// sends with their values inlined. Not the inserts: Publish prepares
	// its statements in the background on a connection of the pool, which
	// may be the one the relay pins next.
	var statements, executions int
	err := p.Do(ctx, func(db bun.IDB) error {
		return db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements
WHERE strpos(statement, ?) > 0 AND strpos(statement, '$' || '1') > 0 AND statement NOT LIKE 'INSERT%'`, ob.opts.Table).Scan(&statements, &executions)
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
