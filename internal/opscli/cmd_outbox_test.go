package opscli

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/internal/dbopen"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// quick are retry options that fail a row after two quick attempts.
const (
	quickLocalRetries = 1
	quickMaxRetries   = 2
	quickInterval     = time.Millisecond
	quickPoll         = 10 * time.Millisecond
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sqliteDB returns the DSN of a new SQLite file and the database open on it.
func sqliteDB(t *testing.T) (string, *bun.DB) {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "shop.db")
	db, err := dbopen.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	testservices.CloseOnCleanup(t, db)
	return dsn, db
}

// newOutbox returns a migrated outbox on table that relays to pub.
func newOutbox(t *testing.T, db *bun.DB, table string, pub message.Publisher) *eventgen.Outbox {
	t.Helper()
	ob, err := eventgen.NewOutbox(db, pub, eventgen.OutboxOptions{
		Table: table, LocalRetries: quickLocalRetries, MaxRetries: quickMaxRetries,
		LocalRetryInterval: quickInterval, RetryInterval: quickInterval, RetryMinAge: quickInterval,
		PollInterval: quickPoll, Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ob
}

// runUntil runs run (an Outbox's or Consumer's Run) until done reports
// true, polling it, and stops it.
func runUntil(t *testing.T, run func(context.Context) error, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			cancel()
			<-stopped
			t.Fatal("timed out")
		}
		time.Sleep(quickPoll)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// newBillingConsumer returns a migrated consumer of the billing group on
// the inbox table table, subscribed through tr, whose handler is h.
func newBillingConsumer(t *testing.T, db *bun.DB, tr *transport.Transport, table string,
	h func(context.Context, shopevents.PaymentCaptured, eventgen.Metadata) error,
) *eventgen.Consumer {
	t.Helper()
	sub, err := tr.Subscriber(shopevents.GroupBilling)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeInitialize(shopevents.TopicPayments); err != nil {
		t.Fatal(err)
	}
	c, err := eventgen.NewConsumer(db, sub, eventgen.ConsumerOptions{
		Group: shopevents.GroupBilling, Table: table, LocalRetries: quickLocalRetries, MaxRetries: quickMaxRetries,
		LocalRetryInterval: quickInterval, RetryInterval: quickInterval, RetryMinAge: quickInterval,
		PollInterval: quickPoll, Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := eventgen.Handle(c, h); err != nil {
		t.Fatal(err)
	}
	return c
}

// startRelay runs ob's relay until the returned function stops it.
func startRelay(ob *eventgen.Outbox) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ob.Run(ctx) }()
	return func() { cancel(); <-done }
}

// failedOutbox publishes n events to a new outbox table whose broker is
// closed, and relays until all are failed. It returns the table.
func failedOutbox(t *testing.T, db *bun.DB, n int) string {
	t.Helper()
	ctx := context.Background()
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr.Close() // every publish now fails
	table := tableName(t, "cli_outbox")
	ob := newOutbox(t, db, table, tr.Publisher())
	pub := shopevents.NewPublisher(ob)
	for i := range n {
		if err := pub.PublishPaymentCaptured(ctx, db, payment(i)); err != nil {
			t.Fatal(err)
		}
	}
	runUntil(t, ob.Run, func() bool {
		rows, err := ob.Failed(ctx, n+1)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows) == n
	})
	return table
}

// idPattern matches a row of outbox failed: its id, message id and name.
var idPattern = regexp.MustCompile(`(?m)^(\d+) +([0-9a-f-]{36}) +PaymentCaptured +1 +shop\.payments `)

func TestOutboxFailedAndRequeue(t *testing.T) {
	dsn, db := sqliteDB(t)
	table := failedOutbox(t, db, 3)
	dir := t.TempDir()

	code, stdout, stderr := run(t, dir, "outbox", "failed", "-db", dsn, "-table", table)
	if code != cli.ExitOK || stderr != "" {
		t.Fatalf("outbox failed = %d: %s", code, stderr)
	}
	header := regexp.MustCompile(`^ID +MESSAGE ID +NAME +VERSION +TOPIC +KEY +ATTEMPTS +CREATED +LAST ERROR\n`)
	rows := idPattern.FindAllStringSubmatch(stdout, -1)
	if !header.MatchString(stdout) || len(rows) != 3 || strings.Count(stdout, "\n") != 4 ||
		!strings.Contains(stdout, " 2 ") || !strings.Contains(stdout, "transport is closed") ||
		!regexp.MustCompile(` 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ `).MatchString(stdout) {
		t.Fatalf("outbox failed printed:\n%s", stdout)
	}
	ids := []string{rows[0][1], rows[1][1], rows[2][1]}

	code, stdout, _ = run(t, dir, "outbox", "failed", "-db", dsn, "-table", table, "-limit", "1", "-v")
	if code != cli.ExitOK || len(idPattern.FindAllString(stdout, -1)) != 1 || !strings.Contains(stdout, "\nID "+ids[0]+":\n\t") {
		t.Errorf("outbox failed -limit 1 -v = %d:\n%s", code, stdout)
	}

	code, stdout, stderr = run(t, dir, "outbox", "requeue", "-db", dsn, "-table", table, "-id", ids[0], "-id", ids[0])
	if want := "1 failed events in " + table + " made due again; the relay publishes them again\n"; code != cli.ExitOK || stdout != want ||
		!regexp.MustCompile(`^time=\S+ level=INFO msg="eventgen-ops outbox requeue: audit" user=\S+ action=requeue table=`+table+` ids=\[\d+\] count=1 ok=true\n$`).MatchString(stderr) {
		t.Errorf("outbox requeue -id = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, dir, "outbox", "requeue", "-db", dsn, "-table", table, "-id", ids[0], "-id", ids[1])
	if code != cli.ExitFailure || !strings.Contains(stderr, "1 of the 2 ids given are not failed events") {
		t.Errorf("outbox requeue of a pending row = %d, %q", code, stderr)
	}
	if _, stdout, _ = run(t, dir, "outbox", "failed", "-db", dsn, "-table", table); len(idPattern.FindAllString(stdout, -1)) != 1 {
		t.Errorf("after requeuing 2 of 3:\n%s", stdout)
	}
	code, stdout, stderr = run(t, dir, "outbox", "requeue", "-db", dsn, "-table", table, "-all")
	if code != cli.ExitFailure || stdout != "" || !strings.Contains(stderr, "requeue every failed event in "+table+" (1 now)? Type yes to go on: \neventgen-ops outbox requeue: not confirmed; nothing changed") {
		t.Errorf("outbox requeue -all without -yes, nothing typed = %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, dir, "outbox", "requeue", "-db", dsn, "-table", table, "-all", "-yes")
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "1 failed events") {
		t.Errorf("outbox requeue -all = %d, %q", code, stdout)
	}
	code, stdout, stderr = run(t, dir, "outbox", "failed", "-db", dsn, "-table", table)
	if code != cli.ExitOK || stdout != "" || stderr != "no failed events in "+table+"\n" {
		t.Errorf("outbox failed after requeue -all = %d, %q, %q", code, stdout, stderr)
	}

	// A relay with a working broker now publishes all three.
	ctx := context.Background()
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sub, err := tr.Subscriber("test")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Subscribe(ctx, shopevents.TopicPayments)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]bool)
	runUntil(t, newOutbox(t, db, table, tr.Publisher()).Run, func() bool {
		select {
		case m := <-msgs:
			got[m.Metadata.Get("ce_partitionkey")] = true
			m.Ack()
		default:
		}
		return len(got) == 3
	})
}

func TestOutboxCommandErrors(t *testing.T) {
	t.Setenv(EnvDSN, "")
	dsn, db := sqliteDB(t)
	table := tableName(t, "cli_outbox")
	newOutbox(t, db, table, nil)
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"outbox"}, cli.ExitUsage, "eventgen-ops outbox: name a command"},
		{[]string{"outbox", "frobnicate"}, cli.ExitUsage, `eventgen-ops outbox: unknown command "frobnicate"`},
		{[]string{"outbox", "failed"}, cli.ExitUsage, "eventgen-ops outbox failed: no database: set $EVENTGEN_DSN, or give -db-file FILE (or -db DSN)"},
		{[]string{"outbox", "failed", "-db", dsn, "-db-file", dsn}, cli.ExitUsage, "give -db or -db-file, not both"},
		{[]string{"outbox", "failed", "-db-file", filepath.Join(dir, "none")}, cli.ExitUsage, "-db-file: open "},
		{[]string{"outbox", "failed", "-db", dsn, "extra"}, cli.ExitUsage, `eventgen-ops outbox failed: unexpected argument "extra"`},
		{[]string{"outbox", "failed", "-db", dsn, "-table", "a;b"}, cli.ExitUsage, `eventgen-ops outbox failed: eventgen: invalid OutboxOptions: Table: invalid table name "a;b"`},
		{[]string{"outbox", "failed", "-db", dsn, "-limit", "0"}, cli.ExitFailure, "limit 0 is not positive"},
		{[]string{"outbox", "failed", "-db", dsn, "-table", "missing"}, cli.ExitFailure, "eventgen-ops outbox failed: outbox: list failed: "},
		{[]string{"outbox", "failed", "-db", filepath.Join(dir, "nope.db")}, cli.ExitFailure, "the SQLite database does not exist"},
		{[]string{"outbox", "failed", "-db", "oracle://scott:tiger@db/x"}, cli.ExitFailure, `unsupported database DSN scheme "oracle"`},
		{[]string{"outbox", "requeue", "-db", dsn, "-table", table}, cli.ExitUsage, "eventgen-ops outbox requeue: give -id (one or more) or -all"},
		{[]string{"outbox", "requeue", "-db", dsn, "-table", table, "-id", "1", "-all"}, cli.ExitUsage, "give -id (one or more) or -all"},
		{[]string{"outbox", "requeue", "-db", dsn, "-id", "x"}, cli.ExitUsage, `invalid value "x" for flag -id: not a row id`},
		{[]string{"outbox", "requeue", "-db", dsn, "-table", table, "-id", "7"}, cli.ExitFailure, "1 of the 1 ids given are not failed events in " + table},
	} {
		code, _, stderr := run(t, dir, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d, stderr:\n%s\nwant %d and %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.stderr)
		}
	}
	if _, err := dbopen.OpenExisting(context.Background(), filepath.Join(dir, "nope.db")); err == nil {
		t.Error("outbox failed created a SQLite file")
	}
}

