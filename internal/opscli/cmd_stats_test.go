package opscli

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// agePattern matches the oldest pending age as the text output prints it.
var agePattern = regexp.MustCompile(`(?m)^(oldest pending  )(\S+)$`)

// withoutAge returns the text output of a stats command with its age
// replaced by AGE, and the age.
func withoutAge(t *testing.T, stdout string) (string, time.Duration) {
	t.Helper()
	m := agePattern.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no oldest pending age in:\n%s", stdout)
	}
	d, err := time.ParseDuration(m[2])
	if err != nil {
		t.Fatalf("oldest pending age %q: %v", m[2], err)
	}
	return agePattern.ReplaceAllString(stdout, "${1}AGE"), d
}

// statsJSON runs a stats command with -json and decodes its output.
func statsJSON(t *testing.T, dir string, args ...string) map[string]any {
	t.Helper()
	code, stdout, stderr := run(t, dir, append(args, "-json")...)
	if code != cli.ExitOK || stderr != "" {
		t.Fatalf("eventgen-ops %s -json = %d: %s", strings.Join(args, " "), code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("-json printed %q: %v", stdout, err)
	}
	return got
}

func TestOutboxStats(t *testing.T) {
	dsn, db := sqliteDB(t)
	ctx := context.Background()
	table := failedOutbox(t, db, 3)
	// Events a relay has not seen: two now, one in an hour.
	pub := shopevents.NewPublisher(newOutbox(t, db, table, nil))
	for i := range 2 {
		if err := pub.PublishPaymentCaptured(ctx, db, payment(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.PublishPaymentCaptured(ctx, db, payment(20), eventgen.WithDelay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"outbox", "stats", "-db", dsn, "-table", table}

	code, stdout, stderr := run(t, dir, args...)
	if code != cli.ExitOK || stderr != "" {
		t.Fatalf("outbox stats = %d: %s", code, stderr)
	}
	text, age := withoutAge(t, stdout)
	want := "table           " + table + `
scheduled       1
pending         2
  retrying      0
processing      0
failed          3
published       0
oldest pending  AGE
`
	if text != want || age < 0 || age > time.Minute {
		t.Errorf("outbox stats printed:\n%s\nwant:\n%s(AGE under a minute)", stdout, want)
	}

	time.Sleep(50 * time.Millisecond)
	got := statsJSON(t, dir, args...)
	seconds, _ := got["oldest_pending_seconds"].(float64)
	delete(got, "oldest_pending_seconds")
	wantJSON := map[string]any{
		"table": table, "scheduled": 1.0, "pending": 2.0, "retrying": 0.0, "processing": 0.0,
		"failed": 3.0, "published": 0.0, "history_capped": false,
	}
	if !maps.Equal(got, wantJSON) || seconds < (age+50*time.Millisecond).Seconds()-0.001 {
		t.Errorf("outbox stats -json = %v and %gs, want %v and above %s", got, seconds, wantJSON, age+50*time.Millisecond)
	}

	// As a health check: the figures are printed either way, and each
	// limit exceeded is named.
	for _, tt := range []struct {
		limits []string
		code   int
		stderr []string
	}{
		{[]string{"-max-lag", "1h", "-max-failed", "3"}, cli.ExitOK, nil},
		{[]string{"-max-lag", "1ms", "-max-failed", "3"}, cli.ExitFailure, []string{"eventgen-ops outbox stats: unhealthy: oldest pending ", " is over -max-lag 1ms"}},
		{[]string{"-max-failed", "0"}, cli.ExitFailure, []string{"eventgen-ops outbox stats: unhealthy: 3 failed is over -max-failed 0\n"}},
		{[]string{"-max-lag", "1ms", "-max-failed", "2", "-json"}, cli.ExitFailure, []string{"over -max-lag 1ms\n", "unhealthy: 3 failed is over -max-failed 2\n"}},
	} {
		code, stdout, stderr := run(t, dir, append(args, tt.limits...)...)
		if code != tt.code || !strings.Contains(stdout, "failed") || (tt.stderr == nil) != (stderr == "") {
			t.Errorf("outbox stats %v = %d, stderr %q, printed:\n%s", tt.limits, code, stderr, stdout)
		}
		for _, want := range tt.stderr {
			if !strings.Contains(stderr, want) {
				t.Errorf("outbox stats %v: stderr %q lacks %q", tt.limits, stderr, want)
			}
		}
	}

	// The relay publishes the two due events and retries none.
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ob := newOutbox(t, db, table, tr.Publisher())
	runUntil(t, ob.Run, func() bool {
		st, err := ob.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Published == 2
	})
	_, stdout, _ = run(t, dir, args...)
	if !strings.Contains(stdout, "\npending         0\n") || !strings.Contains(stdout, "\npublished       2\n") ||
		!strings.HasSuffix(stdout, "\noldest pending  0s\n") {
		t.Errorf("outbox stats after the relay ran:\n%s", stdout)
	}
}

func TestInboxStats(t *testing.T) {
	dsn, db := sqliteDB(t)
	ctx := context.Background()
	table := tableName(t, "cli_inbox")
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// Three of five payments fail for good.
	c := newBillingConsumer(t, db, tr, table, func(_ context.Context, e shopevents.PaymentCaptured, _ eventgen.Metadata) error {
		if e.OrderID[15]%2 == 0 {
			return errors.New("card declined")
		}
		return nil
	})
	ob := newOutbox(t, db, tableName(t, "cli_outbox"), tr.Publisher())
	for i := range 5 {
		if err := shopevents.NewPublisher(ob).PublishPaymentCaptured(ctx, db, payment(i)); err != nil {
			t.Fatal(err)
		}
	}
	defer startRelay(ob)()
	runUntil(t, c.Run, func() bool {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Failed == 3 && st.Succeeded == 2
	})

	dir := t.TempDir()
	args := []string{"inbox", "stats", "-db", dsn, "-table", table, "-group", shopevents.GroupBilling}
	code, stdout, stderr := run(t, dir, args...)
	want := "table           " + table + `
group           billing
held            0
pending         0
processing      0
failed          3
succeeded       2
skipped         0
oldest pending  0s
blocked keys    3
  failed        3
`
	if code != cli.ExitOK || stderr != "" || stdout != want {
		t.Errorf("inbox stats = %d, stderr %q, printed:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	got := statsJSON(t, dir, args...)
	wantJSON := map[string]any{
		"table": table, "group": "billing", "pending": 0.0, "processing": 0.0, "failed": 3.0,
		"succeeded": 2.0, "skipped": 0.0, "history_capped": false, "oldest_pending_seconds": 0.0,
		"held": 0.0, "blocked_keys": 3.0, "failed_keys": 3.0, // each failed payment blocks its order's key
	}
	if !maps.Equal(got, wantJSON) {
		t.Errorf("inbox stats -json = %v, want %v", got, wantJSON)
	}
	// As a health check, on failed messages and blocked keys.
	for _, tt := range []struct {
		limits []string
		code   int
		stderr string
	}{
		{[]string{"-max-failed", "3", "-max-blocked-keys", "3", "-max-lag", "1m"}, cli.ExitOK, ""},
		{[]string{"-max-failed", "2"}, cli.ExitFailure, "eventgen-ops inbox stats: unhealthy: 3 failed is over -max-failed 2\n"},
		{[]string{"-max-blocked-keys", "0"}, cli.ExitFailure, "eventgen-ops inbox stats: unhealthy: 3 blocked keys is over -max-blocked-keys 0\n"},
	} {
		code, stdout, stderr := run(t, dir, append(args, tt.limits...)...)
		if code != tt.code || stdout != want || stderr != tt.stderr {
			t.Errorf("inbox stats %v = %d, stderr %q, printed:\n%s", tt.limits, code, stderr, stdout)
		}
	}
	// Another group of the table has nothing.
	code, stdout, _ = run(t, dir, "inbox", "stats", "-db", dsn, "-table", table, "-group", shopevents.GroupShipping)
	if code != cli.ExitOK || !strings.Contains(stdout, "\ngroup           shipping\n") || !strings.Contains(stdout, "\nfailed          0\n") {
		t.Errorf("inbox stats of another group = %d:\n%s", code, stdout)
	}
}

func TestStatsCommandErrors(t *testing.T) {
	t.Setenv(EnvDSN, "")
	dsn, _ := sqliteDB(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"outbox", "stats"}, cli.ExitUsage, "eventgen-ops outbox stats: no database: set $EVENTGEN_DSN"},
		{[]string{"outbox", "stats", "-db", dsn, "-table", "missing"}, cli.ExitFailure, "eventgen-ops outbox stats: outbox: stats: "},
		{[]string{"inbox", "stats", "-db", dsn}, cli.ExitUsage, "eventgen-ops inbox stats: -group is required"},
		{[]string{"inbox", "stats", "-db", dsn, "-group", "g", "-json", "x"}, cli.ExitUsage, `eventgen-ops inbox stats: unexpected argument "x"`},
		{[]string{"inbox", "stats", "-db", dsn, "-group", "g"}, cli.ExitFailure, "eventgen-ops inbox stats: consumer: stats: "},
		{[]string{"outbox", "stats", "-db", dsn, "-max-lag", "-1s"}, cli.ExitUsage, "eventgen-ops outbox stats: -max-lag -1s is negative"},
		{[]string{"outbox", "stats", "-db", dsn, "-max-failed", "-2"}, cli.ExitUsage, "eventgen-ops outbox stats: -max-failed -2: want a count, or -1 for no limit"},
		{[]string{"outbox", "stats", "-db", dsn, "-max-blocked-keys", "1"}, cli.ExitUsage, "flag provided but not defined: -max-blocked-keys"},
		{[]string{"inbox", "stats", "-db", dsn, "-group", "g", "-max-blocked-keys", "-3"}, cli.ExitUsage, "eventgen-ops inbox stats: -max-blocked-keys -3: want a count, or -1 for no limit"},
		{[]string{"inbox", "stats", "-db", dsn, "-group", "g", "-max-lag", "soon"}, cli.ExitUsage, `invalid value "soon" for flag -max-lag`},
	} {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d, stdout %q, stderr:\n%s\nwant %d and %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.stderr)
		}
	}
	// A count of history that reached the limit says so.
	if got := history(eventgen.StatsHistoryLimit, true); got != "1000+" {
		t.Errorf("history at the limit = %q", got)
	}
}
