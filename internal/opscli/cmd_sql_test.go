package opscli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

func TestSQLUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"sql"}, "eventgen-ops sql: -dialect is required: postgres, mysql or sqlite\n"},
		{[]string{"sql", "-dialect", "oracle"}, `eventgen-ops sql: outbox schema: unknown dialect "oracle": want one of postgres, mysql, sqlite` + "\n"},
		{[]string{"sql", "-dialect", "sqlite", "-outbox-table", "x; DROP TABLE y"}, `eventgen-ops sql: outbox schema: invalid table name "x; DROP TABLE y": use letters`},
		{[]string{"sql", "-dialect", "mysql", "-inbox-table", "1inbox"}, `eventgen-ops sql: inbox schema: invalid table name "1inbox"`},
		{[]string{"sql", "-dialect", "postgres", "extra"}, `eventgen-ops sql: unexpected argument "extra"`},
	} {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != cli.ExitUsage || stdout != "" || !strings.HasPrefix(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d\nstdout:\n%s\nstderr:\n%s\nwant stderr starting %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.stderr)
		}
	}
}

// TestSQLApplies applies the printed DDL to each database and checks that
// the runtime then finds its tables ready: Migrate has nothing to do (it
// would fail to record a version twice) and rows can be written.
func TestSQLApplies(t *testing.T) {
	for _, d := range testservices.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			outbox, inbox := tableName(t, "sql_outbox"), tableName(t, "sql_inbox")
			dropAtCleanup(t, db, outbox, inbox)
			code, stdout, stderr := run(t, t.TempDir(), "sql", "-dialect", d.Name, "-outbox-table", outbox, "-inbox-table", inbox)
			if code != cli.ExitOK || stderr != "" {
				t.Fatalf("sql = %d: %s", code, stderr)
			}
			if !strings.HasPrefix(stdout, "-- The eventgen outbox table "+outbox+" ("+d.Name+").\n") ||
				!strings.Contains(stdout, "\n\n-- The eventgen inbox table "+inbox+" ("+d.Name+").\n") ||
				strings.Count(stdout, "CREATE TABLE IF NOT EXISTS eventgen_migrations") != 1 {
				t.Errorf("sql output:\n%s", stdout)
			}
			ctx := context.Background()
			for _, stmt := range statements(stdout) {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%v\n%s", err, stmt)
				}
			}

			tr, err := transport.Open(ctx, "", transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{Table: outbox})
			if err != nil {
				t.Fatal(err)
			}
			if err := ob.Migrate(ctx); err != nil {
				t.Fatalf("Outbox.Migrate after the printed DDL: %v", err)
			}
			if err := shopevents.NewPublisher(ob).PublishPaymentCaptured(ctx, db, payment(1)); err != nil {
				t.Fatalf("publish into the printed table: %v", err)
			}
			sub, err := tr.Subscriber("billing")
			if err != nil {
				t.Fatal(err)
			}
			c, err := eventgen.NewConsumer(db, sub, eventgen.ConsumerOptions{Group: "billing", Table: inbox})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Migrate(ctx); err != nil {
				t.Fatalf("Consumer.Migrate after the printed DDL: %v", err)
			}
			if _, err := c.Failed(ctx, 10); err != nil {
				t.Fatalf("read the printed inbox table: %v", err)
			}
		})
	}
}

// statements splits the output of eventgen-ops sql into statements.
func statements(sql string) []string {
	var out []string
	for s := range strings.SplitSeq(sql, ";\n") {
		var lines []string
		for l := range strings.SplitSeq(s, "\n") {
			if !strings.HasPrefix(l, "--") && strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			out = append(out, strings.Join(lines, "\n"))
		}
	}
	return out
}

// tableName returns a table name unique to this test run.
func tableName(t *testing.T, prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

// dropAtCleanup drops tables and forgets their migrations, so that shared
// databases do not fill up with test tables.
func dropAtCleanup(t *testing.T, db *bun.DB, tables ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, table := range tables {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				t.Logf("drop %s: %v", table, err)
			}
			if _, err := db.NewDelete().Table("eventgen_migrations").Where("table_name = ?", table).Exec(ctx); err != nil {
				t.Logf("forget the migrations of %s: %v", table, err)
			}
		}
	})
}

// payment returns a valid event for order n.
func payment(n int) shopevents.PaymentCaptured {
	return shopevents.PaymentCaptured{
		OrderID:    [16]byte{0: 1, 15: byte(n), 14: byte(n >> 8)},
		PaymentID:  "pay-" + hex.EncodeToString([]byte{byte(n)}),
		Method:     shopevents.PaymentMethodCard,
		Amount:     shopevents.Money{Amount: 1050, Currency: "EUR"},
		CapturedAt: time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC),
	}
}
