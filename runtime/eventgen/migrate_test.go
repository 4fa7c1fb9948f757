package eventgen

import (
	"context"
	"fmt"
	"testing"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// TestMigrateRecreatesDroppedTable drops a migrated outbox table and inbox
// table, whose versions stay recorded in eventgen_migrations, and checks that
// Migrate (several at once, as replicas starting together would) creates
// them again, so that Publish, Failed and Reexecute work on them. On
// PostgreSQL and MySQL it does the same with schema-qualified names.
func TestMigrateRecreatesDroppedTable(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			testMigrateRecreates(t, db, "")
			if d.Name == "sqlite" {
				return // SQLite's CREATE INDEX takes no schema-qualified table
			}
			t.Run("qualified", func(t *testing.T) {
				schema := testenv.TableName(t, "schema")
				ctx := context.Background()
				if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					drop := "DROP SCHEMA " + schema
					if d.Name == "postgres" {
						drop += " CASCADE"
					}
					if _, err := db.ExecContext(context.WithoutCancel(ctx), drop); err != nil {
						t.Logf("%s: %v", drop, err)
					}
				})
				testMigrateRecreates(t, db, schema+".")
			})
		})
	}
}

func testMigrateRecreates(t *testing.T, db *bun.DB, schema string) {
	ctx := context.Background()
	outboxTable, inboxTable := schema+testenv.TableName(t, "outbox"), schema+testenv.TableName(t, "inbox")
	testenv.DropTables(t, db, outboxTable, inboxTable)
	ob, err := NewOutbox(db, newPubSub(t), OutboxOptions{Table: outboxTable, Logger: outboxLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(db, newPubSub(t), ConsumerOptions{Group: "g", Table: inboxTable, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	migrate := map[string]func(context.Context) error{outboxTable: ob.Migrate, inboxTable: c.Migrate}
	versions := map[string]int{outboxTable: len(tables.OutboxMigrations), inboxTable: len(tables.InboxMigrations)}
	for _, table := range []string{outboxTable, inboxTable} {
		if err := migrate[table](ctx); err != nil {
			t.Fatalf("first Migrate of %s: %v", table, err)
		}
		if _, err := db.ExecContext(ctx, "DROP TABLE "+table); err != nil {
			t.Fatal(err)
		}
		if n := recordedVersions(t, db, table); n != versions[table] {
			t.Fatalf("%s dropped: %d versions recorded, want the stale %d", table, n, versions[table])
		}
		errs := make(chan error, 3)
		for range cap(errs) {
			go func() { errs <- migrate[table](ctx) }()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Errorf("Migrate of dropped %s: %v", table, err)
			}
		}
		if n := recordedVersions(t, db, table); n != versions[table] {
			t.Errorf("%s recreated: %d versions recorded, want %d", table, n, versions[table])
		}
	}
	publish(t, ob, db, 0, 2)
	if _, err := ob.Failed(ctx, 10); err != nil {
		t.Errorf("outbox Failed after Migrate: %v", err)
	}
	storeFailed(t, c, "m1")
	failed, err := c.Failed(ctx, 10)
	if err != nil || len(failed) != 1 {
		t.Fatalf("consumer Failed after Migrate = %d rows, %v; want 1", len(failed), err)
	}
	if n, err := c.Reexecute(ctx, "m1"); n != 1 || err != nil {
		t.Errorf("Reexecute = %d, %v; want 1", n, err)
	}
}

// recordedVersions counts the versions eventgen_migrations holds for table.
func recordedVersions(t *testing.T, db *bun.DB, table string) int {
	t.Helper()
	var n int
	q := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE table_name = ?", sqlstore.MigrationsTable(table))
	if err := db.QueryRowContext(context.Background(), q, table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
