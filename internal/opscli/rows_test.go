package opscli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// runIn runs eventgen-ops with stdin.
func runIn(t *testing.T, dir, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	code = Run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestOutboxRowCommands(t *testing.T) {
	dsn, db := sqliteDB(t)
	table := failedOutbox(t, db, 3)
	ob := newOutbox(t, db, table, nil)
	ctx := context.Background()
	if err := shopevents.NewPublisher(ob).PublishPaymentCaptured(ctx, db, payment(9), eventgen.WithDelay(time.Hour),
		eventgen.WithHeader("x-note", "hello")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The DSN from the environment: no -db.
	t.Setenv(EnvDSN, dsn)
	tb := []string{"-table", table}

	code, stdout, stderr := run(t, dir, append([]string{"outbox", "list", "-limit", "2"}, tb...)...)
	rowLine := regexp.MustCompile(`(?m)^(\d+) +[0-9a-f-]{36} +PaymentCaptured +\S+ +(\w+) `)
	rows := rowLine.FindAllStringSubmatch(stdout, -1)
	if code != cli.ExitOK || len(rows) != 2 || rows[0][1] != "4" || rows[0][2] != "scheduled" || stderr != "more: add -before 3 for the next page\n" {
		t.Fatalf("outbox list -limit 2 = %d:\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = run(t, dir, append([]string{"outbox", "list", "-before", "3", "-json"}, tb...)...)
	var page listJSON
	if err := json.Unmarshal([]byte(stdout), &page); code != cli.ExitOK || err != nil || len(page.Rows) != 2 || page.Rows[0].ID != 2 || page.Older != 0 ||
		page.Rows[0].Status != "failed" || page.Rows[0].LastError == "" || page.Rows[0].Payload != nil {
		t.Fatalf("outbox list -before 3 -json = %d, %v:\n%s", code, err, stdout)
	}
	code, stdout, _ = run(t, dir, append([]string{"outbox", "list", "-status", "scheduled", "-json"}, tb...)...)
	if err := json.Unmarshal([]byte(stdout), &page); err != nil || len(page.Rows) != 1 || page.Rows[0].ID != 4 {
		t.Fatalf("outbox list -status scheduled = %d:\n%s", code, stdout)
	}

	code, stdout, _ = run(t, dir, append([]string{"outbox", "show", "-id", "4"}, tb...)...)
	if code != cli.ExitOK || !strings.Contains(stdout, "status        scheduled\n") || !strings.Contains(stdout, "\t  \"payment_id\": \"pay-09\",\n") ||
		!strings.Contains(stdout, "\tx-note: hello\n") {
		t.Fatalf("outbox show = %d:\n%s", code, stdout)
	}
	code, stdout, _ = run(t, dir, append([]string{"outbox", "show", "-id", "1", "-json"}, tb...)...)
	var one rowJSON
	if err := json.Unmarshal([]byte(stdout), &one); code != cli.ExitOK || err != nil || one.ID != 1 || !strings.Contains(string(one.Payload), `"pay-00"`) ||
		!strings.Contains(one.LastError, "transport is closed") {
		t.Fatalf("outbox show -json = %d, %v:\n%s", code, err, stdout)
	}
	if code, _, stderr = run(t, dir, append([]string{"outbox", "show", "-id", "99"}, tb...)...); code != cli.ExitFailure || !strings.Contains(stderr, "no row 99") {
		t.Errorf("outbox show of a missing row = %d, %q", code, stderr)
	}

	// Dry runs change nothing.
	code, stdout, _ = run(t, dir, append([]string{"outbox", "delete", "-id", "1", "-id", "4", "-id", "77", "-dry-run"}, tb...)...)
	if code != cli.ExitOK || stdout != "dry run: delete would change 2 failed, scheduled or pending events in "+table+": ids 1, 4; nothing changed\n" {
		t.Fatalf("outbox delete -dry-run = %d, %q", code, stdout)
	}
	code, stdout, _ = run(t, dir, append([]string{"outbox", "requeue", "-all", "-dry-run"}, tb...)...)
	if code != cli.ExitOK || stdout != "dry run: requeue -all would change the 3 failed events in "+table+"; nothing changed\n" {
		t.Fatalf("outbox requeue -all -dry-run = %d, %q", code, stdout)
	}
	if st, _ := ob.Stats(ctx); st.Failed != 3 || st.Scheduled != 1 {
		t.Fatalf("after dry runs: %+v", st)
	}

	code, stdout, stderr = run(t, dir, append([]string{"outbox", "publish-now", "-id", "4"}, tb...)...)
	if code != cli.ExitOK || stdout != "1 scheduled events in "+table+" made due now; the relay publishes them\n" ||
		!strings.Contains(stderr, "action=publish-now") {
		t.Fatalf("outbox publish-now = %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, dir, append([]string{"outbox", "delete", "-id", "1"}, tb...)...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "1 failed, scheduled or pending events in "+table+" deleted") {
		t.Fatalf("outbox delete -id = %d, %q", code, stdout)
	}
	// -all asks; "no" changes nothing, "yes" deletes.
	code, _, stderr = runIn(t, dir, "no\n", append([]string{"outbox", "delete", "-all"}, tb...)...)
	if code != cli.ExitFailure || !strings.Contains(stderr, "delete every failed event in "+table+" (2 now)? Type yes to go on: ") ||
		!strings.Contains(stderr, "not confirmed") {
		t.Fatalf("outbox delete -all answered no = %d, %q", code, stderr)
	}
	code, stdout, stderr = runIn(t, dir, "yes\n", append([]string{"outbox", "delete", "-all"}, tb...)...)
	if code != cli.ExitOK || stdout != "2 failed events in "+table+" deleted; they are never published\n" ||
		!regexp.MustCompile(`msg="eventgen-ops outbox delete: audit" user=\S+ action=delete table=\S+ ids="all failed" count=2 ok=true`).MatchString(stderr) {
		t.Fatalf("outbox delete -all answered yes = %d, %q, %q", code, stdout, stderr)
	}
	if st, _ := ob.Stats(ctx); st.Failed != 0 || st.Pending != 1 {
		t.Fatalf("after the actions: %+v", st)
	}
}

func TestInboxRowCommands(t *testing.T) {
	dsn, db := sqliteDB(t)
	table := tableName(t, "cli_inbox")
	c, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: "billing", Table: table, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, status := range []string{"succeeded", "failed", "failed"} {
		_, err := db.ExecContext(context.Background(), fmt.Sprintf(`INSERT INTO %s (consumer_group, message_id, name, version, topic, source, payload,
			status, attempts, last_error, created_at, handled_at, expires_at) VALUES ('billing', ?, 'PaymentCaptured', 1, 'shop.payments', 's', ?, ?, 1, ?, 1, 2, 9000000000000000)`, table),
			"m"+strconv.Itoa(i), []byte{0xff, 0x00, byte(i)}, status, "panic: boom\ngoroutine 7 [running]:")
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(a ...string) []string {
		return append(a, "-db-file", dsnFile, "-group", "billing", "-table", table)
	}

	code, stdout, _ := run(t, dir, args("inbox", "list", "-status", "failed", "-json")...)
	var page listJSON
	if err := json.Unmarshal([]byte(stdout), &page); code != cli.ExitOK || err != nil || len(page.Rows) != 2 || page.Group != "billing" || page.Rows[0].ID != 3 {
		t.Fatalf("inbox list -json = %d, %v:\n%s", code, err, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "show", "-id", "3", "-json")...)
	var one rowJSON
	if err := json.Unmarshal([]byte(stdout), &one); code != cli.ExitOK || err != nil || !bytes.Equal(one.PayloadBase64, []byte{0xff, 0, 2}) {
		t.Fatalf("inbox show -json = %d, %v:\n%s", code, err, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "show", "-id", "3")...)
	if code != cli.ExitOK || !strings.Contains(stdout, "\t00000000  ff 00 02") || !strings.Contains(stdout, "\tgoroutine 7 [running]:\n") {
		t.Fatalf("inbox show = %d:\n%s", code, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "reexecute", "-row", "1", "-row", "2", "-dry-run")...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "dry run: reexecute would change 1 failed messages of group billing in "+table+": ids 2;") {
		t.Fatalf("inbox reexecute -dry-run = %d, %q", code, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "reexecute", "-row", "2")...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "1 failed messages of group billing") {
		t.Fatalf("inbox reexecute -row = %d, %q", code, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "delete", "-id", "m2")...)
	if code != cli.ExitOK || stdout != "1 failed messages of group billing in "+table+" deleted\n" {
		t.Fatalf("inbox delete -id = %d, %q", code, stdout)
	}
	if st, _ := c.Stats(context.Background()); st.Failed != 0 || st.Pending != 1 || st.Succeeded != 1 {
		t.Fatalf("after the actions: %+v", st)
	}
}