func TestDatabasePasswordsAreNotPrinted(t *testing.T) {
	for _, args := range [][]string{
		{"outbox", "failed", "-db", "postgres://u:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
		{"inbox", "failed", "-group", "g", "-db", "u:s3cret@tcp(127.0.0.1:1)/x?timeout=2s"},
		{"outbox", "requeue", "-all", "-db", "postgres://u:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
		{"inbox", "reexecute", "-all", "-group", "g", "-db", "mysql://u:s3cret@127.0.0.1:1/x?timeout=2s"},
	} {
		code, stdout, stderr := run(t, t.TempDir(), args...)
		if code != cli.ExitFailure || !strings.Contains(stderr, "connect to ") || strings.Contains(stdout+stderr, "s3cret") {
			t.Errorf("eventgen-ops %s = %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

// TestUnrecognisedDSNs checks that a DSN of no known form, such as
// PostgreSQL's keyword/value form, is refused without being echoed, and is
// not taken for the name of a SQLite file to create.
func TestUnrecognisedDSNs(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"outbox", "failed", "-db", "host=db user=u password=secret dbname=shop"},
		{"inbox", "reexecute", "-all", "-group", "g", "-db", "password=secret"},
	} {
		code, stdout, stderr := run(t, dir, args...)
		if code != cli.ExitFailure || strings.Contains(stdout+stderr, "secret") ||
			!strings.Contains(stderr, "unrecognised database DSN: want postgres://") {
			t.Errorf("eventgen-ops %s = %d\nstdout: %s\nstderr: %s", args[0]+" "+args[1], code, stdout, stderr)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		t.Errorf("files created: %v, %v", entries, err)
	}
}

func TestInboxFailedAndReexecute(t *testing.T) {
	dsn, db := sqliteDB(t)
	ctx := context.Background()
	table := tableName(t, "cli_inbox")
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// A billing consumer whose handler fails three events for good: one
	// with an error, two with a panic.
	consumer := func(h func(context.Context, shopevents.PaymentCaptured, eventgen.Metadata) error) *eventgen.Consumer {
		return newBillingConsumer(t, db, tr, table, h)
	}
	failing := consumer(func(_ context.Context, e shopevents.PaymentCaptured, _ eventgen.Metadata) error {
		if e.OrderID[15] == 0 {
			return errors.New("card declined\nsecond line")
		}
		panic("ledger is gone")
	})
	ob := newOutbox(t, db, tableName(t, "cli_outbox"), tr.Publisher())
	for i := range 3 {
		if err := shopevents.NewPublisher(ob).PublishPaymentCaptured(ctx, db, payment(i)); err != nil {
			t.Fatal(err)
		}
	}
	defer startRelay(ob)()
	runUntil(t, failing.Run, func() bool {
		rows, err := failing.Failed(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows) == 3
	})

	dir := t.TempDir()
	args := []string{"-db", dsn, "-table", table, "-group", shopevents.GroupBilling}
	code, stdout, stderr := run(t, dir, append([]string{"inbox", "failed"}, args...)...)
	rowPattern := regexp.MustCompile(`(?m)^([0-9a-f-]{36}) +PaymentCaptured +1 +shop\.payments +[0-9a-f-]{36} +shop +2 +\S+Z +\S+Z +(.*)$`)
	rows := rowPattern.FindAllStringSubmatch(stdout, -1)
	if code != cli.ExitOK || stderr != "" || len(rows) != 3 ||
		!strings.HasPrefix(stdout, "MESSAGE ID  ") || !strings.Contains(stdout, "card declined …") || !strings.Contains(stdout, "ledger is gone") {
		t.Fatalf("inbox failed = %d, stderr %q:\n%s", code, stderr, stdout)
	}
	code, stdout, _ = run(t, dir, append([]string{"inbox", "failed", "-v"}, args...)...)
	if code != cli.ExitOK || !strings.Contains(stdout, "\n\tsecond line\n") || !strings.Contains(stdout, "\tgoroutine ") {
		t.Errorf("inbox failed -v = %d:\n%s", code, stdout)
	}
	code, stdout, stderr = run(t, dir, "inbox", "failed", "-db", dsn, "-table", table, "-group", shopevents.GroupShipping)
	if code != cli.ExitOK || stdout != "" || stderr != "no failed messages of group shipping in "+table+"\n" {
		t.Errorf("inbox failed of another group = %d, %q, %q", code, stdout, stderr)
	}

	code, stdout, _ = run(t, dir, append([]string{"inbox", "reexecute", "-id", rows[0][1]}, args...)...)
	if code != cli.ExitOK || stdout != "1 failed messages of group billing in "+table+" made due again; a running consumer of the group handles them again\n" {
		t.Errorf("inbox reexecute -id = %d, %q", code, stdout)
	}
	code, _, stderr = run(t, dir, append([]string{"inbox", "reexecute", "-id", rows[0][1], "-id", "no-such-message"}, args...)...)
	if code != cli.ExitFailure || !strings.Contains(stderr, "2 of the 2 ids given are not failed messages of group billing") {
		t.Errorf("inbox reexecute of ids that are not failed = %d, %q", code, stderr)
	}
	code, stdout, _ = run(t, dir, append([]string{"inbox", "reexecute", "-all", "-yes"}, args...)...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "2 failed messages") {
		t.Errorf("inbox reexecute -all = %d, %q", code, stdout)
	}

	// A consumer of the group whose handler now works handles all three.
	handled := make(chan string, 3)
	fixed := consumer(func(_ context.Context, e shopevents.PaymentCaptured, m eventgen.Metadata) error {
		handled <- m.ID
		return nil
	})
	got := make(map[string]bool)
	runUntil(t, fixed.Run, func() bool {
		select {
		case id := <-handled:
			got[id] = true
		default:
		}
		return len(got) == 3
	})
	for _, r := range rows {
		if !got[r[1]] {
			t.Errorf("message %s was not handled after reexecute", r[1])
		}
	}
}

func TestInboxCommandErrors(t *testing.T) {
	dsn, _ := sqliteDB(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"inbox", "failed", "-db", dsn}, cli.ExitUsage, "eventgen-ops inbox failed: -group is required"},
		{[]string{"inbox", "reexecute", "-db", dsn, "-group", "g"}, cli.ExitUsage, "eventgen-ops inbox reexecute: give -id or -row (one or more) or -all"},
		{[]string{"inbox", "reexecute", "-db", dsn, "-group", "g", "-id", ""}, cli.ExitUsage, `invalid value "" for flag -id: empty id`},
		{[]string{"inbox", "failed", "-group", "g", "-db", dsn, "-table", "x y"}, cli.ExitUsage, `invalid ConsumerOptions: Table: invalid table name "x y"`},
		{[]string{"inbox", "failed", "-group", "g", "-db", dsn}, cli.ExitFailure, "eventgen-ops inbox failed: "},
		{[]string{"inbox", "blocked", "-db", dsn}, cli.ExitUsage, "eventgen-ops inbox blocked: -group is required"},
		{[]string{"inbox", "blocked", "-db", dsn, "-group", "g", "-limit", "0"}, cli.ExitUsage, "-limit must be positive"},
		{[]string{"inbox", "skip", "-db", dsn, "-group", "g", "-key", "k"}, cli.ExitUsage, "eventgen-ops inbox skip: -topic and -key are required"},
		{[]string{"inbox", "skip", "-db", dsn, "-topic", "t", "-key", "k"}, cli.ExitUsage, "-group is required"},
		{[]string{"inbox", "blocked", "-db", dsn, "-group", "g"}, cli.ExitFailure, "eventgen-ops inbox blocked: "},
	} {
		code, _, stderr := run(t, dir, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d, stderr:\n%s\nwant %d and %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.stderr)
		}
	}
}

func TestGroupHelp(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"help"}, cli.ExitOK, "\toutbox  count, list, show, requeue and delete outbox events\n", ""},
		{[]string{"help", "outbox"}, cli.ExitOK, "Usage: eventgen-ops outbox <command> [flags]", ""},
		{[]string{"outbox", "-h"}, cli.ExitOK, "\trequeue    return failed events to the relay\n", ""},
		{[]string{"inbox", "help", "reexecute"}, cli.ExitOK, "Usage: eventgen-ops inbox reexecute -group G (-id MESSAGE_ID ... | -row ID ... | -all) [-dry-run] [-yes]", ""},
		{[]string{"help", "inbox", "failed"}, cli.ExitOK, "-group group", ""},
		{[]string{"outbox", "requeue", "-h"}, cli.ExitOK, "", "Usage: eventgen-ops outbox requeue"},
		{[]string{"help", "outbox", "nope"}, cli.ExitUsage, "", `eventgen-ops help outbox: unknown command "nope"`},
		{[]string{"help", "outbox", "a", "b"}, cli.ExitUsage, "", "give at most one command"},
		{[]string{"help", "sql", "x"}, cli.ExitUsage, "", "give at most one command"},
		{[]string{"help", "sql"}, cli.ExitOK, "-dialect database", ""},
	} {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, stdout, stderr)
		}
	}
}

// TestCommandLinksNoBroker checks that eventgen-ops, whose outbox and inbox
// commands list and requeue failed rows, needs only a database: it compiles
// no transport and no broker client, so it can open no broker connection.
func TestCommandLinksNoBroker(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/eventgen/eventgen/cmd/eventgen-ops").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range []string{
		"github.com/eventgen/eventgen/runtime/transport",
		"github.com/rabbitmq/amqp091-go",
		"github.com/nats-io/nats.go",
		"github.com/redis/go-redis/v9",
		"github.com/ThreeDotsLabs/watermill-sql/v4",
		"github.com/ThreeDotsLabs/watermill/pubsub/gochannel",
	} {
		if strings.Contains(string(out), pkg) {
			t.Errorf("cmd/eventgen-ops depends on %s", pkg)
		}
	}
}
